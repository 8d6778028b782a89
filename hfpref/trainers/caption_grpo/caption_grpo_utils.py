"""
Decoder-only captioners for TRL's GRPOTrainer and RLOOTrainer: audio in as tokens, rewards from hfpref.

TRL 1.16 trains only causal LMs with GRPO/RLOO and knows nothing about audio. An AlignCap-style captioner
([Liang et al., 2024](https://huggingface.co/papers/2410.19134)) fits that mould: the audio is turned into discrete
speech tokens that are new entries of the LLM's vocabulary (`<st_0>`, `<st_1>`, ...), so a prompt is plain text
and the LLM's own `generate` does the decoding. This module gathers the pieces TRL lacks (the first two live in
[`~hfpref.encoders.audio_tokens`], shared with the SpeechTokenizer wrapper, the third in
[`~hfpref.judges.oracle`]; all three are re-exported here):

- [`add_audio_tokens`]: grow the tokenizer and the embedding table by the speech-token vocabulary;
- [`audio_token_prompts`]: write the `prompt` column (speech tokens + instruction) and keep every other column
  (`audio`, `references`, `events`, ...), which TRL hands to reward functions as keyword arguments;
- [`get_oracle_reward`]: the synthetic world's judge as a TRL reward, standing in for human judges;
- [`audio_tokenizer_for`]: the speech-token source a [`~hfpref.trainers.caption_grpo.CaptionGRPOConfig`] names.

Any hfpref reward (`hfpref.rewards.functions`) plugs in unchanged, since it already has TRL's signature and reads
the audio from the `audio` column that travels beside the prompt. `hfpref/scripts/caption_grpo.py` puts it all
together with TRL's `GRPOTrainer`.

The real speech tokenizer is SpeechTokenizer's first RVQ layer (the semantic codes, 1024 of them;
[`~hfpref.encoders.speech_tokens.SpeechTokenEncoder`]). [`frame_band_tokens`] is a cheap deterministic stand-in
for offline tests and the quickstart, not a model of speech.
"""

import functools
from collections.abc import Callable

import numpy as np

from ...encoders.audio_tokens import add_audio_tokens, audio_token_prompts, render_speech_tokens, speech_token
from ...judges.oracle import get_oracle_reward


__all__ = [
    "add_audio_tokens",
    "audio_token_prompts",
    "audio_tokenizer_for",
    "frame_band_tokens",
    "get_oracle_reward",
    "render_speech_tokens",
    "speech_token",
]


