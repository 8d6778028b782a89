"""CLAP similarity of audio and text: the CLAP score of captions and text-to-audio prompts, and the CLAP reward."""

from collections.abc import Sequence

import numpy as np


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """
    Cosine similarity of each row of `a` with the same row of `b`, computed in the arrays' own dtype.

    Example:
    ```python
    >>> row_cosine(np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0], [1.0, 1.0]])).round(4).tolist()
    [1.0, 0.7071]

    ```
    """
    a = a / np.linalg.norm(a, axis=-1, keepdims=True).clip(1e-12)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True).clip(1e-12)
    return (a * b).sum(-1)


def audio_embeddings(
    embedder, n: int, audio=None, audio_embedding=None, *, sampling_rate: int | None = None
) -> np.ndarray:
    """
    Audio embeddings for a batch of `n` rows: the cached `audio_embedding` column when present, else CLAP on `audio`
    (arrays at `sampling_rate`, or Hub audio values, which are decoded at the embedder's sampling rate).

    Args:
        embedder: the CLAP ([`~hfpref.encoders.clap.ClapEmbedder`]).
        n (`int`): rows expected.
        audio (*optional*): waveforms or Hub audio values.
        audio_embedding (*optional*): precomputed embeddings, used instead of `audio`.
        sampling_rate (`int`, *optional*): rate of the waveform arrays in `audio`; defaults to the embedder's
            (arrays at another rate are resampled to it before CLAP sees them).
    """
    if audio_embedding is not None:
        vectors = np.asarray(
            [e.detach().cpu().numpy() if hasattr(e, "detach") else e for e in audio_embedding], np.float32
        )
    elif audio is not None:
        from ..data.audio import decode_audio, resample

        rate = embedder.sampling_rate
        source = rate if sampling_rate is None else sampling_rate
        arrays = [
            resample(a, source, rate, name=f"audio[{i}]")
            if isinstance(a, np.ndarray)
            else decode_audio(a, rate, row=i)
            for i, a in enumerate(audio)
        ]
        vectors = embedder.embed_audio(arrays, sampling_rate=rate)
    else:
        raise ValueError("this reward needs an `audio` or `audio_embedding` column; the batch has neither.")
    if len(vectors) != n:
        raise ValueError(f"{len(vectors)} audio rows for {n} completions.")
    return vectors


def clap_similarity(
    embedder, texts: Sequence[str], audio=None, audio_embedding=None, *, sampling_rate: int | None = None
) -> list[float]:
    """
    CLAP score of each caption with its clip: cosine of the audio and text embeddings, in [-1, 1]. Waveform arrays are
    at `sampling_rate` (the embedder's by default); see [`audio_embeddings`].
    """
    audio_vectors = audio_embeddings(embedder, len(texts), audio, audio_embedding, sampling_rate=sampling_rate)
    return row_cosine(audio_vectors, embedder.embed_text(list(texts))).astype(float).tolist()
