import copy

import numpy as np
import pytest
import torch
from transformers import ClapModel, ClapProcessor

from hfpref.encoders import (
    ClapEmbedder,
    EmbeddingCache,
    build_tiny_clap,
    load_clap,
    model_fingerprint,
    tiny_clap_config,
    tiny_clap_feature_extractor,
    train_clap_tokenizer,
)
from hfpref.encoders import cache as cache_module


SR = 16_000


def make_embedder(tiny_clap, **kwargs) -> ClapEmbedder:
    model, processor = tiny_clap
    kwargs.setdefault("show_progress", False)
    return ClapEmbedder(model, processor, **kwargs)


class ForwardCounter:
    """Wraps `get_audio_features` / `get_text_features` and counts the items that went through them."""

    def __init__(self, monkeypatch, model, fail: bool = False):
        self.items = {"audio": 0, "text": 0}
        for kind, name, field in (
            ("audio", "get_audio_features", "input_features"),
            ("text", "get_text_features", "input_ids"),
        ):
            original = getattr(model, name)

            def wrapped(*args, _original=original, _kind=kind, _field=field, **kwargs):
                if fail:
                    raise AssertionError(f"{_kind} encoder called")
                self.items[_kind] += len(kwargs[_field])
                return _original(*args, **kwargs)

            monkeypatch.setattr(model, name, wrapped)


def test_embeddings_are_float32_finite_and_normalised(tiny_clap, clips, captions):
    embedder = make_embedder(tiny_clap)
    assert embedder.sampling_rate == SR
    audio = embedder.embed_audio(clips, sampling_rate=SR)
    text = embedder.embed_text(captions)
    for embeddings, count in ((audio, len(clips)), (text, len(captions))):
        assert embeddings.shape == (count, 32) and embeddings.dtype == np.float32
        assert np.isfinite(embeddings).all()
        np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    # Random weights keep the inputs apart, if not by much.
    assert len({row.tobytes() for row in audio}) == len(clips)
    assert len({row.tobytes() for row in text}) == len(captions)


def test_pooler_output_is_the_normalised_projection(tiny_clap, captions):
    model, processor = tiny_clap
    raw = make_embedder(tiny_clap, normalize=False).embed_text(captions)
    normalised = make_embedder(tiny_clap).embed_text(captions)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), normalised, atol=1e-5)
    assert model_fingerprint(model, processor, normalize=False) != model_fingerprint(model, processor)


def test_batched_equals_unbatched(tiny_clap, clips, captions):
    batched = make_embedder(tiny_clap, batch_size=4)
    single = make_embedder(tiny_clap, batch_size=1)
    np.testing.assert_allclose(
        batched.embed_audio(clips, sampling_rate=SR), single.embed_audio(clips, sampling_rate=SR), atol=1e-5
    )
    np.testing.assert_allclose(batched.embed_text(captions), single.embed_text(captions), atol=1e-5)


def test_order_preserved_and_duplicates_embedded_once(tiny_clap, clips, captions, monkeypatch):
    embedder = make_embedder(tiny_clap, batch_size=2)
    expected_audio = embedder.embed_audio(clips[:3], sampling_rate=SR)
    expected_text = embedder.embed_text(captions[:3])

    counter = ForwardCounter(monkeypatch, tiny_clap[0])
    order = [2, 0, 2, 1, 0, 2]
    audio = embedder.embed_audio([clips[i].copy() for i in order], sampling_rate=SR)
    text = embedder.embed_text([captions[i] for i in order])
    assert counter.items == {"audio": 3, "text": 3}
    np.testing.assert_allclose(audio, expected_audio[order], atol=1e-5)
    np.testing.assert_allclose(text, expected_text[order], atol=1e-5)


def test_empty_input_gives_empty_matrix(tiny_clap):
    embedder = make_embedder(tiny_clap)
    assert embedder.embed_audio([], sampling_rate=SR).shape == (0, 32)
    assert embedder.embed_text([]).shape == (0, 32)


def test_second_call_is_served_from_cache(tiny_clap, clips, captions, tmp_path, monkeypatch):
    cold = make_embedder(tiny_clap, cache_dir=tmp_path)
    audio = cold.embed_audio(clips, sampling_rate=SR)
    text = cold.embed_text(captions)
    assert cold.cache.stats == {"hits": 0, "misses": 12, "writes": 12, "corrupt": 0}

    ForwardCounter(monkeypatch, tiny_clap[0], fail=True)
    warm = make_embedder(tiny_clap, cache_dir=tmp_path)
    np.testing.assert_array_equal(warm.embed_audio(clips, sampling_rate=SR), audio)
    np.testing.assert_array_equal(warm.embed_text(captions), text)
    assert warm.cache.stats == {"hits": 12, "misses": 0, "writes": 0, "corrupt": 0}
    assert (tmp_path / warm.fingerprint / "fingerprint.json").is_file()


