"""
A captioner built from openai/whisper-tiny's real config and generation config (tests/fixtures/whisper-tiny) is
fine-tuned and decoded after one and the same decoder prompt, `<|startoftranscript|><|en|><|transcribe|>
<|notimestamps|>`: the prompt the SFT labels are built after is the one every decode forces, it is saved in the
generation config (no language detection after reloading), and sampling never draws a timestamp token.

Only the widths and depths are shrunk (d_model 32, one layer each, a 1 s window); the vocabulary (51865), the
special-token ids and the whole generation config are whisper-tiny's. whisper-tiny's tokenizer cannot be downloaded,
so [`whisper_like_tokenizer`] builds one with the same ids (see tests/fixtures/whisper-tiny/README.md).
"""

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    Wav2Vec2Config,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)

from hfpref.models.captioning import (
    CaptionCollator,
    captioning_prefix,
    decode,
    encode_audio,
    extract_features,
    generate_captions,
    non_caption_token_ids,
    prepare_captioner,
)


FIXTURE = __import__("pathlib").Path(__file__).resolve().parents[1] / "fixtures" / "whisper-tiny"
CAPTIONS = [
    "a dog barks twice",
    "rain falls on a tin roof",
    "a siren wails then a bell rings",
    "birds chirp in the morning",
    "a car passes by quickly",
    "water drips into a bucket",
    "a door slams shut",
    "people talk in a busy room",
]
EN_PROMPT = [50258, 50259, 50359, 50363]  # <|startoftranscript|><|en|><|transcribe|><|notimestamps|>, whisper's ids


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Token-by-token decoding of small models."""


def gpt2_byte_symbols() -> list[str]:
    """The 256 byte-level symbols in GPT-2's (and Whisper's) id order: `Ġ` (the space) is id 220, as in Whisper."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = dict.fromkeys(printable), 0
    for byte in range(256):
        if byte not in symbols:
            symbols[byte] = 256 + extra
            extra += 1
    return [chr(byte if code is None else code) for byte, code in symbols.items()]


def whisper_like_tokenizer(texts, generation_config: GenerationConfig, vocab_size: int) -> WhisperTokenizer:
    """
    A `WhisperTokenizer` with whisper-tiny's special-token ids over a byte-level BPE trained on `texts`.

    Ids 0-255 are the byte symbols in GPT-2's order (Whisper's); the trained merges take the next ids that neither
    `suppress_tokens` nor `begin_suppress_tokens` hold (so every caption token can be decoded), the rest of the
    50257 text ids are never-produced fillers; then `<|endoftext|>` (50257), `<|startoftranscript|>`, the 99
    languages, tasks, `<|startoflm|>`, `<|startofprev|>`, `<|nospeech|>`, `<|notimestamps|>` (50363) and the 1501
    timestamps `<|0.00|>`..`<|30.00|>`, as in Whisper. Every id is checked against the generation config.
    """
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = gpt2_byte_symbols()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, initial_alphabet=alphabet, show_progress=False))
    trained = bpe.get_vocab()
    merged = sorted((t for t in trained if t not in set(alphabet)), key=trained.get)
    taken = set(generation_config.suppress_tokens) | set(generation_config.begin_suppress_tokens)
    text_ids = generation_config.eos_token_id  # 50257 text tokens, then the specials
    free = (i for i in range(len(alphabet), text_ids) if i not in taken)
    id_of = {s: i for i, s in enumerate(alphabet)} | {t: next(free) for t in merged}
    used = set(id_of.values())
    vocab = id_of | {f"<filler{i}>": i for i in range(text_ids) if i not in used}
    state = __import__("json").loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges, model_max_length=448)
    languages = sorted(generation_config.lang_to_id, key=generation_config.lang_to_id.get)
    specials = ["<|startoftranscript|>", *languages, "<|translate|>", "<|transcribe|>", "<|startoflm|>"]
    specials += ["<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    tokenizer.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(1501)])
    expected = {
        "<|endoftext|>": generation_config.eos_token_id,
        "<|startoftranscript|>": generation_config.decoder_start_token_id,
        "<|startofprev|>": generation_config.prev_sot_token_id,
        "<|notimestamps|>": generation_config.no_timestamps_token_id,
        **generation_config.lang_to_id,
        **{f"<|{task}|>": i for task, i in generation_config.task_to_id.items()},
    }
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in expected} == expected
    assert len(tokenizer) == vocab_size and tokenizer.convert_ids_to_tokens(vocab_size - 1) == "<|30.00|>"
    return tokenizer


