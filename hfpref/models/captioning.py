"""
Shared pieces of the captioning trainers: the audio/caption collator, decoding through the captioner's own
`generate` from one encoder pass shared by several decodes, log-probabilities of sampled captions under the
distribution they were drawn from, and a tiny Whisper-architecture captioner for offline tests and the quickstart.

SCST/RLOO/PPO need the encoder output of a batch computed once and shared by the sampled decode(s), the greedy decode
and the log-prob pass: [`decode`] hands `generate` the precomputed `encoder_outputs` (and the audio attention mask),
so the model's `generation_config` (Whisper's decoder prompt and suppressed tokens, eos, lengths) is honoured.

Captions are trained and decoded after one decoder prompt, [`captioning_prefix`]: [`prepare_captioner`] fixes it in
the generation config (Whisper: `<|startoftranscript|><|en|><|transcribe|><|notimestamps|>`, never a language
detected per batch, timestamp tokens suppressed), [`CaptionCollator`] builds SFT targets after it, and [`decode`]
checks every decode starts with it.
"""

import inspect
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase
from transformers.modeling_outputs import BaseModelOutput

from ..data.audio import decode_audio
from ._common import caption_ids as _caption_ids
from ._common import unwrap
from .audio_llm import (
    AudioLLMCaptionCollator,
    AudioPrompt,
    check_audio_llm,
    encode_prompt,
    generate_from_prompt,
    is_audio_llm,
    prepare_audio_llm,
    prompt_logits,
)


logger = logging.getLogger(__name__)

# What transformers' Whisper `generate` logs on every call of [`decode`], though the call is as documented: its own
# generation config carries `max_length`, it passes the suppress-token settings beside that config, and it hands scores
# back through its own loop. Each names a setting hfpref did not make; a quickstart printed ~150 of them between its
# progress lines. Only these messages, and only during [`decode`]'s call, are dropped.
_GENERATION_NOTICES = (
    "`max_new_tokens` will take precedence",
    "generation flags are not valid and may be ignored: ['output_scores']",
    "Passing `generation_config` together with generation-related arguments=({'begin_suppress_tokens', "
    "'suppress_tokens'})",
    "Passing `generation_config` together with generation-related arguments=({'suppress_tokens', "
    "'begin_suppress_tokens'})",
)


class _GenerationNoticeFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(notice in message for notice in _GENERATION_NOTICES)


class _quiet_generation_notices:
    """Drop [`_GENERATION_NOTICES`] from transformers' generation loggers while the block runs."""

    loggers = ("transformers.generation.utils", "transformers.generation.configuration_utils")

    def __enter__(self):
        self.filter = _GenerationNoticeFilter()
        for name in self.loggers:
            logging.getLogger(name).addFilter(self.filter)

    def __exit__(self, *exc):
        for name in self.loggers:
            logging.getLogger(name).removeFilter(self.filter)


def decoder_special_ids(model) -> tuple[int, int, int]:
    """`(decoder_start, eos, pad)` ids of an encoder-decoder captioner, from its generation config or config."""
    base = unwrap(model)
    gen, config = base.generation_config, base.config
    start = gen.decoder_start_token_id if gen.decoder_start_token_id is not None else config.decoder_start_token_id
    eos = eos_token_ids(model)[0]
    pad = gen.pad_token_id if gen.pad_token_id is not None else config.pad_token_id
    if start is None:
        raise ValueError("the captioner's generation config (or config) needs a decoder_start_token_id")
    return int(start), eos, eos if pad is None else int(pad)


def eos_token_ids(model) -> list[int]:
    """The eos ids the captioner's generation config stops at (its model config's when the former has none)."""
    base = unwrap(model)
    eos = getattr(base.generation_config, "eos_token_id", None)
    if eos is None:
        eos = (
            base.config.eos_token_id
            if base.config.eos_token_id is not None
            else getattr(getattr(base.config, "decoder", None), "eos_token_id", None)
        )
    if eos is None:
        raise ValueError("the captioner's generation config (or config) needs an eos_token_id")
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


