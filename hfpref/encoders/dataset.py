"""Add embedding columns to a dataset, through the embedder's cache.

Every trainer that works on cached embeddings (reward models, binary feedback) takes
columns such as ``audio_embedding``, ``chosen_embedding`` and ``rejected_embedding``;
this is the one place that makes them from ``audio`` and text columns.
"""

import hashlib
import logging
from collections.abc import Mapping, Sequence

import numpy as np
from datasets import Dataset, List, Value

from ..data.audio import decode_audio, ensure_audio_column


logger = logging.getLogger(__name__)


def _audio_value_key(value) -> str:
    """Identity of a stored audio value, so each distinct clip is decoded once."""
    if isinstance(value, Mapping) and value.get("bytes"):
        return "bytes:" + hashlib.sha256(value["bytes"]).hexdigest()
    if isinstance(value, Mapping) and "array" in value:
        array = np.ascontiguousarray(value["array"], dtype=np.float32)
        return f"array:{value.get('sampling_rate')}:" + hashlib.sha256(array.tobytes()).hexdigest()
    if isinstance(value, Mapping):
        return f"path:{value.get('path')}"
    return f"path:{value}"


def add_embeddings(
    dataset: Dataset,
    embedder,
    *,
    audio_column: str | None = "audio",
    text_columns: Sequence[str] | Mapping[str, str] = ("caption",),
    audio_embedding_column: str = "audio_embedding",
    skip_bad_audio: bool = False,
) -> Dataset:
    """
    Embed the audio column and text columns of `dataset` with a [`ClapEmbedder`].

    Args:
        dataset (`datasets.Dataset`):
            Dataset with an audio column (any `datasets.Audio` feature or file paths; it is
            decoded by hfpref, never by `datasets`) and text columns.
        embedder ([`~hfpref.encoders.ClapEmbedder`]):
            The embedder; its cache makes each distinct clip and caption cost one forward pass.
        audio_column (`str` or `None`, *optional*, defaults to `"audio"`):
            Audio column to embed, or `None` for text only.
        text_columns (`Sequence[str]` or `Mapping[str, str]`, *optional*, defaults to `("caption",)`):
            Text columns to embed. A sequence names the output `<column>_embedding`; a mapping
            gives output names, e.g. `{"caption": "text_embedding"}`.
        audio_embedding_column (`str`, *optional*, defaults to `"audio_embedding"`):
            Name of the audio embedding column.
        skip_bad_audio (`bool`, *optional*, defaults to `False`):
            Drop rows whose audio cannot be decoded (logged with a count) instead of raising
            [`~hfpref.data.audio.AudioDecodeError`] naming the file and row.

    Returns:
        `datasets.Dataset`: the input rows (less dropped ones) with float32 embedding columns added.
    """
    if len(dataset) == 0:
        raise ValueError("add_embeddings: the dataset is empty; there is nothing to embed.")
    if not isinstance(text_columns, Mapping):
        text_columns = {column: f"{column}_embedding" for column in text_columns}
    missing = [c for c in [*text_columns, *([audio_column] if audio_column else [])] if c not in dataset.column_names]
    if missing:
        raise ValueError(f"add_embeddings: columns {missing} not found; the dataset has {dataset.column_names}.")

    keep = list(range(len(dataset)))
    audio_vectors = None
    if audio_column is not None:
        dataset = ensure_audio_column(dataset, audio_column)
        values = dataset[audio_column]
        decoded: dict[str, np.ndarray | None] = {}
        first_row: dict[str, int] = {}
        bad_rows = []
        for row, value in enumerate(values):
            key = _audio_value_key(value)
            if key not in decoded:
                first_row[key] = row
                try:
                    decoded[key] = decode_audio(value, embedder.sampling_rate, row=row, column=audio_column)
                except ValueError:
                    if not skip_bad_audio:
                        raise
                    decoded[key] = None
            if decoded[key] is None:
                bad_rows.append(row)
        if bad_rows:
            logger.warning(
                "add_embeddings: dropped %d of %d rows whose audio could not be decoded (rows %s%s).",
                len(bad_rows),
                len(dataset),
                bad_rows[:10],
                " ..." if len(bad_rows) > 10 else "",
            )
            bad = set(bad_rows)
            keep = [row for row in keep if row not in bad]
        distinct = [key for key in decoded if decoded[key] is not None]
        if not distinct:
            raise ValueError(f"add_embeddings: no row of column {audio_column!r} could be decoded.")
        vectors = embedder.embed_audio([decoded[key] for key in distinct], sampling_rate=embedder.sampling_rate)
        by_key = dict(zip(distinct, vectors))
        audio_vectors = [by_key[_audio_value_key(values[row])] for row in keep]

    if len(keep) != len(dataset):
        dataset = dataset.select(keep)
    for column, output in text_columns.items():
        texts = dataset[column]
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(
                    f"add_embeddings: column {column!r} row {keep[row]} is {type(text).__name__}, not text."
                )
        vectors = embedder.embed_text(texts)
        dataset = _add_vector_column(dataset, output, vectors)
    if audio_vectors is not None:
        dataset = _add_vector_column(dataset, audio_embedding_column, np.stack(audio_vectors))
    return dataset


def _add_vector_column(dataset: Dataset, name: str, vectors: np.ndarray) -> Dataset:
    if name in dataset.column_names:
        dataset = dataset.remove_columns(name)
    feature = List(Value("float32"), length=vectors.shape[1])
    return dataset.add_column(name, list(vectors.astype(np.float32)), feature=feature)
