import logging

import numpy as np
import pytest
from datasets import Dataset

from hfpref.data.audio import AudioDecodeError, audio_value, ensure_audio_column
from hfpref.encoders import ClapEmbedder
from hfpref.encoders.dataset import add_embeddings


@pytest.fixture
def embedder(tiny_clap, tmp_path):
    model, processor = tiny_clap
    return ClapEmbedder(model, processor, cache_dir=tmp_path / "cache", show_progress=False)


def _dataset(clips, captions, extra_rows=()):
    rows = [audio_value(c, 16000, f"clip{i}.wav", subtype="FLOAT") for i, c in enumerate(clips)] + list(extra_rows)
    texts = (captions * 3)[: len(rows)]
    return ensure_audio_column(Dataset.from_dict({"audio": rows, "caption": texts}))


def test_adds_columns_matching_direct_embedding(embedder, clips, captions):
    ds = _dataset(clips, captions)
    out = add_embeddings(ds, embedder, text_columns={"caption": "text_embedding"})
    audio = np.asarray(out.with_format("numpy")["audio_embedding"])
    text = np.asarray(out.with_format("numpy")["text_embedding"])
    assert audio.shape == (len(clips), embedder.embedding_dim) and audio.dtype == np.float32
    np.testing.assert_allclose(audio, embedder.embed_audio(clips, sampling_rate=16000), atol=1e-6)
    np.testing.assert_allclose(text, embedder.embed_text(out["caption"]), atol=1e-6)


def test_repeated_clips_are_decoded_and_embedded_once(embedder, clips, captions):
    ds = _dataset([clips[0]] * 4 + [clips[1]], captions)
    add_embeddings(ds, embedder)
    assert embedder.cache.stats["writes"] == 2 + len(set(ds["caption"]))


def test_bad_audio_raises_with_row_or_is_dropped_and_logged(embedder, clips, captions, caplog):
    bad = {"bytes": b"not audio at all", "path": "broken.wav"}
    ds = _dataset(clips[:3], captions, extra_rows=[bad])
    with pytest.raises(AudioDecodeError, match=r"broken\.wav.*row 3"):
        add_embeddings(ds, embedder)
    with caplog.at_level(logging.WARNING):
        out = add_embeddings(ds, embedder, skip_bad_audio=True)
    assert len(out) == 3
    assert "dropped 1 of 4 rows" in caplog.text


def test_missing_columns_and_empty_dataset(embedder, clips, captions):
    ds = _dataset(clips[:2], captions)
    with pytest.raises(ValueError, match=r"columns \['chosen'\] not found; the dataset has \['audio', 'caption'\]"):
        add_embeddings(ds, embedder, text_columns=["chosen"])
    with pytest.raises(ValueError, match="empty"):
        add_embeddings(ds.select([]), embedder)
