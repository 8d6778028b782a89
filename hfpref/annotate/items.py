"""The items a listening test asks about, built from any captioner or text-to-audio output.

An item is one clip and the text(s) to judge:

- `"pairwise"`: two captions of a clip (`caption_1`, `caption_2`, in the source's order; the app shows them in an
  order randomized per annotator), e.g. `hfpref pairs` output (`chosen`, `rejected`), the quickstart's
  `preference-judgments` (`greedy`, `top_k`) or `evaluation.jsonl` (`baseline`, `rl`), FENSE-style `caption_1` /
  `caption_2` pairs.
- `"binary"`: one clip and one text, e.g. the `feedback.csv` that `hfpref tta-generate` writes (BATON: does the audio
  match its prompt?), or every caption column of a captioner's output.

Outputs that carry no audio (`hfpref pairs`, the quickstart's judgments) are joined by `clip_id` (or by `row`, the
source row `hfpref pairs` records) with the dataset holding the clips.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset, DatasetDict, concatenate_datasets

from ..data.audio import AudioDecodeError, decode_audio, ensure_audio_column
from ..data.loading import load_any_dataset


logger = logging.getLogger(__name__)

TASKS = ("pairwise", "binary")
# Caption-column pairs that the outputs of hfpref's generators hold, in the order they are tried.
KNOWN_PAIRS = (("chosen", "rejected"), ("greedy", "top_k"), ("baseline", "rl"), ("caption_1", "caption_2"))
KNOWN_TEXTS = ("prompt", "caption")
# Columns whose values group the items into the splits the report gives kappa for (BATON's tasks, FENSE's
# categories, the quickstart's challenging flag).
KNOWN_SPLIT_COLUMNS = ("task", "category", "challenging")
FEEDBACK_SUFFIXES = (".csv", ".json", ".jsonl")
# Rate the audio check decodes at (any rate proves that a file decodes).
CHECK_SAMPLING_RATE = 16000


def item_id(clip_id: str, *texts: str) -> str:
    """
    A stable identifier of an item: the same clip and texts give the same id, whatever their row.

    Example:
    ```python
    >>> item_id("synth-000001", "a dog barks", "a siren wails")
    '3b9463b4f904'

    ```
    """
    return hashlib.sha1(json.dumps([clip_id, *texts]).encode()).hexdigest()[:12]


def _is_feedback_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in FEEDBACK_SUFFIXES and path.name.startswith("feedback")


def _load_source(items: str | Path, split: str | None) -> tuple[Dataset, str | None, Path | None]:
    """
    The items' rows (all splits concatenated, with a `split` column, when `split` is None), their split column, and
    the feedback file they come from (`None` for a dataset).
    """
    path = Path(items)
    if path.is_dir() and (path / "feedback.csv").is_file():
        path = path / "feedback.csv"
    if _is_feedback_file(path):
        return _load_feedback(path), "task", path
    data = load_any_dataset(items, split=split)
    if isinstance(data, DatasetDict):
        parts = [part.add_column("split", [name] * len(part)) for name, part in data.items() if len(part)]
        if not parts:
            raise ValueError(f"{items}: every split is empty.")
        return concatenate_datasets(parts), "split", None
    return data, None, None


def _load_feedback(path: Path) -> Dataset:
    """
    The unlabelled rows of a BATON feedback file, with its `task` column when it has one. A row's `clip_id` is its
    audio path as the file writes it (`audio/0000_<prompt>_0.wav`), which names the row when labels are written back.
    """
    import csv

    from ..data.tta_feedback import load_unlabelled_feedback

    rows = load_unlabelled_feedback(path)
    if len(rows) == 0:
        raise ValueError(f"{path}: every row is already labelled; there is nothing to annotate.")
    written: dict[str, tuple[str, str]] = {}
    if path.suffix.lower() == ".csv":  # tta-generate's format; the loader keeps only audio and prompt
        with path.open(newline="", encoding="utf-8-sig") as handle:
            for row in csv.DictReader(handle):
                audio = Path(row.get("audio") or "")
                resolved = str((audio if audio.is_absolute() else path.parent / audio).resolve())
                written[resolved] = (row.get("audio") or "", row.get("task") or "")
    files = [value["path"] for value in rows.with_format(None)["audio"]]
    rows = rows.add_column("clip_id", [written[file][0] if file in written else Path(file).stem for file in files])
    return rows.add_column("task", [written[file][1] if file in written else "" for file in files])


def _join_audio(
    rows: Dataset, audio_dataset: str | Path, where: str, audio_column: str, audio_split: str | None
) -> Dataset:
    """
    Attach the audio of `audio_dataset` to `rows` by `clip_id` (searching all its splits unless `audio_split` is
    given), or by `row`, the source row `hfpref pairs` records, in `audio_split` (default `train`, the split
    `hfpref pairs` reads).
    """
    by_clip = "clip_id" in rows.column_names
    if not by_clip and "row" not in rows.column_names:
        raise ValueError(f"{where} has neither 'clip_id' nor 'row' to join --audio-dataset {audio_dataset} on.")
    clips = load_any_dataset(audio_dataset, split=audio_split)
    if isinstance(clips, DatasetDict):
        if not by_clip:
            if "train" not in clips:
                raise ValueError(
                    f"{where} names clips by source row: give the split of --audio-dataset {audio_dataset} they "
                    f"index with --audio-split (it has {list(clips)})."
                )
            clips = clips["train"]
        else:
            keep = ["clip_id", audio_column]
            clips = concatenate_datasets(
                [part.select_columns([c for c in keep if c in part.column_names]) for part in clips.values()]
            )
    if audio_column not in clips.column_names:
        raise ValueError(
            f"--audio-dataset {audio_dataset} has no {audio_column!r} column; it has {clips.column_names}."
        )
    clips = ensure_audio_column(clips, audio_column)
    if by_clip:
        if "clip_id" not in clips.column_names:
            raise ValueError(f"--audio-dataset {audio_dataset} has no 'clip_id' column to join {where} on.")
        index = {clip: i for i, clip in enumerate(clips["clip_id"])}
        missing = sorted({c for c in rows["clip_id"] if c not in index})
        if missing:
            raise ValueError(
                f"{len(missing)} clip(s) of {where} are not in --audio-dataset {audio_dataset}, e.g. {missing[:5]}."
            )
        positions = [index[c] for c in rows["clip_id"]]
    else:
        positions = list(rows["row"])
        bad = [p for p in positions if not 0 <= p < len(clips)]
        if bad:
            raise ValueError(f"{where} refers to row {bad[0]} but --audio-dataset has {len(clips)} rows.")
        ids = clips["clip_id"] if "clip_id" in clips.column_names else [f"row-{p}" for p in range(len(clips))]
        rows = rows.add_column("clip_id", [ids[p] for p in positions])
    audio = clips.select(positions).select_columns([audio_column])
    if audio_column != "audio":
        audio = audio.rename_column(audio_column, "audio")
    rows = rows.remove_columns([c for c in ("audio",) if c in rows.column_names])
    return concatenate_datasets([rows, audio], axis=1)


def _source_folder(source: str | Path) -> Path | None:
    """The folder of a local dataset, data file or feedback file (`None` for a Hub id)."""
    path = Path(source)
    if path.is_dir():
        return path.resolve()
    if path.is_file():
        return path.resolve().parent
    return None


def _outside(path: str, root: Path | None) -> bool:
    """Whether the file `path` names (relative paths from the working directory, as it is read) is not under `root`."""
    if "://" in path or root is None:
        return True
    return not Path(path).resolve().is_relative_to(root)


def check_item_audio(
    audio: Dataset, rows: Sequence[int], clip_ids: Sequence[str], where: str, root: Path | None, allow_outside: bool
) -> None:
    """
    Refuse items whose audio is not a decodable clip from under `root`: the session copies each file and the export
    publishes it, so an items file naming `/etc/passwd` (or a file that is not audio) must not get that far.

    Args:
        audio (`datasets.Dataset`): the items' `audio` column (`Audio(decode=False)`), one row per source row.
        rows (`Sequence[int]`): the source row of each, named in errors.
        clip_ids (`Sequence[str]`): the clip of each, named in errors.
        where (`str`): the items file, named in errors.
        root (`Path`, *optional*): the folder files must be under (`None`: a Hub dataset, whose cached files are
            outside any folder the user named).
        allow_outside (`bool`): take files from anywhere (`--allow-audio-outside`); they must still decode.

    Raises:
        `ValueError`: naming the items file, row, clip and file.
    """
    values = (value for batch in audio.with_format(None).iter(batch_size=64) for value in batch["audio"])
    for value, row, clip_id in zip(values, rows, clip_ids):  # a batch at a time: the clips may not fit in memory
        path = value.get("path") if isinstance(value, dict) else None
        reads_file = isinstance(value, dict) and value.get("bytes") is None and path
        if reads_file and not allow_outside and _outside(path, root):
            under = f"under {root}" if root else "under a local folder (the items are a Hub dataset)"
            raise ValueError(
                f"{where}: row {row} (clip {clip_id!r}) names audio file {path!r}, which is not {under}. Give the "
                "folder that holds the clips with --audio-root, or --allow-audio-outside to take files from anywhere."
            )
        try:
            decode_audio(value, CHECK_SAMPLING_RATE)
        except AudioDecodeError as error:
            raise ValueError(f"{where}: row {row} (clip {clip_id!r}) has no usable audio: {error}") from error


def _pick_pair(columns: Sequence[str], given: Sequence[str] | None, where: str) -> tuple[str, str]:
    if given:
        if len(given) != 2:
            raise ValueError(f"--caption-columns takes two columns for a pairwise test, got {list(given)}.")
        missing = [c for c in given if c not in columns]
        if missing:
            raise ValueError(f"{where} has no column(s) {missing}; it has {list(columns)}.")
        return given[0], given[1]
    for pair in KNOWN_PAIRS:
        if all(c in columns for c in pair):
            return pair
    raise ValueError(
        f"{where} has none of the caption-column pairs {[list(p) for p in KNOWN_PAIRS]}; it has {list(columns)}. "
        "Name the two captions to compare with --caption-columns."
    )


def _pick_texts(columns: Sequence[str], given: Sequence[str] | None, where: str) -> list[str]:
    if given:
        missing = [c for c in given if c not in columns]
        if missing:
            raise ValueError(f"{where} has no column(s) {missing}; it has {list(columns)}.")
        return list(given)
    # A captioner's output with two caption columns: judge each caption on its own (before `prompt`, which in
    # `hfpref pairs` output is the model's speech-token input).
    for pair in KNOWN_PAIRS:
        if all(c in columns for c in pair):
            return list(pair)
    for name in KNOWN_TEXTS:
        if name in columns:
            return [name]
    raise ValueError(
        f"{where} has no text column ({list(KNOWN_TEXTS)} or a caption pair {[list(p) for p in KNOWN_PAIRS]}); it "
        f"has {list(columns)}. Name the text(s) to judge with --caption-columns."
    )


def _split_values(rows: Dataset, split_column: str | None) -> list[str]:
    if split_column is None:
        return [""] * len(rows)
    if split_column not in rows.column_names:
        raise ValueError(f"split column {split_column!r} is not a column of the items; they have {rows.column_names}.")
    values = rows[split_column]
    if split_column == "challenging":
        return ["challenging" if v else "non_challenging" for v in values]
    return ["" if v is None else str(v) for v in values]


def load_items(
    items: str | Path,
    task: str,
    *,
    audio_dataset: str | Path | None = None,
    audio_column: str = "audio",
    audio_split: str | None = None,
    caption_columns: Sequence[str] | None = None,
    split: str | None = None,
    split_column: str | None = None,
    audio_root: str | Path | None = None,
    allow_audio_outside: bool = False,
) -> tuple[Dataset, dict]:
    r"""
    Build the items of a listening test from a captioner's or a text-to-audio model's output.

    Args:
        items (`str` or `Path`):
            A `save_to_disk` folder, a data file or a Hub id (`hfpref pairs` output, the quickstart's
            `preference-judgments` or `evaluation.jsonl`, any dataset with the texts to judge), or a BATON
            `feedback.csv` written by `hfpref tta-generate` (or its folder): its unlabelled rows become the items.
        task (`str`):
            `"pairwise"` (two captions per clip) or `"binary"` (one text per clip).
        audio_dataset (`str` or `Path`, *optional*):
            The clips, when `items` has no `audio` column: a dataset with `clip_id` and `audio` (all its splits are
            searched), joined by `clip_id`, or by `row` when the items have only the source row.
        audio_column (`str`, *optional*, defaults to `"audio"`):
            The audio column of `items`, or of `audio_dataset` (e.g. `speech`).
        audio_split (`str`, *optional*):
            The split of `audio_dataset` to take the clips from; by default all its splits are searched by `clip_id`,
            and `train` (the split `hfpref pairs` reads) is indexed by `row`.
        caption_columns (`Sequence[str]`, *optional*):
            Pairwise: the two caption columns to compare. Binary: the text column(s); each becomes its own item.
            Defaults: the first known pair (`chosen`/`rejected`, `greedy`/`top_k`, `baseline`/`rl`,
            `caption_1`/`caption_2`); binary: both columns of a known pair, else `prompt`, else `caption`.
        split (`str`, *optional*):
            Split of `items` to use; all splits by default.
        split_column (`str`, *optional*):
            Column grouping the items into the splits of the report; defaults to the first of `task`, `category`,
            `challenging` the items have, or the dataset's splits.
        audio_root (`str` or `Path`, *optional*):
            The folder audio files named by path must be under; defaults to the folder of `items` (or of
            `audio_dataset` when the clips come from it). Audio the dataset holds as bytes is taken from anywhere.
        allow_audio_outside (`bool`, *optional*, defaults to `False`):
            Take audio files from anywhere. Either way, every clip must decode.

    Returns:
        `tuple[datasets.Dataset, dict]`: the items (`item_id`, `clip_id`, `audio` as `Audio(decode=False)`, `split`,
        `row`, and `caption_1`, `caption_2`, `source_1`, `source_2` for pairwise, or `text`, `text_source` for binary)
        and counts: `rows`, `items`, `duplicates` and `identical_captions` dropped (each logged), `text_column` (the
        column name the export gives the binary text: `prompt` or `caption`), `feedback_file` (the feedback file the
        items come from, or `None`).

    Raises:
        `ValueError`: naming the file and the missing column or clip when the items cannot be built, and the file
            and row of audio that does not decode or is a file outside `audio_root`.
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not one of {list(TASKS)}")
    rows, source_split_column, feedback_file = _load_source(items, split)
    where = str(items)
    if audio_column not in rows.column_names:
        if audio_dataset is None:
            raise ValueError(
                f"{where} has no {audio_column!r} column; pass the clips with --audio-dataset (a dataset with "
                "'clip_id' and the audio, e.g. outputs/quickstart/world for the quickstart's preference-judgments, or "
                "the dataset `hfpref pairs` read)."
            )
        rows = _join_audio(rows, audio_dataset, where, audio_column, audio_split)
    elif audio_dataset is not None:
        raise ValueError(f"{where} has its own {audio_column!r} column; --audio-dataset does not apply.")
    elif audio_column != "audio":
        rows = rows.remove_columns([c for c in ("audio",) if c in rows.column_names])
        rows = rows.rename_column(audio_column, "audio")
    rows = ensure_audio_column(rows, "audio")
    if split_column is None:
        split_column = next((c for c in KNOWN_SPLIT_COLUMNS if c in rows.column_names), source_split_column)
    splits = _split_values(rows, split_column)
    clip_ids = (
        [str(c) for c in rows["clip_id"]] if "clip_id" in rows.column_names else [f"row-{i}" for i in range(len(rows))]
    )

    out: dict[str, list] = {"item_id": [], "clip_id": [], "split": [], "row": []}
    counts = {"rows": len(rows), "duplicates": 0, "identical_captions": 0}
    if task == "pairwise":
        first, second = _pick_pair(rows.column_names, caption_columns, where)
        out.update(caption_1=[], caption_2=[], source_1=[], source_2=[])
        texts = zip(rows[first], rows[second])
        columns = {"caption_columns": [first, second], "text_column": None}
    else:
        names = _pick_texts(rows.column_names, caption_columns, where)
        out.update(text=[], text_source=[])
        texts = zip(*(rows[name] for name in names))
        columns = {"caption_columns": names, "text_column": "prompt" if names == ["prompt"] else "caption"}
    seen: set[str] = set()
    keep: list[int] = []
    for i, values in enumerate(texts):
        for column, value in zip(columns["caption_columns"], values):
            if not isinstance(value, str):
                raise ValueError(f"{where}: row {i}, column {column!r} is {value!r}, not a text.")
        candidates = [values] if task == "pairwise" else [(v, c) for v, c in zip(values, columns["caption_columns"])]
        for candidate in candidates:
            if task == "pairwise" and candidate[0].strip() == candidate[1].strip():
                counts["identical_captions"] += 1
                continue
            texts_of_item = candidate if task == "pairwise" else candidate[:1]
            identifier = item_id(clip_ids[i], *texts_of_item)
            if identifier in seen:
                counts["duplicates"] += 1
                continue
            seen.add(identifier)
            keep.append(i)
            out["item_id"].append(identifier)
            out["clip_id"].append(clip_ids[i])
            out["split"].append(splits[i])
            out["row"].append(i)
            if task == "pairwise":
                out["caption_1"].append(candidate[0])
                out["caption_2"].append(candidate[1])
                out["source_1"].append(columns["caption_columns"][0])
                out["source_2"].append(columns["caption_columns"][1])
            else:
                out["text"].append(candidate[0])
                out["text_source"].append(candidate[1])
    if counts["identical_captions"]:
        logger.warning("%s: dropped %d pair(s) whose two captions are identical.", where, counts["identical_captions"])
    if counts["duplicates"]:
        logger.warning("%s: dropped %d duplicate item(s) (same clip and texts).", where, counts["duplicates"])
    if not keep:
        raise ValueError(f"{where}: no item to annotate ({counts}).")
    audio = rows.select(keep).select_columns(["audio"])
    if audio_root is not None:
        root = Path(audio_root).resolve()
        if not root.is_dir():
            raise ValueError(f"--audio-root {audio_root} is not a folder.")
    else:
        root = _source_folder(audio_dataset if audio_dataset is not None else items)
    # each source row once (a binary test asks one clip per text)
    sources = sorted(set(keep))
    check_item_audio(
        rows.select(sources).select_columns(["audio"]),
        sources,
        [clip_ids[i] for i in sources],
        where,
        root,
        allow_audio_outside,
    )
    table = concatenate_datasets([Dataset.from_dict(out), audio], axis=1)
    feedback = {"feedback_file": str(feedback_file.resolve()) if feedback_file else None}
    return table, {**counts, "items": len(table), "split_column": split_column, **columns, **feedback}