def test_cache_miss_computes_only_new_inputs(tiny_clap, captions, tmp_path, monkeypatch):
    embedder = make_embedder(tiny_clap, cache_dir=tmp_path)
    first = embedder.embed_text(captions[:2])
    counter = ForwardCounter(monkeypatch, tiny_clap[0])
    both = embedder.embed_text(captions[:4])
    assert counter.items["text"] == 2
    np.testing.assert_array_equal(both[:2], first)
    assert embedder.cache.stats["hits"] == 2


def test_other_weights_get_another_fingerprint_and_no_reuse(tiny_clap, captions, tmp_path):
    model, processor = tiny_clap
    tuned = copy.deepcopy(model)
    with torch.no_grad():
        tuned.text_projection.linear2.bias.add_(0.5)
    assert model_fingerprint(tuned, processor) != model_fingerprint(model, processor)

    original = make_embedder(tiny_clap, cache_dir=tmp_path).embed_text(captions)
    tuned_embedder = ClapEmbedder(tuned, processor, cache_dir=tmp_path, show_progress=False)
    tuned_vectors = tuned_embedder.embed_text(captions)
    assert tuned_embedder.cache.stats["hits"] == 0
    assert not np.allclose(tuned_vectors, original)


def test_fingerprint_follows_preprocessing(tiny_clap):
    model, processor = tiny_clap
    longer = copy.deepcopy(processor)
    longer.feature_extractor.padding = "pad"
    assert model_fingerprint(model, longer) != model_fingerprint(model, processor)


def test_interrupted_cache_write_is_recomputed(tiny_clap, captions, tmp_path, monkeypatch):
    expected = make_embedder(tiny_clap).embed_text(captions)

    def crash(*args, **kwargs):
        raise OSError("killed")

    monkeypatch.setattr(cache_module.os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        make_embedder(tiny_clap, cache_dir=tmp_path).embed_text(captions)
    monkeypatch.undo()

    fresh = make_embedder(tiny_clap, cache_dir=tmp_path)
    np.testing.assert_allclose(fresh.embed_text(captions), expected, atol=1e-6)
    assert fresh.cache.stats["hits"] == 0 and fresh.cache.stats["corrupt"] == 0


def test_corrupt_entry_is_recomputed(tiny_clap, captions, tmp_path):
    embedder = make_embedder(tiny_clap, cache_dir=tmp_path)
    expected = embedder.embed_text(captions[:2])
    path = embedder.cache.path_for("text", EmbeddingCache.key_for_text(captions[0]))
    path.write_bytes(path.read_bytes()[:40])

    fresh = make_embedder(tiny_clap, cache_dir=tmp_path)
    np.testing.assert_allclose(fresh.embed_text(captions[:2]), expected, atol=1e-6)
    assert fresh.cache.stats == {"hits": 1, "misses": 1, "writes": 1, "corrupt": 1}


def test_save_load_round_trip(tiny_clap, clips, captions, tmp_path):
    model, processor = tiny_clap
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)

    loaded_model, loaded_processor = load_clap(str(tmp_path))
    assert isinstance(loaded_model, ClapModel) and isinstance(loaded_processor, ClapProcessor)
    assert len(loaded_processor.tokenizer) == len(processor.tokenizer) > 261
    assert loaded_processor.feature_extractor.truncation == "rand_trunc"
    assert model_fingerprint(loaded_model, loaded_processor) == model_fingerprint(model, processor)

    reloaded = ClapEmbedder.from_pretrained(str(tmp_path), show_progress=False)
    embedder = make_embedder(tiny_clap)
    np.testing.assert_array_equal(
        reloaded.embed_audio(clips, sampling_rate=SR), embedder.embed_audio(clips, sampling_rate=SR)
    )
    np.testing.assert_array_equal(reloaded.embed_text(captions), embedder.embed_text(captions))