def is_whisper_prompted(generation_config) -> bool:
    """Whether `generate` builds a Whisper decoder prompt (language, task, no-timestamps tokens) from this config."""
    return getattr(generation_config, "no_timestamps_token_id", None) is not None


def _is_multilingual(generation_config) -> bool:
    """A Whisper generation config whose prompt carries language and task tokens (not whisper-*.en)."""
    return bool(getattr(generation_config, "lang_to_id", None)) and getattr(generation_config, "is_multilingual", True)


def _language_token(generation_config, language: str) -> str:
    """`<|xx|>` of a language given as a code (`"en"`), a name (`"english"`) or a token (`"<|en|>"`)."""
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

    name = language.lower()
    token = name if name.startswith("<|") else f"<|{TO_LANGUAGE_CODE.get(name, name)}|>"
    if token not in generation_config.lang_to_id:
        raise ValueError(
            f"language {language!r} ({token}) is not in the captioner's generation_config.lang_to_id; it has "
            f"{sorted(generation_config.lang_to_id)[:8]}..."
        )
    return token


def non_caption_token_ids(model) -> list[int]:
    """
    Ids a Whisper captioner must never sample in a caption: its timestamps (after `<|notimestamps|>`, up to the
    vocabulary's end) and its prompt-only tokens (`<|startoftranscript|>`, languages, tasks, `<|startoflm|>`,
    `<|startofprev|>`, `<|nospeech|>`, `<|notimestamps|>`), all of which the tokenizer drops from decoded text: every
    id from the first of them on, eos excepted. Empty for other captioners.
    """
    base = unwrap(model)
    gen = base.generation_config
    if not is_whisper_prompted(gen):
        return []
    specials = [gen.no_timestamps_token_id, *(getattr(gen, "lang_to_id", None) or {}).values()]
    specials += [*(getattr(gen, "task_to_id", None) or {}).values()]
    specials += [getattr(gen, name, None) for name in ("decoder_start_token_id", "prev_sot_token_id")]
    first = min(int(i) for i in specials if i is not None)
    eos = set(eos_token_ids(model))
    return [i for i in range(first, base.config.vocab_size) if i not in eos]


def captioning_prefix(model) -> list[int]:
    """
    The decoder prompt every caption of `model` starts with, read from its generation config: what `generate` puts
    before the first sampled token, what [`decode`] checks it did, and what [`CaptionCollator`] trains after.

    `[decoder_start]` for most captioners; for Whisper `[<|startoftranscript|>, <|lang|>, <|transcribe|>,
    <|notimestamps|>]` (`[<|startoftranscript|>, <|notimestamps|>]` for English-only checkpoints), once
    [`prepare_captioner`] fixed the language: a generation config that leaves it to per-batch language detection, or
    that asks for timestamps, has no fixed prompt and is refused.
    """
    if is_audio_llm(model):
        return []  # an audio LLM's prompt is its chat template's, built per clip by AudioLLMCaptionCollator
    gen = unwrap(model).generation_config
    start = decoder_special_ids(model)[0]
    if not is_whisper_prompted(gen):
        return [start]
    if getattr(gen, "return_timestamps", False):
        raise ValueError(
            "the captioner's generation_config sets return_timestamps=True; call prepare_captioner(model)"
        )
    if not _is_multilingual(gen):
        return [start, int(gen.no_timestamps_token_id)]
    if getattr(gen, "language", None) is None or isinstance(gen.language, (list, tuple)):
        raise ValueError(
            "the captioner's generation_config has no fixed language (generate would detect one per batch, and "
            "captions would be decoded after another prompt than the one they were trained after): call "
            "hfpref.models.captioning.prepare_captioner(model, tokenizer, language=...)"
        )
    task = getattr(gen, "task", None) or "transcribe"
    if task not in gen.task_to_id:
        raise ValueError(f"task {task!r} is not in the captioner's generation_config.task_to_id {gen.task_to_id}")
    language = gen.lang_to_id[_language_token(gen, gen.language)]
    return [start, int(language), int(gen.task_to_id[task]), int(gen.no_timestamps_token_id)]


