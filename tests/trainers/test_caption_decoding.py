"""
RL decoding on the paths real checkpoints take: a random-weight model built from openai/whisper-tiny's own config and
generation config (tests/fixtures/whisper-tiny: forced task/no-timestamps tokens, suppressed tokens; the language
fixed by `prepare_captioner`), and a `SpeechEncoderDecoderModel` (wav2vec2 encoder, BERT decoder) on padded batches. The RL trainer's
samples and greedy captions must be exactly what `model.generate` gives for the same seed, and the log-probabilities
it trains on must be those of the distribution the samples were drawn from.
"""

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from hfpref.models.captioning import (
    decode,
    encode_audio,
    eos_token_ids,
    ids_to_text,
    prepare_captioner,
    token_log_probs,
)


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Token-by-token decoding of small models."""


@pytest.fixture(scope="module")
def whisper_tiny():
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig.from_pretrained(FIXTURES / "whisper-tiny")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig.from_pretrained(FIXTURES / "whisper-tiny")
    # The captioning prompt: English fixed (no per-batch language detection), timestamps never sampled.
    assert prepare_captioner(model) == [50258, 50259, 50359, 50363]
    features = torch.randn(
        2, config.num_mel_bins, 2 * config.max_source_positions, generator=torch.Generator().manual_seed(1)
    )
    return model, {"input_features": features}


@pytest.fixture(scope="module")
def speech_encoder_decoder():
    """wav2vec2 encoder + BERT decoder with a tokenizer trained here, and a padded batch of two clips."""
    from transformers import (
        BertConfig,
        BertLMHeadModel,
        SpeechEncoderDecoderModel,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
    )

    from hfpref.data.synthetic.audio_world import make_world
    from hfpref.encoders.clap import train_clap_tokenizer

    world = make_world(16, seed=3, clip_seconds=1.0)
    tokenizer = train_clap_tokenizer([r for refs in world["references"] for r in refs], vocab_size=320)
    encoder_config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
    )
    decoder_config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        is_decoder=True,
        add_cross_attention=True,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SpeechEncoderDecoderModel(
            encoder=Wav2Vec2Model(encoder_config), decoder=BertLMHeadModel(decoder_config)
        ).eval()
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id = tokenizer.bos_token_id
        config.eos_token_id = tokenizer.eos_token_id
        config.pad_token_id = tokenizer.pad_token_id
    extractor = Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True)
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(16000).astype(np.float32), rng.standard_normal(6000).astype(np.float32)]
    inputs = extractor(clips, sampling_rate=16000, padding=True, return_tensors="pt")
    assert inputs["attention_mask"][1].sum() == 6000  # the second clip is padded
    return model, tokenizer, extractor, clips, dict(inputs)


def _generate(model, inputs, seed, **kwargs):
    if "force_unique_generate_call" in inspect.signature(model.generate).parameters:
        kwargs["force_unique_generate_call"] = True  # Whisper: one segment per caption, as the RL decode asks
    torch.manual_seed(seed)
    out = model.generate(**inputs, **kwargs, return_dict_in_generate=True)
    return out.sequences


def test_whisper_tiny_rl_decodes_equal_generate(whisper_tiny):
    model, inputs = whisper_tiny
    with torch.no_grad():
        encoded = encode_audio(model, inputs)
    sampling = dict(do_sample=True, temperature=0.7, top_k=20, max_new_tokens=5)
    for seed in (0, 1):
        torch.manual_seed(seed)
        rollout = decode(model, encoded, num_return_sequences=2, **sampling)
        expected = _generate(model, inputs, seed, num_return_sequences=2, **sampling)
        assert torch.equal(rollout.sequences, expected)
    greedy = decode(model, encoded, do_sample=False, max_new_tokens=5)
    assert torch.equal(greedy.sequences, _generate(model, inputs, 0, do_sample=False, max_new_tokens=5))

    # The decoder prompt is the captioning one: start of transcript, English, transcribe, no timestamps; the
    # completion starts after it.
    prompt = rollout.sequences[:, : rollout.prompt_length]
    assert rollout.prompt_length == 4 and (prompt == torch.tensor([50258, 50259, 50359, 50363])).all()
    assert rollout.completion_ids.shape[1] == rollout.sampling_log_probs.shape[1] == 5
    suppressed = torch.tensor(model.generation_config.suppress_tokens)
    assert not torch.isin(rollout.completion_ids, suppressed).any()
    assert not (rollout.completion_ids >= 50258).any()  # no timestamp or prompt token in a caption
    # The recorded support is the sampler's: top-20 minus nothing more (suppressed tokens are outside it).
    assert rollout.support is not None and (rollout.support.sum(-1) <= 20).all()
    assert not rollout.support[..., suppressed].any()


def test_whisper_tiny_log_probs_are_the_sampling_distribution(whisper_tiny):
    model, inputs = whisper_tiny
    with torch.no_grad():
        encoded = encode_audio(model, inputs)
        torch.manual_seed(2)
        rollout = decode(model, encoded, do_sample=True, temperature=0.7, top_k=20, max_new_tokens=5)
        log_probs, mask = token_log_probs(model, encoded, rollout)
        # Teacher-forced, under logits / T on the recorded support: what generate sampled from (its processed scores).
        torch.testing.assert_close(log_probs * mask, rollout.sampling_log_probs * mask, atol=2e-4, rtol=0)
        # Scored at T = 1 without the support, as before this fix, the same tokens get other log-probabilities.
        plain = rollout.__class__(rollout.sequences, rollout.prompt_length, temperature=1.0)
        unprocessed, _ = token_log_probs(model, encoded, plain)
    assert (unprocessed - log_probs).abs().max() > 0.1


def test_speech_encoder_decoder_padded_batch(speech_encoder_decoder):
    model, tokenizer, extractor, clips, inputs = speech_encoder_decoder
    mask = inputs["attention_mask"]
    with torch.no_grad():
        encoded = encode_audio(model, inputs)
    for seed in (0, 1):
        torch.manual_seed(seed)
        sampling = dict(do_sample=True, num_return_sequences=3, temperature=0.7, top_k=10, max_new_tokens=6)
        rollout = decode(model, encoded, attention_mask=mask, **sampling)
        expected = _generate(model, inputs, seed, **sampling)
        assert torch.equal(rollout.sequences, expected)
    greedy = decode(model, encoded, attention_mask=mask, do_sample=False, max_new_tokens=6)
    assert torch.equal(greedy.sequences, _generate(model, inputs, 0, do_sample=False, max_new_tokens=6))

    # The audio attention mask is honoured: the padded clip decodes as it does alone.
    alone = dict(extractor([clips[1]], sampling_rate=16000, return_tensors="pt"))
    with torch.no_grad():
        single = decode(
            model,
            encode_audio(model, alone),
            attention_mask=alone["attention_mask"],
            do_sample=False,
            max_new_tokens=6,
        )
        rollout_logits_padded, _ = token_log_probs(model, encoded, greedy, attention_mask=mask)
        rollout_logits_alone, _ = token_log_probs(
            model, encode_audio(model, alone), single, attention_mask=alone["attention_mask"]
        )
    assert torch.equal(single.sequences[0], greedy.sequences[1, : single.sequences.shape[1]])
    torch.testing.assert_close(
        rollout_logits_padded[1, : single.sequences.shape[1] - 1], rollout_logits_alone[0], atol=1e-4, rtol=0
    )
    # Without the mask the padded clip's encoder output is read with its padding: other log-probabilities.
    with torch.no_grad():
        unmasked, _ = token_log_probs(model, encoded, greedy)
    assert (unmasked[1] - rollout_logits_padded[1]).abs().max() > 1e-3
    assert eos_token_ids(model) == [tokenizer.eos_token_id]
    assert len(ids_to_text(tokenizer, greedy)) == 2


def test_rl_trainer_on_a_speech_encoder_decoder_with_padded_audio(tmp_path, speech_encoder_decoder):
    """One SCST step with a KL to the frozen copy: padded `input_values` + attention mask through the whole trainer."""
    from types import SimpleNamespace

    from datasets import Dataset

    from hfpref.trainers import CaptionRLConfig, CaptionRLTrainer

    model, tokenizer, extractor, clips, _ = speech_encoder_decoder
    import copy

    model = copy.deepcopy(model)
    rng = np.random.default_rng(1)
    audio = [
        {"array": rng.standard_normal(n).astype(np.float32), "sampling_rate": 16000}
        for n in (16000, 7000, 11000, 4000)
    ]
    dataset = Dataset.from_dict({"audio": audio, "clip_id": [f"c{i}" for i in range(4)]})
    seen = []

    def length_reward(completions, clip_id, **kwargs):
        seen.extend(clip_id)
        return [-len(c.split()) / 10 for c in completions]

    args = CaptionRLConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=1,
        max_new_tokens=6,
        kl_coef=0.1,
        temperature=0.7,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    processor = SimpleNamespace(feature_extractor=extractor, tokenizer=tokenizer)
    trainer = CaptionRLTrainer(model, length_reward, args, train_dataset=dataset, processing_class=processor)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    logged = next(e for e in trainer.state.log_history if "loss" in e)
    assert np.isfinite(logged["loss"]) and np.isfinite(logged["kl"]) and logged["reward"] <= 0
    assert sorted(set(seen)) == ["c0", "c1", "c2", "c3"]
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())
