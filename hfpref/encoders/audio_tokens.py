"""
Audio as tokens of an LLM's vocabulary: the speech-token names (`<st_0>`, `<st_1>`, ...), growing a tokenizer and
its embedding table by them, and the `prompt` column (speech tokens + instruction) TRL's causal-LM trainers read.

Shared by the decoder-only captioners ([`~hfpref.trainers.caption_grpo.caption_grpo_utils`]) and the SpeechTokenizer wrapper
([`~hfpref.encoders.speech_tokens`]); a tokenizer of audio is any `(waveform, sampling_rate) -> codes` callable.
"""

from collections.abc import Callable, Sequence

import numpy as np
from datasets import Dataset

from ..data.audio import decode_audio


def speech_token(code: int, prefix: str = "st") -> str:
    """
    The vocabulary entry of one speech-token code.

    Example:
    ```python
    >>> speech_token(12)
    '<st_12>'

    ```
    """
    return f"<{prefix}_{int(code)}>"


def render_speech_tokens(codes: Sequence[int], prefix: str = "st") -> str:
    """
    Speech-token codes written as text, one vocabulary entry per code with no separator.

    Example:
    ```python
    >>> render_speech_tokens([12, 7, 7])
    '<st_12><st_7><st_7>'

    ```
    """
    return "".join(speech_token(code, prefix) for code in codes)


def add_audio_tokens(tokenizer, model, n_codes: int, prefix: str = "st") -> list[int]:
    """
    Add the speech tokens `<st_0> .. <st_{n_codes - 1}>` to the tokenizer and grow the model's embeddings to match.

    The tokens are ordinary (not special) added tokens, so they survive `decode(..., skip_special_tokens=True)`, the
    call TRL uses on completions. New embedding rows are initialised by transformers' mean resizing (mean and
    covariance of the existing rows) and are trainable with the rest of the matrix. Under LoRA the embedding matrix
    is frozen, so list the returned ids in the adapter config: `LoraConfig(..., trainable_token_indices={
    "embed_tokens": ids})` trains only these rows (peft's TrainableTokens, a small delta saved with the adapter);
    `modules_to_save=["embed_tokens"]` also works but trains and saves a full copy of the table (both checked with
    peft 0.21 under TRL's GRPOTrainer, where disabling the adapter for the reference also restores the rows). With an
    untied output layer the speech tokens' rows of `lm_head` stay as initialised under LoRA; speech tokens are
    inputs, never targets, so nothing needs them. Calling it again with the same arguments changes nothing.

    Args:
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            The LLM's tokenizer, extended in place.
        model ([`~transformers.PreTrainedModel`] or `None`):
            The LLM, resized in place when its embedding table is smaller than the new vocabulary; `None` to
            extend only the tokenizer.
        n_codes (`int`):
            Size of the speech-token codebook (1024 for SpeechTokenizer RVQ-1, `n_bands` for [`~hfpref.trainers.caption_grpo.caption_grpo_utils.frame_band_tokens`]).
        prefix (`str`, *optional*, defaults to `"st"`):
            Token names are `<{prefix}_{code}>`.

    Returns:
        `list[int]`: the token ids of codes `0 .. n_codes - 1`, in order.
    """
    if n_codes < 1:
        raise ValueError(f"n_codes={n_codes} must be >= 1")
    tokens = [speech_token(code, prefix) for code in range(n_codes)]
    tokenizer.add_tokens(tokens)
    ids = tokenizer.convert_tokens_to_ids(tokens)
    if model is not None and model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    return ids


def audio_token_prompts(
    ds: Dataset,
    tokenize_audio: Callable[[np.ndarray, int], Sequence[int]],
    *,
    audio_column: str = "audio",
    instruction: str = "Describe the sound.",
    sampling_rate: int = 16000,
    prefix: str = "st",
) -> Dataset:
    """
    Add the `prompt` column TRL's GRPO/RLOO read: the clip's speech tokens followed by the instruction.

    Every other column stays, so the audio (and `references`, `events`, ...) reaches reward functions as keyword
    arguments; keep `remove_unused_columns=False` in the TRL config (its default for GRPO and RLOO). Audio is
    decoded with [`~hfpref.data.audio.decode_audio`], never through `datasets`.

    Args:
        ds (`datasets.Dataset`):
            Dataset with an audio column (`datasets.Audio(decode=False)` values, paths or bytes); it must not have a
            `prompt` column already.
        tokenize_audio (`Callable[[np.ndarray, int], Sequence[int]]`):
            Maps `(waveform, sampling_rate)` to speech-token codes, e.g. [`frame_band_tokens`].
        audio_column (`str`, *optional*, defaults to `"audio"`):
            Name of the audio column.
        instruction (`str`, *optional*, defaults to `"Describe the sound."`):
            Text after the speech tokens, separated by a space; `""` for speech tokens alone.
        sampling_rate (`int`, *optional*, defaults to `16000`):
            Rate the audio is decoded at before `tokenize_audio` (SpeechTokenizer expects 16 kHz).
        prefix (`str`, *optional*, defaults to `"st"`):
            Speech-token names, as in [`add_audio_tokens`].

    Returns:
        `datasets.Dataset`: `ds` with a `prompt` column such as `"<st_12><st_7>... Describe the sound."`.
    """
    if audio_column not in ds.column_names:
        raise ValueError(f"audio_column={audio_column!r} is not a column; the dataset has {ds.column_names}")
    if "prompt" in ds.column_names:
        raise ValueError("the dataset already has a `prompt` column; remove or rename it before adding audio prompts")

    def add_prompt(example, index):
        waveform = decode_audio(example[audio_column], sampling_rate, row=index, column=audio_column)
        speech = render_speech_tokens(tokenize_audio(waveform, sampling_rate), prefix)
        return {"prompt": f"{speech} {instruction}" if instruction else speech}

    return ds.map(add_prompt, with_indices=True, desc="speech-token prompts")