def prepare_captioner(
    model, tokenizer: PreTrainedTokenizerBase | None = None, *, language: str | None = None, task: str | None = None
) -> list[int]:
    """
    Fix the captioner's decoder prompt in its generation config, so that captions are trained and decoded after the
    same tokens, and a saved checkpoint keeps them (`save_pretrained` writes the generation config).

    For a Whisper captioner: the language (`language`, else the one already set, else English) and task are fixed,
    so `generate` never detects a language per batch; timestamps are off; and every timestamp and prompt-only token
    ([`non_caption_token_ids`]) is added to `suppress_tokens`, so sampling never draws a token the tokenizer would
    silently drop from the caption. A `WhisperTokenizer` gets the same prefix tokens (`set_prefix_tokens`), and must
    agree on their ids. An audio LLM's prompt-only tokens (`<|AUDIO|>` and its delimiters, `<|im_start|>`) are
    suppressed ([`~hfpref.models.audio_llm.prepare_audio_llm`]); its prompt is its chat template's, so `[]` is
    returned. Other captioners are left as they are (their prompt is the decoder start token).
    Idempotent.

    Args:
        model: the captioner (possibly wrapped: peft, DDP).
        tokenizer (`PreTrainedTokenizerBase`, *optional*): its tokenizer.
        language (`str`, *optional*): caption language for a multilingual Whisper (`"en"`, `"english"`, `"<|en|>"`).
        task (`str`, *optional*): Whisper task of the prompt (`"transcribe"` or `"translate"`); by default the one
            already set, else `"transcribe"`.

    Returns:
        `list[int]`: the decoder prompt, [`captioning_prefix`].
    """
    base = unwrap(model)
    gen = base.generation_config
    if is_audio_llm(model):
        check_audio_llm(model)
        prepare_audio_llm(model, tokenizer)
        return []
    if not is_whisper_prompted(gen):
        return captioning_prefix(model)
    if _is_multilingual(gen):
        current = gen.language if isinstance(getattr(gen, "language", None), str) else None
        gen.language = _language_token(gen, language or current or "en")[2:-2]
        gen.task = task or getattr(gen, "task", None) or "transcribe"
    gen.return_timestamps = False
    suppressed = set(gen.suppress_tokens or [])
    gen.suppress_tokens = sorted(suppressed | set(non_caption_token_ids(model)))
    prefix = captioning_prefix(model)
    if tokenizer is not None and hasattr(tokenizer, "set_prefix_tokens") and _is_multilingual(gen):
        tokenizer.set_prefix_tokens(language=gen.language, task=gen.task, predict_timestamps=False)
        if list(tokenizer.prefix_tokens) != prefix:
            raise ValueError(
                f"the tokenizer's prefix tokens {tokenizer.prefix_tokens} are not the generation config's prompt "
                f"{prefix}: tokenizer and captioner disagree on special-token ids"
            )
    return prefix


def encoder_input_name(model) -> str:
    """Name of the encoder's audio input: `input_features` (Whisper, audio LLMs) or `input_values` (wav2vec2)."""
    if is_audio_llm(model):
        return "input_features"
    return unwrap(model).get_encoder().main_input_name


def caption_collator(model, processor, **kwargs):
    """
    The collator of `model`'s batches: [`CaptionCollator`] for seq2seq captioners, with the encoder's input name;
    [`~hfpref.models.audio_llm.AudioLLMCaptionCollator`] (chat-templated prompts) for audio LLMs. `kwargs` are those
    of [`CaptionCollator`] (`decoder_prompt` and `input_name` are the seq2seq collator's own).
    """
    if is_audio_llm(model):
        check_audio_llm(model)
        kwargs.pop("decoder_prompt", None)
        kwargs.pop("input_name", None)
        kwargs.pop("tokenizer", None)
        return AudioLLMCaptionCollator(processor, **kwargs)
    kwargs.setdefault("input_name", encoder_input_name(model))
    kwargs.setdefault("tokenizer", processor.tokenizer)
    return CaptionCollator(processor.feature_extractor, **kwargs)


