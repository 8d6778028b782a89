"""Durable storage of a listening test: the item table, the session settings and every annotator's answers.

Answers are appended, one JSON line each, to `answers/<annotator>.jsonl` under an exclusive `flock` and `fsync`ed
before the app acknowledges them, so a crash or a killed server loses nothing that was acknowledged and two servers
or threads writing for the same annotator never interleave lines. A line torn by a crash mid-write (never
acknowledged, so the browser still holds and resends it) is cut off before the next append and skipped, with a
warning, when read. Each answer carries an `answer_id` chosen by the browser, so an answer resent after a lost
acknowledgement is counted once; an annotator's latest answer to an item replaces the earlier ones.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset, load_from_disk


logger = logging.getLogger(__name__)

ANSWERS = {
    "pairwise": ("caption_1", "caption_2", "tie", "both_wrong"),
    "binary": ("match", "mismatch", "skip"),
}
# Answers that come with a correction: required for both_wrong (RLHF captioning paper: "annotators select the
# preferred caption or provide a correction"), optional for a mismatching binary item.
CORRECTION_REQUIRED = {"both_wrong"}
CORRECTION_ALLOWED = {"both_wrong", "mismatch"}
MAX_CORRECTION_CHARS = 2000
ANNOTATOR_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SESSION_FILE = "session.json"
ITEMS_DIR = "items"
ANSWERS_DIR = "answers"


def check_annotator(name: str) -> str:
    """
    The annotator name, or a `ValueError` saying what a valid one looks like (it names a file).

    Example:
    ```python
    >>> check_annotator("alice")
    'alice'

    ```
    """
    if not isinstance(name, str) or not ANNOTATOR_PATTERN.match(name):
        raise ValueError(
            f"annotator name {name!r} is not valid: use 1-64 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit."
        )
    return name


def check_answer(task: str, answer: str, correction: str | None) -> str | None:
    """
    Validate one answer of `task`; returns the stripped correction (`None` when there is none).

    Example:
    ```python
    >>> check_answer("pairwise", "both_wrong", "  a bell rings twice ")
    'a bell rings twice'
    >>> check_answer("binary", "maybe", None)
    Traceback (most recent call last):
    ...
    ValueError: answer 'maybe' is not one of ['match', 'mismatch', 'skip'] for a binary test.

    ```
    """
    if answer not in ANSWERS[task]:
        raise ValueError(f"answer {answer!r} is not one of {list(ANSWERS[task])} for a {task} test.")
    correction = (correction or "").strip() or None
    if correction is not None and answer not in CORRECTION_ALLOWED:
        raise ValueError(f"a correction goes with {sorted(CORRECTION_ALLOWED)}, not with answer {answer!r}.")
    if correction is None and answer in CORRECTION_REQUIRED:
        raise ValueError(f"answer {answer!r} needs a correction: the caption the clip should have.")
    if correction is not None and len(correction) > MAX_CORRECTION_CHARS:
        raise ValueError(f"the correction has {len(correction)} characters; at most {MAX_CORRECTION_CHARS}.")
    return correction


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cut_torn_tail(fd: int, path: Path) -> None:
    """Truncate a last line that a crash left without its newline (it was never acknowledged)."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    start = max(0, size - 65536)
    while True:
        chunk = os.pread(fd, size - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0 or start == 0:
            keep = start + cut + 1 if cut >= 0 else 0
            break
        start = max(0, start - 65536)
    logger.warning("%s: cut a torn last line of %d bytes left by an interrupted write.", path, size - keep)
    os.ftruncate(fd, keep)


def append_answer(output_dir: str | Path, record: dict) -> None:
    """
    Append one answer to `answers/<annotator>.jsonl` durably: under an exclusive lock, `fsync`ed (and the folder too
    when the file is new) before returning.

    Args:
        output_dir (`str` or `Path`): the session folder.
        record (`dict`): the answer, with at least `annotator`, `item_id`, `answer` and `answer_id`.
    """
    folder = Path(output_dir) / ANSWERS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{check_annotator(record['annotator'])}.jsonl"
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            _cut_torn_tail(fd, path)
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"{path}: wrote {written} of {len(line)} bytes")
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(folder)


def check_record(record, task: str | None = None, item_ids: set[str] | frozenset[str] | None = None) -> None:
    """
    Check one stored answer: a JSON object with a text `answer_id`, a valid `annotator`, a text `item_id` (one of
    `item_ids` when given), an `answer` (one of `task`'s, with a valid correction, when `task` is given) and a
    `correction` that is a text or null.

    Raises:
        `ValueError`: saying what is wrong (the caller adds the file and line).
    """
    if not isinstance(record, dict):
        raise ValueError(f"is a JSON {type(record).__name__}, not an object")
    missing = [k for k in ("answer_id", "annotator", "item_id", "answer") if k not in record]
    if missing:
        raise ValueError(f"lacks {missing}")
    for key in ("answer_id", "item_id", "answer"):
        if not isinstance(record[key], str):
            raise ValueError(f"has {key} {record[key]!r}, not a text")
    check_annotator(record["annotator"])
    correction = record.get("correction")
    if correction is not None and not isinstance(correction, str):
        raise ValueError(f"has correction {correction!r}, not a text or null")
    if item_ids is not None and record["item_id"] not in item_ids:
        raise ValueError(f"names item {record['item_id']!r}, which is not in this session")
    if task is not None:
        check_answer(task, record["answer"], correction)


