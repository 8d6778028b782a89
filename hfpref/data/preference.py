"""Preference datasets: clip-level splits, synthetic negatives, challenging subsets, binary feedback, Hub I/O.

Pairs judged on the same clip are strongly correlated, so every split here is made **by clip**, never by pair
(`DESIGN.md`, section 2).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from datasets import (
    Dataset,
    DatasetDict,
    DatasetInfo,
    Value,
    concatenate_datasets,
)

from .audio import ensure_audio_column
from .loading import check_text_data_file, load_any_dataset
from .schemas import validate_dataset


logger = logging.getLogger(__name__)

# Label values of binary feedback that mark an item the annotator skipped (compared after str().strip().lower()).
SKIP_LABELS = ("", "skip", "skipped", "-1", "none", "null", "nan")
# Clip-level columns that synthetic negatives carry over from their clip's first row when present.
CLIP_COLUMNS = ("audio", "audio_id", "raw_name")


def _column(ds: Dataset, name: str) -> list:
    return list(ds.select_columns([name])[name])


def _require_column(ds: Dataset, name: str, argument: str) -> None:
    if name not in ds.column_names:
        raise ValueError(f"{argument}={name!r} is not a column of the dataset; it has {ds.column_names}.")


def _clip_rows(ds: Dataset, clip_column: str) -> dict[Hashable, list[int]]:
    """Row indices of each clip, clips in order of first appearance."""
    clips: dict[Hashable, list[int]] = {}
    for index, clip in enumerate(_column(ds, clip_column)):
        clips.setdefault(clip, []).append(index)
    return clips


# How many offending rows a warning or error names before summarising the rest as a count.
_MAX_NAMED_ROWS = 5


def _normalized(text: str) -> str:
    return " ".join(text.split()).lower()


def drop_uninformative_rows(
    ds: Dataset,
    text_columns: Sequence[str],
    *,
    pair_columns: tuple[str, str] | None = None,
    strict: bool = False,
    name: str = "the dataset",
) -> Dataset:
    r"""
    Drop the rows that would mislead training, with a count; or refuse them with `strict=True`.

    A row is uninformative when a text in `text_columns` is missing, empty or whitespace only (a reward model would
    learn to score an empty caption, a CLAP to embed it), or when the two texts of `pair_columns` are the same caption
    (ignoring case and spacing): a pair with chosen == rejected carries no preference, and the Bradley-Terry loss of
    a tie still pushes on the weights. Columns absent from `ds` are not checked.

    Args:
        ds (`datasets.Dataset`):
            The dataset.
        text_columns (`Sequence[str]`):
            Columns holding one text per row, e.g. `["chosen", "rejected"]` or `["caption"]`.
        pair_columns (`tuple[str, str]`, *optional*):
            Two columns that must differ, e.g. `("chosen", "rejected")`.
        strict (`bool`, *optional*, defaults to `False`):
            Raise on the first uninformative row instead of dropping.
        name (`str`, *optional*, defaults to `"the dataset"`):
            How messages name `ds` (its file or split).

    Returns:
        `datasets.Dataset`: `ds` itself when every row is informative, otherwise the informative rows. A warning
        names how many rows were dropped for each reason and the first rows.

    Raises:
        `ValueError`: with `strict=True`, naming the first uninformative row, its column and the reason; or when no row
        is left.

    Example:

    ```python
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"chosen": ["a dog barks", " ", "rain"], "rejected": ["a cat", "wind", "Rain "]})
    >>> list(drop_uninformative_rows(ds, ["chosen", "rejected"], pair_columns=("chosen", "rejected"))["chosen"])
    ['a dog barks']

    ```
    """
    columns = [column for column in text_columns if column in ds.column_names]
    values = {column: _column(ds, column) for column in dict.fromkeys([*columns, *(pair_columns or ())])}
    if pair_columns is not None and not all(column in ds.column_names for column in pair_columns):
        pair_columns = None
    reasons: dict[str, list[int]] = {}
    for row in range(len(ds)):
        reason = None
        for column in columns:
            text = values[column][row]
            if not isinstance(text, str) or not text.strip():
                reason = f"empty {column!r}" if isinstance(text, str) or text is None else f"non-text {column!r}"
                break
        if reason is None and pair_columns is not None:
            first, second = (values[column][row] for column in pair_columns)
            if _normalized(first) == _normalized(second):
                reason = f"{pair_columns[0]!r} == {pair_columns[1]!r}"
        if reason is not None:
            if strict:
                raise ValueError(
                    f"{name}: row {row} has {reason} ({[values[c][row] for c in values]!r}); such rows would mislead "
                    "training. Fix or remove them, or leave strict off to drop them with a count."
                )
            reasons.setdefault(reason, []).append(row)
    if not reasons:
        return ds
    bad = sorted(row for rows in reasons.values() for row in rows)
    summary = "; ".join(
        f"{len(rows)} with {reason} (rows {rows[:_MAX_NAMED_ROWS]}{', ...' if len(rows) > _MAX_NAMED_ROWS else ''})"
        for reason, rows in reasons.items()
    )
    if len(bad) == len(ds):
        raise ValueError(f"{name}: every one of its {len(ds)} rows is uninformative: {summary}.")
    logger.warning("%s: dropped %d of %d rows that would mislead training: %s.", name, len(bad), len(ds), summary)
    dropped = set(bad)
    return ds.select([row for row in range(len(ds)) if row not in dropped])


def split_by_clip(ds: Dataset, test_size: float = 0.2, seed: int = 0, clip_column: str = "clip_id") -> DatasetDict:
    r"""
    Split a dataset into `"train"` and `"test"` so that all rows of a clip fall on the same side.

    The clips are sorted, shuffled with `numpy.random.default_rng(seed)` and the first `round(test_size * n_clips)`
    (at least 1, at most `n_clips - 1`) go to the test split, so the split depends only on the set of clips and the
    seed, not on the row order. Rows keep their original order within each split.

    Args:
        ds (`datasets.Dataset`):
            The dataset, with a clip column.
        test_size (`float`, *optional*, defaults to `0.2`):
            Share of the **clips** (not rows) that go to the test split, strictly between 0 and 1.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the clip shuffle.
        clip_column (`str`, *optional*, defaults to `"clip_id"`):
            Column identifying the clip of each row.

    Returns:
        `datasets.DatasetDict` with `"train"` and `"test"` splits.

    Example:

    ```python
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"clip_id": ["a", "a", "b", "c", "d", "e"], "chosen": list("uvwxyz")})
    >>> splits = split_by_clip(ds, test_size=0.2, seed=0)
    >>> sorted(splits)
    ['test', 'train']
    >>> set(splits["train"]["clip_id"]) & set(splits["test"]["clip_id"])
    set()
    >>> len(set(splits["test"]["clip_id"]))
    1

    ```
    """
    _require_column(ds, clip_column, "clip_column")
    if not 0 < test_size < 1:
        raise ValueError(f"test_size={test_size!r} must be a share of the clips strictly between 0 and 1.")
    clips = _clip_rows(ds, clip_column)
    if len(clips) < 2:
        raise ValueError(f"Splitting by clip needs at least 2 clips in column {clip_column!r}; found {len(clips)}.")
    ordered = sorted(clips, key=str)
    n_test = min(max(round(test_size * len(ordered)), 1), len(ordered) - 1)
    order = np.random.default_rng(seed).permutation(len(ordered))
    test_clips = {ordered[i] for i in order[:n_test]}
    test_rows = sorted(i for clip in test_clips for i in clips[clip])
    train_rows = sorted(i for clip, rows in clips.items() if clip not in test_clips for i in rows)
    return DatasetDict({"train": ds.select(train_rows), "test": ds.select(test_rows)})


def _true_captions(ds: Dataset, clips: dict[Hashable, list[int]], caption_column: str) -> dict[Hashable, list[str]]:
    if caption_column in ds.column_names:
        column = caption_column
    elif "references" in ds.column_names:
        column = "references"
    else:
        raise ValueError(
            f"Synthetic negatives need the true captions of each clip, from caption_column={caption_column!r} or a "
            f"'references' column; the dataset has {ds.column_names}."
        )
    values = _column(ds, column)
    captions: dict[Hashable, list[str]] = {}
    for clip, rows in clips.items():
        seen: dict[str, None] = {}
        for row in rows:
            value = values[row]
            for caption in [value] if isinstance(value, str) else (value or []):
                if isinstance(caption, str) and caption.strip():
                    seen.setdefault(caption, None)
        if not seen:
            raise ValueError(f"Clip {clip!r} has no true caption in column {column!r}.")
        captions[clip] = list(seen)
    return captions


def add_synthetic_negatives(
    ds: Dataset,
    *,
    caption_column: str = "caption",
    clip_column: str = "clip_id",
    seed: int = 0,
    n_per_clip: int = 1,
) -> Dataset:
    r"""
    Build synthetic preference pairs: a clip's true caption (chosen) against a true caption of another clip (rejected).

    The RLHF captioning paper (https://huggingface.co/papers/2509.14659) adds such pairs to the human judgments so
    the reward model learns that a fluent caption of the wrong clip is bad.

    The true captions of a clip are read from `caption_column` when the dataset has it, otherwise from a
    `references` column. A cell may hold one caption (a string) or several (a list of strings); the captions of all
    rows of a clip are pooled. So both inputs work:

    - one or more rows per clip with its true caption in `caption` (e.g. a captioning dataset or the synthetic world);
    - a pairwise dataset with `references` and `clip_id`, such as [`~data.fense.load_fense`] output: chosen is a
      reference of the clip, rejected a reference of another clip. `chosen` of a pairwise dataset is **not** used as
      a true caption (a preferred machine caption may still be wrong); pass `caption_column="chosen"` to do so.

    Chosen captions cycle through a shuffle of the clip's own captions; the rejected one comes from a uniformly drawn
    other clip. A rejected caption is never one of the clip's own captions, not even when two clips share a caption
    text.

    Args:
        ds (`datasets.Dataset`):
            Dataset with a clip column and the true captions.
        caption_column (`str`, *optional*, defaults to `"caption"`):
            Column holding true captions (string or list of strings); `references` is used when it is absent.
        clip_column (`str`, *optional*, defaults to `"clip_id"`):
            Column identifying the clip of each row.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the draws; the same seed gives the same pairs.
        n_per_clip (`int`, *optional*, defaults to `1`):
            Number of pairs per clip.

    Returns:
        `datasets.Dataset` in the pairwise schema, one block of `n_per_clip` rows per clip in order of first
        appearance, with columns `clip_column`, `chosen`, `rejected`, `category` (always `"synthetic"`),
        `rejected_clip_id`, and the clip-level columns `audio`, `audio_id`, `raw_name` copied from the clip's first row
        when the input has them (`audio` keeps its feature, so nothing is decoded).
    """
    _require_column(ds, clip_column, "clip_column")
    if n_per_clip < 1:
        raise ValueError(f"n_per_clip={n_per_clip!r} must be at least 1.")
    clips = _clip_rows(ds, clip_column)
    if len(clips) < 2:
        raise ValueError(f"Synthetic negatives need at least 2 clips in column {clip_column!r}; found {len(clips)}.")
    captions = _true_captions(ds, clips, caption_column)
    clip_ids = list(clips)
    own = {clip: set(texts) for clip, texts in captions.items()}
    rng = np.random.default_rng(seed)

    rows: dict[str, list] = {clip_column: [], "chosen": [], "rejected": [], "category": [], "rejected_clip_id": []}
    source_rows = []
    for position, clip in enumerate(clip_ids):
        foreign = None  # built lazily: the other clips' captions this clip may be paired with
        chosen_order = rng.permutation(len(captions[clip]))
        for k in range(n_per_clip):
            chosen = captions[clip][chosen_order[k % len(chosen_order)]]
            for _ in range(16):
                other = int(rng.integers(len(clip_ids) - 1))
                other_clip = clip_ids[other + 1 if other >= position else other]
                rejected = captions[other_clip][int(rng.integers(len(captions[other_clip])))]
                if rejected not in own[clip]:
                    break
            else:
                if foreign is None:
                    foreign = [(c, t) for c in clip_ids if c != clip for t in captions[c] if t not in own[clip]]
                if not foreign:
                    raise ValueError(f"Every caption of the other clips is also a caption of clip {clip!r}.")
                other_clip, rejected = foreign[int(rng.integers(len(foreign)))]
            rows[clip_column].append(clip)
            rows["chosen"].append(chosen)
            rows["rejected"].append(rejected)
            rows["category"].append("synthetic")
            rows["rejected_clip_id"].append(other_clip)
            source_rows.append(clips[clip][0])

    pairs = Dataset.from_dict(rows)
    clip_feature = ds.features[clip_column]
    if pairs.features[clip_column] != clip_feature:
        pairs = pairs.cast_column(clip_column, clip_feature).cast_column("rejected_clip_id", clip_feature)
    carried = [column for column in CLIP_COLUMNS if column in ds.column_names and column != clip_column]
    if not carried:
        return pairs
    return concatenate_datasets([ds.select_columns(carried).select(source_rows), pairs], axis=1)


def challenging_split(
    ds: Dataset,
    scores: Mapping[Hashable, float] | Sequence[float],
    n: int = 250,
    clip_column: str = "clip_id",
) -> Dataset:
    r"""
    Keep the rows of the `n` clips with the lowest scores, e.g. the 250 clips a captioner does worst on by FENSE score.

    Args:
        ds (`datasets.Dataset`):
            The dataset, with a clip column.
        scores (`Mapping` or `Sequence` of `float`):
            Either a mapping `clip_id -> score` that covers every clip of `ds`, or one score per row of `ds` (in row
            order), in which case a clip's score is the mean over its rows.
        n (`int`, *optional*, defaults to `250`):
            Number of clips to keep; at most the number of clips.
        clip_column (`str`, *optional*, defaults to `"clip_id"`):
            Column identifying the clip of each row.

    Returns:
        `datasets.Dataset`: all rows of the `n` lowest-scoring clips, in their original order. Equal scores are
        broken by the order in which the clips first appear.
    """
    _require_column(ds, clip_column, "clip_column")
    clips = _clip_rows(ds, clip_column)
    if not 1 <= n <= len(clips):
        raise ValueError(f"n={n} must be between 1 and the number of clips in {clip_column!r} ({len(clips)}).")
    if isinstance(scores, Mapping):
        missing = [clip for clip in clips if clip not in scores]
        if missing:
            raise ValueError(f"scores has no score for {len(missing)} clip(s), e.g. {missing[:5]}.")
        clip_scores = {clip: float(scores[clip]) for clip in clips}
    else:
        scores = list(scores)
        if len(scores) != len(ds):
            raise ValueError(
                f"scores is a sequence of {len(scores)} values but the dataset has {len(ds)} rows; give one score "
                "per row, or a mapping clip_id -> score."
            )
        clip_scores = {clip: float(np.mean([scores[i] for i in rows])) for clip, rows in clips.items()}
    lowest = sorted(clips, key=lambda clip: clip_scores[clip])[:n]  # sorted() is stable: ties keep clip order
    return ds.select(sorted(i for clip in lowest for i in clips[clip]))


def _parse_label(value: Any, where: str) -> int | None:
    """0 or 1, None for a skipped item; anything else is an error."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value in (0, 1):
            return int(value)
        if value == -1 or value != value:  # -1 or NaN
            return None
    elif value is None or str(value).strip().lower() in SKIP_LABELS:
        return None
    elif str(value).strip() in ("0", "1", "0.0", "1.0"):
        return int(float(str(value).strip()))
    raise ValueError(f"{where}: label {value!r} is not 0, 1 or a skip marker (empty, 'skip', -1).")


def _read_feedback_rows(path: Path) -> tuple[list[dict], list[str]]:
    """Rows as dicts and, for each row, where it sits in the file (for error messages)."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".json", ".jsonl"):
        check_text_data_file(path)
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows, places = [], []
            for index, row in enumerate(reader):
                rows.append(row)
                places.append(f"row {index} (line {reader.line_num})")
        return rows, places
    if suffix == ".jsonl":
        rows, places = [], []
        with path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if line.strip():
                    places.append(f"row {len(rows)} (line {line_number})")
                    rows.append(json.loads(line))
    elif suffix == ".json":
        with path.open(encoding="utf-8") as handle:
            rows = json.load(handle)
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of objects, got {type(rows).__name__}.")
        places = [f"row {index}" for index in range(len(rows))]
    else:
        raise ValueError(f"{path}: unsupported binary-feedback file type {suffix!r}; use .csv, .json or .jsonl.")
    for row, place in zip(rows, places):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: {place} should be an object, got {type(row).__name__}.")
    return rows, places


def load_binary_feedback(
    path: str | Path,
    *,
    audio_column: str = "audio",
    text_column: str = "prompt",
    label_column: str = "label",
    base_dir: str | Path | None = None,
    strict: bool = False,
) -> Dataset:
    r"""
    Load BATON-style binary human feedback: (audio file, prompt, 0/1 label) rows from CSV, JSON or JSON Lines.

    BATON (https://huggingface.co/papers/2402.00744) asks annotators whether a generated clip matches its prompt:
    label 1 means it does, 0 that it does not. Items the annotator skipped (label empty, `"skip"` or -1) and items
    whose text is empty are dropped; their numbers are logged (a warning) and written into `ds.info.description`, so
    nothing is lost silently.

    Args:
        path (`str` or `Path`):
            A `.csv` file with a header row, a `.json` list of objects, or a `.jsonl` file of objects.
        audio_column (`str`, *optional*, defaults to `"audio"`):
            Column holding audio file paths.
        text_column (`str`, *optional*, defaults to `"prompt"`):
            Column holding the prompt (or caption) the audio is judged against.
        label_column (`str`, *optional*, defaults to `"label"`):
            Column holding the 0/1 label.
        base_dir (`str` or `Path`, *optional*):
            Folder that relative audio paths are resolved against. Defaults to the folder of `path`.
        strict (`bool`, *optional*, defaults to `False`):
            Refuse a labeled item whose text is empty or whitespace only, instead of dropping it with a count.

    Returns:
        `datasets.Dataset` with all the file's columns, `label_column` as `int64` and `audio_column` as
        `datasets.Audio(decode=False)` holding absolute paths (datasets never decodes it; decoding would need
        torchcodec and FFmpeg). It validates as the `"pointwise"` kind.

    Raises:
        `ValueError`: if a column is missing, a label is neither 0, 1 nor a skip marker, or an audio file is missing
        (naming the file and the row), or if no labeled item is left.
    """
    path = Path(path)
    base = Path(base_dir) if base_dir is not None else path.parent
    rows, places = _read_feedback_rows(path)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    missing = [column for column in (audio_column, text_column, label_column) if column not in columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; it has {columns}.")

    kept: dict[str, list] = {column: [] for column in columns}
    skipped, empty = 0, []
    for row, place in zip(rows, places):
        label = _parse_label(row.get(label_column), f"{path}: {place}")
        if label is None:
            skipped += 1
            continue
        text = row.get(text_column)
        if not isinstance(text, str) or not text.strip():
            if strict:
                raise ValueError(f"{path}: {place} has an empty {text_column!r} ({text!r}); fix or remove it.")
            empty.append(place)
            continue
        audio = row.get(audio_column)
        if not isinstance(audio, str) or not audio.strip():
            raise ValueError(f"{path}: {place} has no audio path in column {audio_column!r} (got {audio!r}).")
        audio_path = Path(audio.strip())
        if not audio_path.is_absolute():
            audio_path = base / audio_path
        if not audio_path.is_file():
            raise ValueError(f"{path}: {place} refers to a missing audio file {str(audio_path)!r}.")
        for column in columns:
            kept[column].append(row.get(column))
        kept[audio_column][-1] = os.path.abspath(audio_path)
        kept[label_column][-1] = label

    if skipped:
        logger.warning("%s: dropped %d skipped item(s) (label empty, 'skip' or -1).", path, skipped)
    if empty:
        logger.warning(
            "%s: dropped %d item(s) with an empty %r: %s%s.",
            path,
            len(empty),
            text_column,
            ", ".join(empty[:_MAX_NAMED_ROWS]),
            ", ..." if len(empty) > _MAX_NAMED_ROWS else "",
        )
    n_kept = len(kept[label_column])
    if n_kept == 0:
        raise ValueError(
            f"{path}: no labeled item left after dropping {skipped} skipped item(s) and {len(empty)} with an empty "
            f"{text_column!r}."
        )
    logger.info("%s: loaded %d labeled item(s).", path, n_kept)
    description = (
        f"Binary feedback loaded from {path.name}: {n_kept} labeled items kept, {skipped} skipped items dropped "
        f"(label empty, 'skip' or -1), {len(empty)} items with an empty {text_column!r} dropped."
    )
    ds = Dataset.from_dict(kept, info=DatasetInfo(description=description))
    return ensure_audio_column(ds.cast_column(label_column, Value("int64")), audio_column)


def load_preference_dataset(
    name_or_path: str | Path,
    *,
    kind: str,
    split: str | None = None,
    require_audio: bool = True,
) -> Dataset | DatasetDict:
    r"""
    Load a preference dataset from the Hub, a `save_to_disk` folder, or a `.json`/`.jsonl`/`.csv`/`.parquet` file,
    and validate it as `kind`.

    Audio columns are cast to `datasets.Audio(decode=False)`, so loading never decodes audio (decoding needs
    torchcodec and FFmpeg); decode the bytes or paths yourself, e.g. with `soundfile`.

    Args:
        name_or_path (`str` or `Path`):
            A Hub dataset id (`"user/name"`), a folder written by `save_to_disk`, another local folder of data files,
            or a data file.
        kind (`str`):
            The preference kind to validate against (see [`~data.schemas.validate_dataset`]).
        split (`str`, *optional*):
            Split to return. Without it a `DatasetDict` is returned, except for a `save_to_disk` folder holding a
            single `Dataset`. A single data file is loaded as split `"train"`.
        require_audio (`bool`, *optional*, defaults to `True`):
            Passed to [`~data.schemas.validate_dataset`]; `False` accepts text-only pairs such as FENSE.

    Returns:
        `datasets.Dataset` or `datasets.DatasetDict`.
    """
    ds = load_any_dataset(name_or_path, split=split)
    validate_dataset(ds, kind, require_audio=require_audio)
    return ds