def test_long_clips_get_a_content_seeded_crop(tiny_clap, make_clips):
    embedder = make_embedder(tiny_clap, batch_size=2)
    long_clip = np.concatenate(make_clips(4, seed=3) * 3)
    assert long_clip.size > 5 * SR
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    first = embedder.embed_audio([long_clip, make_clips(1)[0]], sampling_rate=SR)[0]
    again = make_embedder(tiny_clap, batch_size=1).embed_audio([long_clip], sampling_rate=SR)[0]
    np.testing.assert_allclose(first, again, atol=1e-5)
    np.testing.assert_array_equal(np.random.get_state()[1], state)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros(0, dtype=np.float32), r"arrays\[1\] is empty"),
        (np.array([0.0, np.nan, 0.1], dtype=np.float32), r"arrays\[1\] contains NaN or infinite"),
        (np.array([0.0, np.inf], dtype=np.float64), r"arrays\[1\] contains NaN or infinite"),
        (np.zeros((2, 100), dtype=np.float32), r"arrays\[1\] has shape \(2, 100\); expected a mono"),
    ],
    ids=["empty", "nan", "inf", "stereo"],
)
def test_bad_audio_is_rejected(tiny_clap, clips, bad, message):
    with pytest.raises(ValueError, match=message):
        make_embedder(tiny_clap).embed_audio([clips[0], bad], sampling_rate=SR)


def test_bad_text_is_rejected(tiny_clap):
    embedder = make_embedder(tiny_clap)
    with pytest.raises(TypeError, match="not a single string"):
        embedder.embed_text("a dog barks")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        embedder.embed_text(["a dog barks", None])


def test_truncation_must_match_the_model(tiny_clap):
    model, processor = tiny_clap
    fusion = copy.deepcopy(processor)
    fusion.feature_extractor.truncation = "fusion"
    with pytest.raises(ValueError, match="truncation='rand_trunc'"):
        ClapEmbedder(model, fusion)


def test_tokenizer_vocab_and_specials(captions):
    tokenizer = train_clap_tokenizer(captions * 3, vocab_size=300)
    assert 261 < len(tokenizer) <= 300
    assert tokenizer.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>", "<mask>"]) == [0, 1, 2, 3, 4]
    ids = tokenizer("a dog barks")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and tokenizer.unk_token_id not in ids
    with pytest.raises(ValueError, match="at least"):
        train_clap_tokenizer(captions, vocab_size=100)


def test_tiny_config_checks_spec_size():
    config = tiny_clap_config(16, vocab_size=300)
    assert config.projection_dim == 16
    assert config.audio_config.hidden_size == config.audio_config.patch_embeds_hidden_size * 2
    with pytest.raises(ValueError, match="spec_size"):
        tiny_clap_config(spec_size=100)


def test_tiny_clap_is_seeded_and_keeps_global_rng(captions):
    torch.manual_seed(7)
    expected = torch.rand(1)
    torch.manual_seed(7)
    first, _ = build_tiny_clap(captions, seed=1)
    assert torch.equal(torch.rand(1), expected)
    second, _ = build_tiny_clap(captions, seed=1)
    other, _ = build_tiny_clap(captions, seed=2)
    weight = "text_projection.linear1.weight"
    assert torch.equal(first.state_dict()[weight], second.state_dict()[weight])
    assert not torch.equal(first.state_dict()[weight], other.state_dict()[weight])