def frame_band_tokens(
    waveform: np.ndarray,
    sampling_rate: int,
    n_bands: int = 16,
    frames_per_second: int = 10,
    *,
    min_frequency: float = 40.0,
) -> np.ndarray:
    """
    A stand-in audio tokenizer: one code per frame, the index of the frame's loudest frequency band.

    The spectrum from `min_frequency` to Nyquist is cut into `n_bands` log-spaced bands; each frame of
    `1 / frames_per_second` seconds (Hann-windowed) gets the band holding most of its energy. It is cheap,
    deterministic and needs no weights, which is all the offline tests ask of it: the codes do carry what the
    synthetic world's events sound like (a hum sits in the lowest bands, a whistle high up). The method itself
    uses SpeechTokenizer's RVQ-1 codes (50 per second, 1024 codes,
    [`~hfpref.encoders.speech_tokens.SpeechTokenEncoder`]); swap it in through the `tokenize_audio` argument of
    [`audio_token_prompts`], or `speech_tokens: speechtokenizer` in the config.

    Args:
        waveform (`np.ndarray`):
            Mono waveform, 1-D.
        sampling_rate (`int`):
            Its sampling rate, in Hz.
        n_bands (`int`, *optional*, defaults to `16`):
            Number of bands, hence of distinct codes (`0 .. n_bands - 1`).
        frames_per_second (`int`, *optional*, defaults to `10`):
            Codes per second of audio; the last partial frame is zero-padded.
        min_frequency (`float`, *optional*, defaults to `40.0`):
            Lower edge of the lowest band, in Hz; energy below it (DC offset, rumble) is ignored.

    Returns:
        `np.ndarray`: int64 codes, `ceil(len(waveform) * frames_per_second / sampling_rate)` of them.

    Example:
    ```python
    >>> import numpy as np
    >>> t = np.arange(8000) / 16000
    >>> low, high = np.sin(2 * np.pi * 100 * t), np.sin(2 * np.pi * 3000 * t)
    >>> frame_band_tokens(np.concatenate([low, high]), 16000, n_bands=8, frames_per_second=4).tolist()
    [1, 1, 6, 6]

    ```
    """
    waveform = np.asarray(waveform, dtype=np.float64)
    if waveform.ndim != 1 or waveform.size == 0:
        raise ValueError(f"frame_band_tokens needs a non-empty 1-D waveform, got shape {waveform.shape}")
    nyquist = sampling_rate / 2
    if n_bands < 1 or frames_per_second <= 0 or not 0 < min_frequency < nyquist:
        raise ValueError(
            f"n_bands={n_bands} must be >= 1, frames_per_second={frames_per_second} > 0, and "
            f"min_frequency={min_frequency} between 0 and the Nyquist frequency {nyquist}"
        )
    hop = max(1, int(round(sampling_rate / frames_per_second)))
    n_frames = -(-waveform.size // hop)
    frames = np.zeros(n_frames * hop)
    frames[: waveform.size] = waveform
    frames = frames.reshape(n_frames, hop) * np.hanning(hop)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(hop, 1 / sampling_rate)
    edges = np.geomspace(min_frequency, nyquist, n_bands + 1)
    band = np.searchsorted(edges, freqs, side="right") - 1
    keep = freqs >= min_frequency
    band = np.minimum(band[keep], n_bands - 1)  # the Nyquist bin sits on the top edge
    membership = np.zeros((band.size, n_bands))
    membership[np.arange(band.size), band] = 1.0
    return (power[:, keep] @ membership).argmax(axis=1).astype(np.int64)


def audio_tokenizer_for(args) -> tuple[Callable[[np.ndarray, int], np.ndarray], int]:
    """
    The speech-token source a [`~hfpref.trainers.caption_grpo.CaptionGRPOConfig`] names, and its vocabulary size.

    Args:
        args ([`~hfpref.trainers.caption_grpo.CaptionGRPOConfig`] or alike):
            Reads `speech_tokens` (`"frame_band"` or `"speechtokenizer"`), `n_codes`, `frames_per_second`,
            `speech_tokenizer_path` and `speech_tokenizer_weights`.

    Returns:
        `tuple[Callable, int]`: `tokenize_audio(waveform, sampling_rate) -> codes`, the `tokenize_audio` argument of
        [`audio_token_prompts`], and the number of codes, the `n_codes` of [`add_audio_tokens`].

    Raises:
        `ValueError`: for an unknown source, or an `n_codes` that is not the SpeechTokenizer checkpoint's codebook size.

    Example:
    ```python
    >>> from types import SimpleNamespace
    >>> args = SimpleNamespace(speech_tokens="frame_band", n_codes=8, frames_per_second=4)
    >>> tokenize_audio, n_codes = audio_tokenizer_for(args)
    >>> n_codes, tokenize_audio(np.sin(2 * np.pi * 100 * np.arange(8000) / 16000), 16000).tolist()
    (8, [1, 1])

    ```
    """
    if args.speech_tokens == "frame_band":
        n_codes = args.n_codes or 16
        return functools.partial(frame_band_tokens, n_bands=n_codes, frames_per_second=args.frames_per_second), n_codes
    if args.speech_tokens == "speechtokenizer":
        from ...encoders.speech_tokens import SpeechTokenEncoder  # torch models: loaded only when asked for

        encoder = SpeechTokenEncoder.from_pretrained(args.speech_tokenizer_path, args.speech_tokenizer_weights)
        if args.n_codes is not None and args.n_codes != encoder.codebook_size:
            raise ValueError(
                f"n_codes={args.n_codes} but the SpeechTokenizer at {args.speech_tokenizer_path} has "
                f"{encoder.codebook_size} codes; leave n_codes unset or set it to {encoder.codebook_size}"
            )
        return encoder, encoder.codebook_size
    raise ValueError(f"speech_tokens={args.speech_tokens!r} is not one of ['frame_band', 'speechtokenizer']")