def read_answer_file(
    path: str | Path, task: str | None = None, item_ids: set[str] | frozenset[str] | None = None
) -> list[dict]:
    """
    The answers of one file in the order written, each `answer_id` once (a resent answer is dropped).

    Args:
        path (`str` or `Path`): an `answers/<annotator>.jsonl` file.
        task (`str`, *optional*): the session's task; when given, each answer must be one of its answers.
        item_ids (`set[str]`, *optional*): the session's items; when given, each answer must name one.

    Raises:
        `ValueError`: naming the file and line of a malformed line other than a torn last one (not JSON, not UTF-8,
            not an answer record: see [`check_record`]).
    """
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline
    if torn:
        logger.warning("%s: skipped a torn last line of %d bytes (an interrupted write).", path, len(torn))
    records, seen = [], set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as error:  # not JSON, not UTF-8, or nested too deeply
            raise ValueError(f"{path}: line {number} is not valid JSON ({error}).") from error
        try:
            check_record(record, task, item_ids)
        except ValueError as error:
            raise ValueError(f"{path}: line {number} {error}.") from error
        if record["answer_id"] in seen:
            continue
        seen.add(record["answer_id"])
        records.append(record)
    return records


def read_answers(
    output_dir: str | Path,
    annotator: str | None = None,
    *,
    task: str | None = None,
    item_ids: set[str] | frozenset[str] | None = None,
) -> list[dict]:
    """
    Every annotator's latest answer to each item (or one annotator's), in file order, annotators sorted by name.
    `task` and `item_ids`, when given, check every answer (see [`read_answer_file`]).
    """
    folder = Path(output_dir) / ANSWERS_DIR
    if annotator is not None:
        paths = [folder / f"{check_annotator(annotator)}.jsonl"]
    else:
        paths = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    latest: dict[tuple[str, str], dict] = {}
    for path in paths:
        if not path.is_file():
            continue
        for record in read_answer_file(path, task, item_ids):
            key = (record["annotator"], record["item_id"])
            latest.pop(key, None)  # keep file order of the latest answers
            latest[key] = record
    return list(latest.values())


@dataclass
class Session:
    r"""
    A listening-test session folder: its settings (`session.json`), its items (`items/`, a `save_to_disk` dataset)
    and its answers (`answers/`).

    Args:
        output_dir (`Path`): the folder.
        settings (`dict`): `task`, `items` (the source), `seed`, the item counts and columns of
            [`~annotate.items.load_items`].
        items (`datasets.Dataset`): the item table.
    """

    output_dir: Path
    settings: dict
    items: Dataset

    @property
    def task(self) -> str:
        return self.settings["task"]

    @classmethod
    def create(cls, output_dir: str | Path, settings: dict, items: Dataset) -> Session:
        """Write a new session, or check that `items` are those of the session already in `output_dir`."""
        output_dir = Path(output_dir)
        if (output_dir / SESSION_FILE).is_file():
            session = cls.open(output_dir)
            if session.task != settings["task"]:
                raise ValueError(
                    f"{output_dir} holds a {session.task} session; it cannot take a {settings['task']} test."
                )
            if list(session.items["item_id"]) != list(items["item_id"]):
                raise ValueError(
                    f"{output_dir} holds a session on other items ({session.settings['items']}, "
                    f"{len(session.items)} items); use another --output-dir, or leave out --items to resume it."
                )
            return session
        output_dir.mkdir(parents=True, exist_ok=True)
        items.save_to_disk(str(output_dir / ITEMS_DIR))
        temporary = output_dir / (SESSION_FILE + ".tmp")
        temporary.write_text(json.dumps(settings, indent=2))
        os.replace(temporary, output_dir / SESSION_FILE)  # the session exists once its items are on disk
        _fsync_dir(output_dir)
        return cls.open(output_dir)

    @classmethod
    def open(cls, output_dir: str | Path) -> Session:
        output_dir = Path(output_dir)
        path = output_dir / SESSION_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{output_dir} holds no annotation session ({SESSION_FILE} is missing); start one with "
                "`hfpref annotate --task ... --items ... --output-dir ...`."
            )
        return cls(output_dir, json.loads(path.read_text()), load_from_disk(str(output_dir / ITEMS_DIR)))

    def answers(self, annotator: str | None = None) -> list[dict]:
        """
        The latest answer of each annotator (or of `annotator`) to each item. An answer that names an unknown item or
        is not one of the task's answers is an error naming its file and line.
        """
        return read_answers(self.output_dir, annotator, task=self.task, item_ids=frozenset(self.items["item_id"]))