def test_fusion_model_is_batch_invariant(make_clips):
    tokenizer = train_clap_tokenizer(["a dog barks", "a cat meows"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ClapModel(tiny_clap_config(vocab_size=len(tokenizer), enable_fusion=True)).eval()
    processor = ClapProcessor(feature_extractor=tiny_clap_feature_extractor(truncation="fusion"), tokenizer=tokenizer)
    short_and_long = make_clips(2) + [np.concatenate(make_clips(6, seed=5))]
    assert short_and_long[-1].size > 5 * SR
    batched = ClapEmbedder(model, processor, batch_size=3, show_progress=False).embed_audio(
        short_and_long, sampling_rate=SR
    )
    single = ClapEmbedder(model, processor, batch_size=1, show_progress=False).embed_audio(
        short_and_long, sampling_rate=SR
    )
    np.testing.assert_allclose(batched, single, atol=1e-5)


class FeatureExtractorSpy:
    """Records every waveform the CLAP feature extractor receives and the rate it is told, then extracts."""

    def __init__(self, monkeypatch, feature_extractor):
        self.seen = []
        cls = type(feature_extractor)
        original = cls.__call__

        def call(extractor, raw_speech, *args, **kwargs):
            self.seen.append((np.asarray(raw_speech).copy(), kwargs.get("sampling_rate")))
            return original(extractor, raw_speech, *args, **kwargs)

        monkeypatch.setattr(cls, "__call__", call)


def _peak_hz(clip: np.ndarray, rate: int) -> float:
    return float(np.fft.rfftfreq(clip.size, 1 / rate)[np.argmax(np.abs(np.fft.rfft(clip)))])


@pytest.fixture(scope="module")
def clap_48k():
    return build_tiny_clap(
        ["a dog barks", "a tone"], sampling_rate=48_000, clip_seconds=1, num_mel_bins=32, spec_size=64
    )


def test_clips_at_another_rate_are_resampled_to_the_clap_rate(clap_48k, monkeypatch):
    """
    A 1 s, 1 kHz sine drawn at 16 kHz reaches a 48 kHz CLAP as 48000 samples whose spectral peak is still at 1 kHz,
    and embeds as the same sine drawn at 48 kHz does. The control: the same samples declared as 48 kHz audio (the
    bug of handing 16 kHz renders to CLAP as they are) arrive as 1/3 s with the peak at 3 kHz.
    """
    model, processor = clap_48k
    embedder = ClapEmbedder(model, processor, show_progress=False)
    spy = FeatureExtractorSpy(monkeypatch, processor.feature_extractor)
    sine_16k = np.sin(2 * np.pi * 1000 * np.arange(16_000) / 16_000).astype(np.float32)
    sine_48k = np.sin(2 * np.pi * 1000 * np.arange(48_000) / 48_000).astype(np.float32)
    resampled = embedder.embed_audio([sine_16k], sampling_rate=16_000)
    ((clip, rate),) = spy.seen
    assert rate == 48_000 and clip.size == 48_000
    assert _peak_hz(clip, 48_000) == pytest.approx(1000.0, abs=1.0)
    # soxr's resampled sine matches the one drawn at 48 kHz away from the edges (filter transients).
    np.testing.assert_allclose(clip[1000:-1000], sine_48k[1000:-1000], atol=1e-3)
    direct = embedder.embed_audio([sine_48k], sampling_rate=48_000)
    np.testing.assert_allclose(resampled, direct, atol=1e-3)

    spy.seen.clear()
    sped_up = embedder.embed_audio([sine_16k], sampling_rate=48_000)
    ((clip, rate),) = spy.seen
    assert clip.size == 16_000 and _peak_hz(clip, 48_000) == pytest.approx(3000.0, abs=3.0)
    assert np.abs(sped_up - direct).max() > 10 * np.abs(resampled - direct).max()


def test_the_sampling_rate_is_required_and_checked(tiny_clap, clips):
    embedder = make_embedder(tiny_clap)
    with pytest.raises(TypeError, match="sampling_rate"):
        embedder.embed_audio(clips[:1])
    with pytest.raises(ValueError, match=r"sampling_rate=0 must be the clips' sampling rate"):
        embedder.embed_audio(clips[:1], sampling_rate=0)


def test_reward_path_hands_clap_every_waveform_at_its_rate(clap_48k, monkeypatch):
    """
    The reward functions' `audio_embeddings` (and so the CLAP similarity and reward-model rewards): arrays declared at
    16 kHz and Hub audio values stored at 16 kHz both reach a 48 kHz CLAP's feature extractor as 1 s at 48 kHz.
    """
    from hfpref.data.audio import audio_value
    from hfpref.metrics.similarity import audio_embeddings, clap_similarity

    model, processor = clap_48k
    embedder = ClapEmbedder(model, processor, show_progress=False)
    spy = FeatureExtractorSpy(monkeypatch, processor.feature_extractor)
    sine_16k = np.sin(2 * np.pi * 1000 * np.arange(16_000) / 16_000).astype(np.float32)
    noise_16k = np.random.default_rng(0).uniform(-0.5, 0.5, 16_000).astype(np.float32)
    vectors = audio_embeddings(embedder, 2, audio=[sine_16k, audio_value(noise_16k, 16_000)], sampling_rate=16_000)
    assert vectors.shape == (2, embedder.embedding_dim)
    assert [(clip.size, rate) for clip, rate in spy.seen] == [(48_000, 48_000), (48_000, 48_000)]
    assert _peak_hz(spy.seen[0][0], 48_000) == pytest.approx(1000.0, abs=1.0)
    np.testing.assert_allclose(
        clap_similarity(embedder, ["a tone"], audio=[sine_16k], sampling_rate=16_000),
        clap_similarity(embedder, ["a tone"], audio_embedding=vectors[:1]),
        atol=1e-6,
    )
