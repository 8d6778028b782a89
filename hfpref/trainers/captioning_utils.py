"""
Shared pieces of the captioning trainers: the audio/caption collator, a decoding loop that reuses
one encoder pass for several decodes, sequence log-probabilities, and a tiny Whisper-architecture
captioner for offline tests and the quickstart.

The decoding loop is hfpref's own rather than `model.generate` because SCST/RLOO/PPO need the
encoder output of a batch computed once and shared by the sampled decode(s), the greedy decode and
the log-prob pass, and because Whisper's `generate` assumes Whisper's multilingual special tokens.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase
from transformers.modeling_outputs import BaseModelOutput

from ..data.audio import decode_audio


def _special_ids(model) -> tuple[int, int, int]:
    config = getattr(model, "config", None)
    base = getattr(model, "get_base_model", lambda: model)()
    config = base.config
    start = config.decoder_start_token_id
    eos = config.eos_token_id if config.eos_token_id is not None else getattr(config.decoder, "eos_token_id", None)
    pad = config.pad_token_id if config.pad_token_id is not None else eos
    if start is None or eos is None:
        raise ValueError("the captioner's config needs decoder_start_token_id and eos_token_id")
    return int(start), int(eos), int(pad)


def encoder_input_name(model) -> str:
    """Name of the encoder's audio input: `input_features` (Whisper) or `input_values` (wav2vec2 encoders)."""
    base = getattr(model, "get_base_model", lambda: model)()
    return base.get_encoder().main_input_name


@dataclass
class CaptionCollator:
    """
    Decode audio (never through `datasets`), run the feature extractor, tokenize captions.

    Every other column is passed through as a python list under its own name, so reward callables
    receive dataset columns as keyword arguments (TRL's convention).

    Args:
        feature_extractor: the captioner's feature extractor (e.g. `WhisperFeatureExtractor`).
        tokenizer: the captioner's tokenizer; needed when `caption_column` is set.
        audio_column (`str`): audio column (`datasets.Audio(decode=False)` values or paths).
        caption_column (`str` or `None`): caption column to tokenize into `labels` (SFT), or `None` (RL).
        input_name (`str`): model input name for the features (`input_features` or `input_values`).
        max_caption_tokens (`int`): captions are truncated to this many tokens (eos included).
    """

    feature_extractor: object
    tokenizer: PreTrainedTokenizerBase | None = None
    audio_column: str = "audio"
    caption_column: str | None = "caption"
    input_name: str = "input_features"
    max_caption_tokens: int = 64

    def __call__(self, features: list[dict]) -> dict:
        rate = self.feature_extractor.sampling_rate
        arrays = [decode_audio(f[self.audio_column], rate, column=self.audio_column) for f in features]
        inputs = self.feature_extractor(arrays, sampling_rate=rate, return_tensors="pt")
        batch = {self.input_name: inputs[self.input_name]}
        if "attention_mask" in inputs and self.input_name == "input_values":
            batch["attention_mask"] = inputs["attention_mask"]
        if self.caption_column is not None:
            batch["labels"] = caption_labels(
                self.tokenizer, [f[self.caption_column] for f in features], self.max_caption_tokens
            )
        passthrough = {k for f in features for k in f} - {self.audio_column, self.caption_column}
        for key in sorted(passthrough):
            batch[key] = [f.get(key) for f in features]
        batch[self.audio_column] = [f[self.audio_column] for f in features]
        return batch


def caption_labels(tokenizer: PreTrainedTokenizerBase, captions: Sequence[str], max_tokens: int) -> torch.Tensor:
    """Token ids of `captions` followed by eos, padded with -100 (ignored by the loss)."""
    rows = []
    for caption in captions:
        ids = tokenizer(caption, add_special_tokens=False)["input_ids"][: max_tokens - 1]
        rows.append([*ids, tokenizer.eos_token_id])
    width = max(len(r) for r in rows)
    return torch.tensor([r + [-100] * (width - len(r)) for r in rows])


