"""SpeechTokenizer RVQ-1 speech tokens: import without the trainer, checkpoints, codes, LLM vocabulary + LoRA rows."""

import json
import sys

import numpy as np
import pytest
import torch
from peft import get_peft_model

from hfpref.data.audio import decode_audio
from hfpref.data.synthetic.speech_world import make_speech_world
from hfpref.encoders.speech_tokens import (
    SpeechTokenEncoder,
    build_speech_tokenizer,
    build_tiny_speech_llm,
    codebooks_initialised,
    fit_speech_codebook,
    load_speech_tokenizer,
    randomize_codebooks,
    save_speech_tokenizer,
    speech_lora_config,
    speech_token_ids,
)
from hfpref.utils.safe_loading import UnsafeCheckpointError


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Small convolutions and LSTMs: one thread avoids oversubscription."""


@pytest.fixture(scope="module")
def clips():
    world = make_speech_world(12, seed=3, backend="procedural", clip_seconds=1.0)
    return world, [decode_audio(a, 16000) for a in world["audio"]]


def test_import_skips_the_package_trainer():
    build_speech_tokenizer()
    assert "speechtokenizer.model" in sys.modules
    assert not any(name.startswith(("speechtokenizer.trainer", "torchaudio", "beartype")) for name in sys.modules)


def test_fresh_codebooks_are_zero_and_refused():
    model = build_speech_tokenizer()
    assert not codebooks_initialised(model)
    assert float(model.quantizer.vq.layers[0]._codebook.embed.abs().sum()) == 0.0
    with pytest.raises(ValueError, match="all zero"):
        SpeechTokenEncoder(model)


def test_codes_are_rvq_layer_one_at_50_per_second(clips):
    _, waveforms = clips
    model = randomize_codebooks(build_speech_tokenizer(), seed=1)
    encoder = SpeechTokenEncoder(model, batch_size=5)
    codes = encoder.encode_batch(waveforms[:7] + [waveforms[0][:8000]], 16000)
    assert [len(c) for c in codes] == [50] * 7 + [25]  # 320-sample hop at 16 kHz
    assert all(c.dtype == np.int64 and c.min() >= 0 and c.max() < 64 for c in codes)
    # RVQ layer 1 exactly as SpeechTokenizer.encode computes it, and batching/padding does not change a clip's codes.
    with torch.no_grad():
        direct = model.encode(torch.as_tensor(waveforms[0])[None, None], n_q=1)[0, 0].numpy()
    np.testing.assert_array_equal(codes[0], direct)
    np.testing.assert_array_equal(encoder(waveforms[3], 16000), codes[3])
    resampled = encoder(waveforms[0][::2].copy(), 8000)  # 8 kHz input is resampled to 16 kHz first
    assert len(resampled) == 50
    with pytest.raises(ValueError, match="mono"):
        encoder(np.zeros((2, 100)), 16000)


def test_fitted_codebook_follows_the_audio(clips):
    world, waveforms = clips
    encoder = SpeechTokenEncoder(fit_speech_codebook(build_speech_tokenizer(), waveforms, seed=0))
    codes = encoder.encode_batch(waveforms, 16000)
    assert len(np.unique(np.concatenate(codes))) >= 16  # k-means spreads the frames over the codebook
    # Loud and soft clips land on different codes: loudness moves the encoder features.
    loud = np.concatenate([c for c, v in zip(codes, world["volume"]) if v == "loud"])
    soft = np.concatenate([c for c, v in zip(codes, world["volume"]) if v == "soft"])
    overlap = len(np.intersect1d(loud, soft)) / len(np.union1d(loud, soft))
    assert overlap < 0.5
    with pytest.raises(ValueError, match="cannot fit 64 centroids"):
        fit_speech_codebook(build_speech_tokenizer(), [waveforms[0][:3200]])


def test_checkpoint_round_trip_safetensors_and_pickles_refused(tmp_path, clips):
    _, waveforms = clips
    model = randomize_codebooks(build_speech_tokenizer(seed=2), seed=2)
    expected = SpeechTokenEncoder(model)(waveforms[0], 16000)
    save_speech_tokenizer(model, tmp_path / "st")
    assert sorted(p.name for p in (tmp_path / "st").iterdir()) == ["config.json", "model.safetensors"]
    np.testing.assert_array_equal(SpeechTokenEncoder.from_pretrained(tmp_path / "st")(waveforms[0], 16000), expected)
    # The released layout (a config JSON and a pickled state dict, SpeechTokenizer.pt) is refused, never unpickled:
    # the error names the file and gives the conversion to run once where the file is trusted.
    (tmp_path / "pt").mkdir()
    (tmp_path / "pt" / "config.json").write_text(json.dumps(model.config))
    torch.save(model.state_dict(), tmp_path / "pt" / "SpeechTokenizer.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"SpeechTokenizer.pt' are pickled .* save_file\(torch.load"):
        load_speech_tokenizer(tmp_path / "pt" / "config.json")
    torch.save({"weights": model.state_dict(), "fn": print}, tmp_path / "pt" / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match="evil.pt"):
        load_speech_tokenizer(tmp_path / "pt", tmp_path / "pt" / "evil.pt")
    with pytest.raises(FileNotFoundError, match="expected one weights file"):
        load_speech_tokenizer(tmp_path / "pt")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(
        json.dumps({**model.config, "dimension": 16, "semantic_dimension": 16})
    )
    (tmp_path / "bad" / "model.safetensors").write_bytes((tmp_path / "st" / "model.safetensors").read_bytes())
    with pytest.raises(Exception, match="size mismatch|does not match"):
        load_speech_tokenizer(tmp_path / "bad")
    with pytest.raises(ValueError, match="never initialised"):
        save_speech_tokenizer(build_speech_tokenizer(), tmp_path / "zero")
    with pytest.raises(FileNotFoundError, match="config not found"):
        load_speech_tokenizer(tmp_path / "missing")


def test_speech_token_rows_train_under_lora_while_text_rows_stay_frozen():
    model, tokenizer = build_tiny_speech_llm(["a woman speaks softly", "a man shouts"], codebook_size=8)
    ids = speech_token_ids(tokenizer)
    assert ids == list(range(len(tokenizer) - 8, len(tokenizer)))
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    peft_model = get_peft_model(model, speech_lora_config(ids))
    embed = peft_model.get_input_embeddings()
    rows = lambda: embed(torch.arange(len(tokenizer))).detach().clone()  # noqa: E731
    before = rows()
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=1.0)
    batch = tokenizer(["<st_1><st_5><st_5> a woman speaks softly"], return_tensors="pt")
    peft_model(**batch, labels=batch["input_ids"]).loss.backward()
    optimizer.step()
    moved = (rows() - before).abs().sum(-1) > 0
    assert moved[[ids[1], ids[5]]].all()  # the speech tokens in the batch
    assert not moved[: ids[0]].any()  # the text vocabulary is frozen
    assert not moved[[ids[0], ids[2]]].any()  # speech tokens not in the batch got no gradient
    with peft_model.disable_adapter():
        torch.testing.assert_close(rows(), before, rtol=0, atol=0)  # the adapter-disabled model is the base
    with pytest.raises(ValueError, match="no speech tokens"):
        speech_token_ids(_plain_tokenizer())


def _plain_tokenizer():
    from hfpref.encoders.clap import train_clap_tokenizer

    return train_clap_tokenizer(["a plain tokenizer"], vocab_size=300)