def whisper_tiny_captioner(seed: int = 0):
    """whisper-tiny's config and generation config at d_model 32, one layer each and a 1 s window; random weights."""
    generation_config = GenerationConfig.from_pretrained(FIXTURE)
    config = WhisperConfig.from_pretrained(
        FIXTURE,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=50,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = WhisperForConditionalGeneration(config)
    model.generation_config = generation_config
    tokenizer = whisper_like_tokenizer(CAPTIONS, generation_config, config.vocab_size)
    extractor = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, chunk_length=1)
    return model, WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def built():
    """One tokenizer build (about 1 s) shared by the tests; each test copies the model it changes."""
    model, processor = whisper_tiny_captioner()
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(16000).astype(np.float32) * 0.1 for _ in CAPTIONS]
    return model, processor, clips


def _copy(model):
    return __import__("copy").deepcopy(model)


def _sample(model, features, *, samples: int, seed: int):
    with torch.no_grad():
        encoded = encode_audio(model, {"input_features": features})
        torch.manual_seed(seed)
        return decode(model, encoded, do_sample=True, num_return_sequences=samples, max_new_tokens=12)


def test_prepare_fixes_whisper_tiny_prompt_and_suppresses_timestamps(built):
    base, processor, clips = built
    model = _copy(base)
    with pytest.raises(ValueError, match="no fixed language"):
        captioning_prefix(model)  # whisper-tiny's own generation config: language detected per batch
    prefix = prepare_captioner(model, processor.tokenizer)
    assert prefix == EN_PROMPT and processor.tokenizer.prefix_tokens == EN_PROMPT
    assert prepare_captioner(model, processor.tokenizer) == EN_PROMPT  # idempotent
    assert model.generation_config.language == "en" and model.generation_config.return_timestamps is False
    suppressed = set(model.generation_config.suppress_tokens)
    assert set(range(50364, 51865)) <= suppressed  # the 1501 timestamps
    assert {50258, 50259, 50357, 50358, 50359, 50363} <= suppressed and 50257 not in suppressed  # never eos
    assert set(non_caption_token_ids(model)) == set(range(50258, 51865))  # whisper's every non-text id but eos

    # Random weights put near-uniform mass on the vocabulary, ~2.9% of it on the 1501 timestamps: sampled without
    # the suppression (the control: whisper-tiny's own suppress_tokens, language fixed so no detection) 192 tokens
    # hold ~5.6 timestamps (measured 8, seed 0; P(none) ~ 4e-3 under Poisson(5.6)); prepared, none of the
    # non-caption ids is ever in the sampler's support, so none is drawn.
    features = processor.feature_extractor(clips[:2], sampling_rate=16000, return_tensors="pt").input_features
    rollout = _sample(model, features, samples=8, seed=0)
    steps = rollout.completion_ids
    assert rollout.prompt_length == 4 and (rollout.sequences[:, :4] == torch.tensor(EN_PROMPT)).all()
    assert steps.numel() == 2 * 8 * 12 and not (steps >= 50258).any()
    assert rollout.support is not None and not rollout.support[..., 50258:].any()
    control = _copy(base)
    torch.manual_seed(0)
    out = control.generate(
        input_features=features,
        language="en",
        do_sample=True,
        temperature=1.0,  # whisper's generate samples only at a temperature > 0 (its fallback loop's switch)
        top_k=0,  # as decode() samples: the whole vocabulary
        num_return_sequences=8,
        max_new_tokens=12,
        return_dict_in_generate=True,
        output_scores=True,
    )
    drawn = out.sequences[:, 4:]
    assert ((drawn >= 50364) & (drawn < 51865)).sum() >= 1
    assert torch.isfinite(torch.stack(out.scores, 1)[..., 50364:]).all()