def encode_audio(model, inputs: Mapping[str, torch.Tensor]) -> BaseModelOutput:
    """One pass of the audio encoder."""
    base = getattr(model, "get_base_model", lambda: model)()
    encoder = base.get_encoder()
    kwargs = {encoder.main_input_name: inputs[encoder.main_input_name]}
    if "attention_mask" in inputs:
        kwargs["attention_mask"] = inputs["attention_mask"]
    return encoder(**kwargs, return_dict=True)


def _repeat(encoder_outputs: BaseModelOutput, repeats: int) -> BaseModelOutput:
    hidden = encoder_outputs.last_hidden_state
    return BaseModelOutput(last_hidden_state=hidden.repeat_interleave(repeats, dim=0))


@torch.no_grad()
def decode(
    model,
    encoder_outputs: BaseModelOutput,
    *,
    do_sample: bool,
    num_return_sequences: int = 1,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """
    Decode captions from precomputed encoder outputs: greedy (`do_sample=False`) or multinomial sampling.

    Returns the generated ids (without the start token), `(batch * num_return_sequences, length)`,
    padded with the pad id after eos. The encoder output is reused, never recomputed.
    """
    start, eos, pad = _special_ids(model)
    encoder_outputs = BaseModelOutput(last_hidden_state=encoder_outputs.last_hidden_state.detach())
    if num_return_sequences > 1:
        encoder_outputs = _repeat(encoder_outputs, num_return_sequences)
    batch = encoder_outputs.last_hidden_state.shape[0]
    device = encoder_outputs.last_hidden_state.device
    next_input = torch.full((batch, 1), start, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    past, tokens = None, []
    for _ in range(max_new_tokens):
        out = model(
            encoder_outputs=encoder_outputs, decoder_input_ids=next_input, past_key_values=past, use_cache=True
        )
        past = out.past_key_values
        logits = out.logits[:, -1, :].float()
        if do_sample:
            logits = logits / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            token = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)
        else:
            token = logits.argmax(-1)
        token = torch.where(finished, torch.full_like(token, pad), token)
        tokens.append(token)
        finished |= token == eos
        if finished.all():
            break
        next_input = token[:, None]
    return torch.stack(tokens, dim=1)


def completion_mask(ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 for generated tokens up to and including the first eos, 0 after it."""
    is_eos = (ids == eos_id).int()
    after_eos = (is_eos.cumsum(-1) - is_eos) > 0
    return (~after_eos).float()


def token_log_probs(
    model, encoder_outputs: BaseModelOutput, ids: torch.Tensor, *, repeats: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Per-token log-probabilities of `ids` under the model, teacher-forced on the given encoder output.

    Returns `(log_probs, mask)`, both `(rows, length)`; padding after eos is masked.
    """
    start, eos, _ = _special_ids(model)
    if repeats > 1:
        encoder_outputs = _repeat(encoder_outputs, repeats)
    decoder_input = torch.cat([torch.full_like(ids[:, :1], start), ids[:, :-1]], dim=1)
    logits = model(encoder_outputs=encoder_outputs, decoder_input_ids=decoder_input).logits.float()
    log_probs = torch.gather(F.log_softmax(logits, dim=-1), 2, ids[:, :, None]).squeeze(-1)
    return log_probs, completion_mask(ids, eos)


def ids_to_text(tokenizer: PreTrainedTokenizerBase, ids: torch.Tensor) -> list[str]:
    """Decode generated ids to captions, stopping at eos."""
    return [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]


def generate_captions(
    model,
    processor,
    audio: Iterable,
    *,
    batch_size: int = 16,
    do_sample: bool = False,
    max_new_tokens: int = 32,
    top_k: int | None = None,
) -> list[str]:
    """
    Caption audio with a seq2seq captioner (greedy by default).

    Args:
        model: an encoder-decoder captioner (`WhisperForConditionalGeneration`, `SpeechEncoderDecoderModel`, ...).
        processor: its processor (with `feature_extractor` and `tokenizer`).
        audio (`Iterable`): waveforms at the feature extractor's rate, `datasets.Audio(decode=False)` values, or paths.
    """
    feature_extractor, tokenizer = processor.feature_extractor, processor.tokenizer
    rate = feature_extractor.sampling_rate
    arrays = [a if isinstance(a, np.ndarray) else decode_audio(a, rate, row=i) for i, a in enumerate(audio)]
    name = encoder_input_name(model)
    was_training = model.training
    model.eval()
    captions = []
    try:
        for i in range(0, len(arrays), batch_size):
            inputs = feature_extractor(arrays[i : i + batch_size], sampling_rate=rate, return_tensors="pt")
            inputs = {k: v.to(model.device) for k, v in inputs.items() if k in (name, "attention_mask")}
            with torch.no_grad():
                encoded = encode_audio(model, inputs)
                ids = decode(model, encoded, do_sample=do_sample, max_new_tokens=max_new_tokens, top_k=top_k)
            captions.extend(ids_to_text(tokenizer, ids))
    finally:
        model.train(was_training)
    return captions


def build_tiny_whisper_captioner(texts: Iterable[str], *, seed: int = 0, clip_seconds: float = 4.0, d_model: int = 64):
    """
    A 2-layer Whisper-architecture captioner with a tokenizer trained on `texts` (offline, random weights).

    The feature extractor's window is `clip_seconds` long (Whisper's is 30 s), so the encoder's
    positions match: `max_source_positions = 50 * clip_seconds`.

    Returns:
        `(WhisperForConditionalGeneration, WhisperProcessor)`.
    """
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    from ..encoders.clap import train_clap_tokenizer

    # A byte-level BPE with <s>=0, <pad>=1, </s>=2: the same small tokenizer CLAP fixtures use.
    tokenizer = train_clap_tokenizer(texts, vocab_size=512, model_max_length=64)
    feature_extractor = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, chunk_length=int(clip_seconds))
    frames = feature_extractor.nb_max_frames
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=d_model,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model,
        max_source_positions=frames // 2,
        max_target_positions=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.bos_token_id,
        begin_suppress_tokens=None,
        suppress_tokens=None,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = WhisperForConditionalGeneration(config)
    model.generation_config.forced_decoder_ids = None
    processor = WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    return model, processor


def load_caption_splits(args):
    """
    Train/test captioning data from [`~hfpref.trainers.caption_sft_config.CaptionScriptArguments`]: a synthetic
    world, or a dataset with an audio column (split `test_size` when it has no test split).
    """
    from ..data.loading import load_any_dataset, select_splits
    from ..data.synth import make_world

    if args.synthetic_clips:
        data = make_world(args.synthetic_clips, seed=args.synthetic_seed)
    else:
        data = load_any_dataset(args.dataset_name)
    splits = select_splits(
        data,
        name=args.dataset_name or "the synthetic world",
        train_split=args.dataset_train_split,
        test_split=args.dataset_test_split,
        test_size=args.test_size,
        seed=args.synthetic_seed,
    )
    limit = getattr(args, "max_train_samples", None)
    if limit is not None:
        splits["train"] = splits["train"].select(range(min(limit, len(splits["train"]))))
    return splits


def load_captioner(args, texts: Iterable[str] | None = None):
    """
    The captioner of [`~hfpref.trainers.caption_sft_config.CaptionerArguments`]: a checkpoint (safetensors only,
    no remote code) or, with `tiny_captioner`, a 2-layer Whisper built from a config with a tokenizer trained
    on `texts`.

    Returns:
        `(model, processor)`.
    """
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

    if args.tiny_captioner:
        if texts is None:
            raise ValueError("tiny_captioner needs the training captions to train its tokenizer")
        return build_tiny_whisper_captioner(texts, clip_seconds=args.tiny_clip_seconds)
    model = AutoModelForSpeechSeq2Seq.from_pretrained(args.model_name_or_path, use_safetensors=True)
    processor = AutoProcessor.from_pretrained(args.model_name_or_path)
    return model, processor