def extract_features(feature_extractor, arrays: Sequence[np.ndarray], input_name: str):
    """
    Batch features of waveforms: log-mels padded to the extractor's fixed window (Whisper), or raw `input_values`
    padded to the longest clip (wav2vec2-style encoders), so clips of any lengths batch.

    The audio attention mask follows the extractor's own contract (its `return_attention_mask`): wav2vec2-base and
    other group-norm encoders were trained on zero-padded batches without a mask and must not be given one, while
    layer-norm encoders (wav2vec2-large-lv60, HuBERT-large, ...) declare that they want it.
    """
    rate = feature_extractor.sampling_rate
    if input_name == "input_values":
        return feature_extractor(arrays, sampling_rate=rate, padding="longest", return_tensors="pt")
    return feature_extractor(arrays, sampling_rate=rate, return_tensors="pt")


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
        decoder_prompt (`list[int]`, *optional*): the captioner's decoder prompt ([`captioning_prefix`], e.g.
            Whisper's `<|startoftranscript|><|en|><|transcribe|><|notimestamps|>`). Given, the batch holds
            `decoder_input_ids` that start with it, and `labels` that mask it (-100), so captions are trained after
            exactly the prompt they are decoded after ([`caption_targets`]). `None`: `labels` only, which the model
            shifts right after its decoder start token.
    """

    feature_extractor: object
    tokenizer: PreTrainedTokenizerBase | None = None
    audio_column: str = "audio"
    caption_column: str | None = "caption"
    input_name: str = "input_features"
    max_caption_tokens: int = 64
    decoder_prompt: Sequence[int] | None = None

    def __call__(self, features: list[dict]) -> dict:
        rate = self.feature_extractor.sampling_rate
        arrays = [decode_audio(f[self.audio_column], rate, column=self.audio_column) for f in features]
        inputs = extract_features(self.feature_extractor, arrays, self.input_name)
        batch = {self.input_name: inputs[self.input_name]}
        if "attention_mask" in inputs and self.input_name == "input_values":
            batch["attention_mask"] = inputs["attention_mask"]
        if self.caption_column is not None:
            captions = [f[self.caption_column] for f in features]
            if self.decoder_prompt is None:
                batch["labels"] = caption_labels(self.tokenizer, captions, self.max_caption_tokens)
            else:
                batch.update(caption_targets(self.tokenizer, captions, self.max_caption_tokens, self.decoder_prompt))
        passthrough = {k for f in features for k in f} - {self.audio_column, self.caption_column}
        for key in sorted(passthrough):
            batch[key] = [f.get(key) for f in features]
        batch[self.audio_column] = [f[self.audio_column] for f in features]
        return batch


def caption_labels(tokenizer: PreTrainedTokenizerBase, captions: Sequence[str], max_tokens: int) -> torch.Tensor:
    """Token ids of `captions` followed by eos, padded with -100 (ignored by the loss)."""
    rows = _caption_ids(tokenizer, captions, max_tokens)
    width = max(len(r) for r in rows)
    return torch.tensor([r + [-100] * (width - len(r)) for r in rows])


def caption_targets(
    tokenizer: PreTrainedTokenizerBase, captions: Sequence[str], max_tokens: int, decoder_prompt: Sequence[int]
) -> dict[str, torch.Tensor]:
    """
    Teacher-forcing inputs and targets of `captions` after the captioner's decoder prompt: `decoder_input_ids` =
    prompt + caption (padded with the tokenizer's pad id), `labels` = -100 under the prompt's forced tokens, then the
    caption and eos (padded with -100). Only caption tokens and eos are scored; the prompt is what [`decode`] forces.

    Example:
    ```python
    >>> class Tok:  # one id per word: its length
    ...     eos_token_id = pad_token_id = 9
    ...
    ...     def __call__(self, text, add_special_tokens):
    ...         return {"input_ids": [len(w) for w in text.split()]}
    >>> out = caption_targets(Tok(), ["a dog", "rain"], 8, [50, 51, 52])
    >>> out["decoder_input_ids"].tolist()
    [[50, 51, 52, 1, 3], [50, 51, 52, 4, 9]]
    >>> out["labels"].tolist()
    [[-100, -100, 1, 3, 9], [-100, -100, 4, 9, -100]]

    ```
    """
    prompt = [int(t) for t in decoder_prompt]
    if not prompt:
        raise ValueError("decoder_prompt must hold at least the decoder start token")
    rows = _caption_ids(tokenizer, captions, max_tokens)
    width = len(prompt) - 1 + max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    inputs = [(prompt + r[:-1] + [pad] * width)[:width] for r in rows]
    labels = [([-100] * (len(prompt) - 1) + r + [-100] * width)[:width] for r in rows]
    return {"decoder_input_ids": torch.tensor(inputs), "labels": torch.tensor(labels)}


def encode_audio(model, inputs: Mapping[str, torch.Tensor]) -> "BaseModelOutput | AudioPrompt":
    """
    One pass of the audio encoder (of the captioner inside any peft/DDP wrapper; under FSDP2 a unit of its own).
    For an audio LLM, the encoder and projector's output scattered into the chat prompts' embeddings
    ([`~hfpref.models.audio_llm.encode_prompt`]).
    """
    from ..utils.distributed import init_fsdp_root

    init_fsdp_root(model)
    if is_audio_llm(model):
        return encode_prompt(model, inputs)
    encoder = unwrap(model).get_encoder()
    kwargs = {encoder.main_input_name: inputs[encoder.main_input_name]}
    if "attention_mask" in inputs:
        kwargs["attention_mask"] = inputs["attention_mask"]
    return encoder(**kwargs, return_dict=True)


def repeat_rows(encoder_outputs: BaseModelOutput, attention_mask: torch.Tensor | None, repeats: int):
    """Each clip's encoder output (and audio attention mask) `repeats` times in a row, as `generate` expands them."""
    if isinstance(encoder_outputs, AudioPrompt):
        return encoder_outputs.repeat_rows(repeats), None
    hidden = encoder_outputs.last_hidden_state
    if repeats == 1:
        return BaseModelOutput(last_hidden_state=hidden), attention_mask
    mask = None if attention_mask is None else attention_mask.repeat_interleave(repeats, dim=0)
    return BaseModelOutput(last_hidden_state=hidden.repeat_interleave(repeats, dim=0)), mask


# Logits processors that rescale logits rather than mask them: scoring a sample with the temperature and the recorded
# support (see `Rollout`) would not reproduce the distribution it was drawn from.
RESCALING_GENERATION_FLAGS = {"repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "sequence_bias": None}


def check_generation_config(model) -> None:
    """Refuse generation settings under which the RL log-probabilities would not be those of the sampler."""
    config = unwrap(model).generation_config
    for flag, neutral in RESCALING_GENERATION_FLAGS.items():
        value = getattr(config, flag, neutral)
        if value is not None and value != neutral:
            raise ValueError(
                f"the captioner's generation_config sets {flag}={value!r}: it rescales logits, so the policy-gradient "
                f"log-probabilities would not be those of the sampling distribution; set it to {neutral!r} for RL"
            )


@dataclass
class Rollout:
    r"""
    Captions decoded by `generate` from precomputed encoder outputs (see [`decode`]).

    Attributes:
        sequences (`torch.LongTensor` of shape `(rows, prompt_length + steps)`):
            The decoder prompt `generate` built (decoder start token, and Whisper's forced language/task/no-timestamp
            tokens), then the caption, padded with the pad id after eos.
        prompt_length (`int`): length of the decoder prompt.
        support (`torch.BoolTensor` of shape `(rows, steps, vocab)` or `None`):
            For sampled captions, where the processed next-token distribution the sample was drawn from was non-zero
            (top-k, suppressed and forced tokens masked by the generation config's logits processors); `None` when
            nothing was masked (or for greedy captions).
        sampling_log_probs (`torch.FloatTensor` of shape `(rows, steps)` or `None`):
            Log-probability of each sampled token under the distribution it was drawn from, as `generate` computed it.
        temperature (`float`): the sampling temperature (1 for greedy).
    """

    sequences: torch.Tensor
    prompt_length: int
    support: torch.Tensor | None = None
    sampling_log_probs: torch.Tensor | None = None
    temperature: float = 1.0

    @property
    def completion_ids(self) -> torch.Tensor:
        """The generated ids after the decoder prompt, `(rows, steps)`."""
        return self.sequences[:, self.prompt_length :]


def _ensure_prepared(model) -> list[int]:
    """[`prepare_captioner`] for a captioner decoded before anyone fixed its prompt (said once, in a warning)."""
    gen = unwrap(model).generation_config
    before = gen.to_json_string()
    prefix = prepare_captioner(model)
    if gen.to_json_string() != before:
        logger.warning(
            "the captioner's generation config did not fix its decoder prompt (language detected per batch, or "
            "timestamps sampled); decoding after %s from now on: call prepare_captioner(model, tokenizer) before "
            "training so captions are trained after the same prompt",
            prefix,
        )
    return prefix


@torch.no_grad()
def decode(
    model,
    encoder_outputs: BaseModelOutput,
    *,
    attention_mask: torch.Tensor | None = None,
    do_sample: bool,
    num_return_sequences: int = 1,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_k: int | None = None,
) -> Rollout:
    """
    Decode captions through the captioner's own `generate`, from precomputed encoder outputs.

    The model's `generation_config` decides the decoder prompt ([`captioning_prefix`]: start token; Whisper's
    language, task and no-timestamps tokens, fixed by [`prepare_captioner`], which runs first for a captioner nobody
    prepared), suppressed tokens and eos, and every decode is checked to start with that prompt: the rollout's
    completion (and its log-probabilities) begins right after it. This function sets only the decoding strategy: greedy
    (`do_sample=False`) or sampling at `temperature` restricted to the `top_k` most likely tokens (`None`: no top-k).
    The encoder output is reused, never recomputed: sampling `num_return_sequences` captions per clip expands it row
    by row, exactly as `generate(input_features, num_return_sequences=...)` expands the audio, so for the same torch
    seed the captions equal those of `model.generate` on the audio.

    Args:
        model: an encoder-decoder captioner (`WhisperForConditionalGeneration`, `SpeechEncoderDecoderModel`, ...),
            possibly wrapped (peft, DDP).
        encoder_outputs (`BaseModelOutput`): its encoder's output for a batch of clips.
        attention_mask (`torch.Tensor`, *optional*): the audio attention mask of padded `input_values` batches.

    Returns:
        [`Rollout`].
    """
    base = unwrap(model)
    if isinstance(encoder_outputs, AudioPrompt):
        return _decode_prompt(
            model,
            encoder_outputs,
            do_sample=do_sample,
            num_return_sequences=num_return_sequences,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
        )
    prefix = _ensure_prepared(model)
    encoder_outputs, attention_mask = repeat_rows(
        BaseModelOutput(last_hidden_state=encoder_outputs.last_hidden_state.detach()),
        attention_mask,
        num_return_sequences,
    )
    kwargs = {"encoder_outputs": encoder_outputs, "max_new_tokens": max_new_tokens, "do_sample": do_sample}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if do_sample:
        kwargs.update(temperature=temperature, top_k=top_k if top_k is not None else 0)
    if "force_unique_generate_call" in inspect.signature(base.generate).parameters:
        # Whisper: a caption is one segment, decoded in one call (its long-form loop would re-read the audio when a
        # random or early policy samples a timestamp token).
        kwargs["force_unique_generate_call"] = True
    with _quiet_generation_notices():
        out = base.generate(**kwargs, return_dict_in_generate=True, output_scores=True)
    steps = len(out.scores)
    prompt_length = out.sequences.shape[1] - steps
    expected = torch.tensor(prefix, device=out.sequences.device)
    if prompt_length != len(prefix) or not (out.sequences[:, :prompt_length] == expected).all():
        raise RuntimeError(
            f"generate decoded after {out.sequences[0, :prompt_length].tolist()}, not the captioning prefix {prefix} "
            "of the captioner's generation config"
        )
    return _rollout(out, prompt_length, do_sample, temperature)


def _decode_prompt(model, prompt: AudioPrompt, *, do_sample, num_return_sequences, max_new_tokens, temperature, top_k):
    """[`decode`] for an audio LLM: `generate` from the encoded chat prompts, each row `num_return_sequences` times."""
    prompt = prompt.detach().repeat_rows(num_return_sequences)
    kwargs = {"max_new_tokens": max_new_tokens, "do_sample": do_sample}
    if do_sample:
        kwargs.update(temperature=temperature, top_k=top_k if top_k is not None else 0)
    out = generate_from_prompt(model, prompt, **kwargs, return_dict_in_generate=True, output_scores=True)
    prompt_length = prompt.input_ids.shape[1]
    if out.sequences.shape[1] != prompt_length + len(out.scores) or not torch.equal(
        out.sequences[:, :prompt_length], prompt.input_ids
    ):
        raise RuntimeError("generate did not continue the captioning prompts it was given")
    return _rollout(out, prompt_length, do_sample, temperature)


def _rollout(out, prompt_length: int, do_sample: bool, temperature: float) -> Rollout:
    """The [`Rollout`] of `generate`'s output: sequences, and for samples the support and log-probs drawn under."""
    if not do_sample:
        return Rollout(out.sequences, prompt_length)
    scores = torch.stack(out.scores, dim=1).float()  # (rows, steps, vocab): the processed logits sampled from
    support = torch.isfinite(scores)
    tokens = out.sequences[:, prompt_length:]
    sampled = torch.gather(torch.log_softmax(scores, dim=-1), 2, tokens[:, :, None]).squeeze(-1)
    return Rollout(
        out.sequences,
        prompt_length,
        support=None if support.all() else support,
        sampling_log_probs=sampled,
        temperature=float(temperature),
    )


def completion_mask(ids: torch.Tensor, eos_ids: int | Sequence[int]) -> torch.Tensor:
    """1 for generated tokens up to and including the first eos, 0 after it."""
    eos_ids = torch.as_tensor([eos_ids] if isinstance(eos_ids, int) else list(eos_ids), device=ids.device)
    is_eos = torch.isin(ids, eos_ids).int()
    after_eos = (is_eos.cumsum(-1) - is_eos) > 0
    return (~after_eos).float()


def rollout_logits(
    model, encoder_outputs: BaseModelOutput, rollout: Rollout, *, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """
    Teacher-forced next-token logits of the rollout's caption tokens, `(rows, steps, vocab)`.

    `model` may be the DDP-wrapped captioner: the decoder pass then goes through its forward, so gradients are
    synchronised. `encoder_outputs` are per clip; they are expanded to the rollout's rows.
    """
    rows = rollout.sequences.shape[0]
    repeats = rows // encoder_outputs.last_hidden_state.shape[0]
    encoder_outputs, attention_mask = repeat_rows(encoder_outputs, attention_mask, repeats)
    if isinstance(encoder_outputs, AudioPrompt):
        return prompt_logits(model, encoder_outputs, rollout.completion_ids).float()
    kwargs = {"attention_mask": attention_mask} if attention_mask is not None else {}
    out = model(encoder_outputs=encoder_outputs, decoder_input_ids=rollout.sequences[:, :-1], **kwargs)
    return out.logits[:, rollout.prompt_length - 1 :].float()


def processed_log_probs(
    logits: torch.Tensor, rollout: Rollout, *, temperature: float | None = None, eos_ids: int | Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Per-token log-probabilities of the rollout's caption under the distribution it was sampled from: logits divided
    by the sampling temperature, restricted to the recorded support (top-k, suppressed and forced tokens).

    Returns `(log_probs, mask)`, both `(rows, steps)`; positions after eos are masked and their log-prob is 0.
    """
    temperature = rollout.temperature if temperature is None else temperature
    scaled = logits / temperature
    if rollout.support is not None:
        scaled = scaled.masked_fill(~rollout.support, float("-inf"))
    ids = rollout.completion_ids
    log_probs = torch.gather(F.log_softmax(scaled, dim=-1), 2, ids[:, :, None]).squeeze(-1)
    mask = completion_mask(ids, eos_ids)
    return torch.where(mask.bool(), log_probs, torch.zeros_like(log_probs)), mask


def token_log_probs(
    model,
    encoder_outputs: BaseModelOutput,
    rollout: Rollout,
    *,
    attention_mask: torch.Tensor | None = None,
    temperature: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Per-token log-probabilities of a rollout's captions, teacher-forced on the given encoder output, under the
    processed distribution the captions were sampled from (see [`processed_log_probs`]).

    Returns `(log_probs, mask)`, both `(rows, steps)`.
    """
    logits = rollout_logits(model, encoder_outputs, rollout, attention_mask=attention_mask)
    return processed_log_probs(logits, rollout, temperature=temperature, eos_ids=eos_token_ids(model))


def ids_to_text(tokenizer: PreTrainedTokenizerBase, ids: "torch.Tensor | Rollout") -> list[str]:
    """Decode generated ids (or a [`Rollout`]'s captions) to captions, without special tokens."""
    if isinstance(ids, Rollout):
        ids = ids.completion_ids
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
    Caption audio with a captioner (greedy by default): seq2seq, or an audio LLM answering the default caption
    instruction.

    Args:
        model: an encoder-decoder captioner (`WhisperForConditionalGeneration`, `SpeechEncoderDecoderModel`, ...) or
            an audio LLM (`Qwen2AudioForConditionalGeneration`).
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
            if is_audio_llm(model):
                inputs = AudioLLMCaptionCollator(processor, caption_column=None).prompts(arrays[i : i + batch_size])
            else:
                inputs = extract_features(feature_extractor, arrays[i : i + batch_size], name)
                inputs = {k: v for k, v in inputs.items() if k in (name, "attention_mask")}
            inputs = {k: v.to(model.device) for k, v in inputs.items()}
            with torch.no_grad():
                encoded = encode_audio(model, inputs)
                rollout = decode(
                    model,
                    encoded,
                    attention_mask=inputs.get("attention_mask"),
                    do_sample=do_sample,
                    max_new_tokens=max_new_tokens,
                    top_k=top_k,
                )
            captions.extend(ids_to_text(tokenizer, rollout))
    finally:
        model.train(was_training)
    return captions


def build_tiny_whisper_captioner(texts: Iterable[str], *, seed: int = 0, clip_seconds: float = 4.0, d_model: int = 64):
    """
    A 2-layer Whisper-architecture captioner with a tokenizer trained on `texts` (offline, random weights).

    The feature extractor's window is `clip_seconds` long (Whisper's is 30 s), so the encoder's
    positions match: `max_source_positions = 50 * clip_seconds`.

    The tokenizer is a `WhisperTokenizer` (so `pipeline("automatic-speech-recognition")` loads and decodes the saved
    captioner) over the byte-level BPE that CLAP fixtures use, with its ids: `<s>`=0, `<pad>`=1, `</s>`=2. The
    three tokens the pipeline's Whisper decoding looks up (`<|startoftranscript|>`, `<|startofprev|>`,
    `<|notimestamps|>`) come after the trained vocabulary, `<|notimestamps|>` last, so no caption token reads as a
    timestamp; the model's vocabulary stops before them (it never emits them, and captions are tokenized without
    special tokens).

    Returns:
        `(WhisperForConditionalGeneration, WhisperProcessor)`.
    """
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    from ..encoders.clap import train_clap_tokenizer

    bpe = train_clap_tokenizer(texts, vocab_size=512, model_max_length=64)
    state = json.loads(bpe.backend_tokenizer.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    tokenizer = WhisperTokenizer(
        vocab=state["vocab"],
        merges=merges,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=64,
    )
    vocab_size = len(tokenizer)
    if tokenizer.get_vocab() != bpe.get_vocab():
        raise RuntimeError("the Whisper tokenizer's vocabulary differs from the trained BPE's")
    tokenizer.add_special_tokens(
        {"additional_special_tokens": ["<|startoftranscript|>", "<|startofprev|>", "<|notimestamps|>"]}
    )
    feature_extractor = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, chunk_length=int(clip_seconds))
    frames = feature_extractor.nb_max_frames
    config = WhisperConfig(
        vocab_size=vocab_size,
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