def test_decode_fixes_the_prompt_of_an_unprepared_whisper(built, caplog):
    """A checkpoint nobody prepared (whisper-tiny's own generation config) decodes after the captioning prompt."""
    base, processor, clips = built
    model = _copy(base).eval()

    def no_detection(*a, **k):
        raise AssertionError("language detection ran")

    model.detect_language = no_detection
    features = processor.feature_extractor(clips[:1], sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad(), caplog.at_level("WARNING", logger="hfpref.models.captioning"):
        rollout = decode(model, encode_audio(model, {"input_features": features}), do_sample=False, max_new_tokens=2)
    assert rollout.sequences[0, :4].tolist() == EN_PROMPT and rollout.prompt_length == 4
    assert model.generation_config.language == "en" and "prepare_captioner" in caplog.text


def test_decode_drops_only_the_notices_whisper_generate_logs_on_every_call(built):
    """decode() logs none of Whisper generate's per-call notices; the same generate call outside it does (control)."""
    import logging

    from hfpref.models.captioning import _GENERATION_NOTICES, _quiet_generation_notices

    base, processor, clips = built
    model = _copy(base).eval()
    prepare_captioner(model, processor.tokenizer)
    features = processor.feature_extractor(clips[:1], sampling_rate=16000, return_tensors="pt").input_features
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    root = logging.getLogger("transformers")
    root.addHandler(handler)
    try:
        with torch.no_grad():
            decode(model, encode_audio(model, {"input_features": features}), do_sample=False, max_new_tokens=3)
        assert not [m for m in records if any(n in m for n in _GENERATION_NOTICES)], records
        with torch.no_grad():  # the control: the call decode() makes, without the filter
            model.generate(
                input_features=features,
                max_new_tokens=3,
                force_unique_generate_call=True,
                return_dict_in_generate=True,
                output_scores=True,
            )
        assert any("`max_new_tokens` will take precedence" in m for m in records), records
        records.clear()
        with _quiet_generation_notices():  # any other message of those loggers still comes through
            logging.getLogger("transformers.generation.utils").warning("another generation warning")
        assert records == ["another generation warning"]
    finally:
        root.removeHandler(handler)
    assert not logging.getLogger("transformers.generation.utils").filters  # removed after the call


def test_whisper_tiny_sft_trains_and_decodes_after_one_prompt(built, tmp_path):
    """SFT (CaptionSFTTrainer) and decoding after save/reload share the prompt saved in the generation config."""
    from datasets import Dataset

    from hfpref.data.audio import audio_value
    from hfpref.trainers.caption_sft import CaptionSFTConfig, CaptionSFTTrainer

    base, processor, clips = built
    model = _copy(base)
    audio = [audio_value(c, 16000, path=f"clip{i}.wav") for i, c in enumerate(clips)]
    dataset = Dataset.from_dict({"audio": audio, "caption": CAPTIONS})
    args = CaptionSFTConfig(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=8,
        max_steps=12,
        learning_rate=1e-2,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    # The collator is given no prompt: the trainer fixes the captioner's and trains after it.
    collator = CaptionCollator(processor.feature_extractor, processor.tokenizer)
    trainer = CaptionSFTTrainer(
        model=model, args=args, data_collator=collator, train_dataset=dataset, processing_class=processor
    )
    batch = trainer.data_collator([dataset[i] for i in range(len(dataset))])
    assert "decoder_input_ids" in batch, "the SFT batch leaves the prompt to the model's shift (<|sot|> caption)"
    assert batch["decoder_input_ids"][:, :4].tolist() == [EN_PROMPT] * len(CAPTIONS)

    def caption_loss(m) -> float:  # token-mean cross-entropy of the captions (and eos) after the prompt
        with torch.no_grad():
            out = m.eval()(input_features=batch["input_features"], decoder_input_ids=batch["decoder_input_ids"])
        return torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), batch["labels"].flatten()).item()

    before = caption_loss(model)
    trainer.train()
    after = caption_loss(trainer.model)
    # Random init is near-uniform: ln(51865) = 10.86. 12 steps (lr 1e-2) give 7.47 (seeds 0 and 1: 7.466, 7.465);
    # untrained (the control) it stays at `before`. A 2-nat margin leaves room for thread/BLAS noise.
    assert before > 10.5 and after < before - 2
    trainer.save_model(str(tmp_path / "sft"))
    processor.save_pretrained(str(tmp_path / "sft"))

    saved = GenerationConfig.from_pretrained(tmp_path / "sft")
    reloaded = WhisperForConditionalGeneration.from_pretrained(tmp_path / "sft").eval()
    prompt = captioning_prefix(reloaded)
    # The prompt read back from the saved generation config is the one the labels were built after.
    assert saved.language == "en" and saved.task == "transcribe" and saved.return_timestamps is False
    assert prompt == EN_PROMPT and (batch["decoder_input_ids"][:, :4] == torch.tensor(prompt)).all()
    assert (batch["labels"][:, :3] == -100).all()
    first = processor.tokenizer(CAPTIONS[0], add_special_tokens=False)["input_ids"]
    assert batch["labels"][0, 3 : 3 + len(first) + 1].tolist() == [*first, 50257]
    assert batch["decoder_input_ids"][0, 4 : 4 + len(first)].tolist() == first
    assert caption_loss(reloaded) == pytest.approx(after, abs=1e-5)

    # Decoding after reload starts with exactly that prompt, without any language detection.
    def no_detection(*a, **k):
        raise AssertionError("language detection ran")

    reloaded.detect_language = no_detection
    rollout = _sample(reloaded, batch["input_features"][:2], samples=4, seed=1)
    assert rollout.prompt_length == 4 and (rollout.sequences[:, :4] == torch.tensor(prompt)).all()
    assert not (rollout.completion_ids >= 50258).any()
    reloaded_processor = WhisperProcessor.from_pretrained(tmp_path / "sft")
    captions = generate_captions(reloaded, reloaded_processor, audio[:2], max_new_tokens=8)
    assert len(captions) == 2 and all(isinstance(c, str) and c for c in captions)


