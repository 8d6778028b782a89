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


def audio_embeddings(embedder, n: int, audio=None, audio_embedding=None) -> np.ndarray:
    """
    Audio embeddings for a batch of `n` rows: the cached `audio_embedding` column when present, else CLAP on `audio`
    (arrays, or Hub audio values decoded at the embedder's sampling rate).
    """
    if audio_embedding is not None:
        vectors = np.asarray(
            [e.detach().cpu().numpy() if hasattr(e, "detach") else e for e in audio_embedding], np.float32
        )
    elif audio is not None:
        from ..data.audio import decode_audio

        arrays = [
            a if isinstance(a, np.ndarray) else decode_audio(a, embedder.sampling_rate, row=i)
            for i, a in enumerate(audio)
        ]
        vectors = embedder.embed_audio(arrays)
    else:
        raise ValueError("this reward needs an `audio` or `audio_embedding` column; the batch has neither.")
    if len(vectors) != n:
        raise ValueError(f"{len(vectors)} audio rows for {n} completions.")
    return vectors


def clap_similarity(embedder, texts: Sequence[str], audio=None, audio_embedding=None) -> list[float]:
    """CLAP score of each caption with its clip: cosine of the audio and text embeddings, in [-1, 1]."""
    audio_vectors = audio_embeddings(embedder, len(texts), audio, audio_embedding)
    return row_cosine(audio_vectors, embedder.embed_text(list(texts))).astype(float).tolist()