def test_wav2vec2_base_gets_no_attention_mask():
    """
    wav2vec2-base (group-norm feature encoder) was trained on zero-padded batches without an attention mask, and its
    extractor says so (`return_attention_mask=False`): padded caption batches follow that contract.
    """
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    config = Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="group",  # wav2vec2-base's
        do_stable_layer_norm=False,
    )
    extractor = Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=False)  # wav2vec2-base's
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(n).astype(np.float32) for n in (1600, 800)]
    collator = CaptionCollator(extractor, caption_column=None, input_name="input_values")
    batch = collator([{"audio": {"array": c, "sampling_rate": 16000}} for c in clips])
    assert "attention_mask" not in batch and batch["input_values"].shape == (2, 1600)
    own = extractor(clips, sampling_rate=16000, padding="longest", return_tensors="pt")
    torch.testing.assert_close(batch["input_values"], own["input_values"])  # what the extractor itself gives
    with torch.no_grad():
        Wav2Vec2Model(config).eval()(batch["input_values"])  # the group-norm encoder runs on it, mask-free
    # The contract is the extractor's: a layer-norm (large-lv60-style) extractor asks for the mask and gets it.
    wants = Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True)
    masked = extract_features(wants, clips, "input_values")
    assert masked["attention_mask"].sum(-1).tolist() == [1600, 800]


def test_guided_decoding_of_whisper_tiny_follows_the_captioning_prompt(built):
    """Audibility-guided decoding starts after the captioning prompt and never decodes a suppressed token."""
    from hfpref.guidance import GuidanceConfig, guided_generate

    base, processor, clips = built
    model = _copy(base).eval()  # unprepared: guided_generate prepares it (as decode does)
    features = processor.feature_extractor(clips[:2], sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        encoded = encode_audio(model, {"input_features": features})
    plain = guided_generate(
        model, processor.tokenizer, None, encoder_outputs=encoded, config=GuidanceConfig(max_new_tokens=6)
    )
    assert model.generation_config.language == "en"
    greedy = decode(model, encoded, do_sample=False, max_new_tokens=6)
    assert greedy.sequences[0, :4].tolist() == EN_PROMPT
    # Unguided it is the captioner's greedy decode after the same prompt: no timestamp or prompt-only token.
    assert torch.equal(plain.sequences, greedy.completion_ids)

    class Audible:  # guidance towards anything: steps run on every token after the first
        def audible_log_odds(self, texts):
            return torch.tensor([float(len(t)) for t in texts])

    # Timestamps made the most likely tokens (their tied output rows scaled up): the raw next-token argmax after the
    # prompt is a timestamp (the control), yet neither unguided nor guided decoding ever emits one.
    with torch.no_grad():
        model.get_output_embeddings().weight[50364:] *= 50
        logits = model(encoder_outputs=encoded, decoder_input_ids=torch.tensor([EN_PROMPT] * 2)).logits[:, -1]
    assert (logits.argmax(-1) >= 50364).all()
    plain = guided_generate(
        model, processor.tokenizer, None, encoder_outputs=encoded, config=GuidanceConfig(max_new_tokens=6)
    )
    assert not (plain.sequences >= 50258).any()
    guided = guided_generate(
        model,
        processor.tokenizer,
        Audible(),
        encoder_outputs=encoded,
        config=GuidanceConfig(max_new_tokens=6, top_k=16),
    )
    assert not (guided.sequences >= 50258).any()


@pytest.mark.parametrize("saved_language", [None, "fr"])
def test_rl_trainer_fixes_the_prompt_before_training_and_keeps_a_saved_one(built, tmp_path, saved_language):
    """CaptionRLTrainer fixes the decoder prompt at init (before copying the KL reference); an SFT checkpoint's
    saved language is kept, not reset to English."""
    from datasets import Dataset

    from hfpref.trainers import CaptionRLConfig, CaptionRLTrainer

    base, processor, clips = built
    model = _copy(base)
    if saved_language:
        prepare_captioner(model, processor.tokenizer, language=saved_language)
    data = Dataset.from_dict({"audio": clips[:2]})
    args = CaptionRLConfig(output_dir=str(tmp_path), kl_coef=0.1, report_to="none", use_cpu=True, max_steps=1)
    trainer = CaptionRLTrainer(
        model, lambda completions, **k: [0.0] * len(completions), args, train_dataset=data, processing_class=processor
    )
    expected = [50258, 50265 if saved_language == "fr" else 50259, 50359, 50363]
    assert captioning_prefix(trainer.model) == expected
    assert captioning_prefix(trainer.ref_model) == expected  # the reference was copied after
