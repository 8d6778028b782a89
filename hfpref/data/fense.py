"""Loader for the FENSE human judgments of audio captions (AudioCaps-Eval and Clotho-Eval).

Zhou et al., "Can Audio Captions Be Evaluated with Image Caption Metrics?" (https://huggingface.co/papers/2110.04684).
Each clip of the upstream JSON holds up to 8 comparison slots (`HC`, `HI`, `HM`, `MM_1` ... `MM_5`); each slot is two
candidate captions judged by 4 annotators. [`load_fense`] turns them into one pairwise-preference row per slot.
"""

from __future__ import annotations

import json
from pathlib import Path

from datasets import Dataset, Features, List, Value


FENSE_SLOTS = ("HC", "HI", "HM", "MM_1", "MM_2", "MM_3", "MM_4", "MM_5")
FENSE_CATEGORIES = ("HC", "HI", "HM", "MM")

FENSE_FEATURES = Features(
    {
        "pair_id": Value("string"),
        "clip_id": Value("string"),
        "entry_index": Value("int32"),
        "audio_id": Value("string"),
        "raw_name": Value("string"),
        "category": Value("string"),
        "slot": Value("string"),
        "chosen": Value("string"),
        "rejected": Value("string"),
        "chosen_source": Value("string"),
        "rejected_source": Value("string"),
        "chosen_references": List(Value("string")),
        "rejected_references": List(Value("string")),
        "references": List(Value("string")),
        "caption_1": Value("string"),
        "caption_2": Value("string"),
        "source_1": Value("string"),
        "source_2": Value("string"),
        "votes": List(Value("int8")),
        "vote_sum": Value("int8"),
        "margin": Value("float32"),
        "preferred": Value("int8"),
    }
)


def _fense_references(category: str, caption_1: str, caption_2: str, references: list[str]) -> tuple[list, list]:
    # FENSE protocol: a judged human caption is never scored against itself. Every copy is removed, as in the FENSE
    # experiment code (`[x for x in refs if x != caption]`), so a duplicated reference can leave 3 references.
    if category == "HC":
        return [r for r in references if r != caption_1], [r for r in references if r != caption_2]
    if category in ("HI", "HM"):
        kept = [r for r in references if r != caption_1]
        return kept, list(kept)
    return list(references), list(references)


def _check_slot(slot, path: Path, index: int, name: str) -> None:
    where = f"{path}: entry {index}, slot {name!r}"
    # Upstream slots are [caption_1, caption_2, source_1, source_2, votes]; 208 AudioCaps MM_1 slots carry an extra
    # constant before the votes, which is why the votes are read as slot[-1].
    if not isinstance(slot, list) or len(slot) < 5:
        raise ValueError(
            f"{where}: expected null or a list [caption_1, caption_2, source_1, source_2, ..., votes], got {slot!r}"
        )
    if not all(isinstance(value, str) for value in slot[:4]):
        raise ValueError(f"{where}: the first 4 elements (2 captions, 2 sources) must be strings, got {slot[:4]!r}")
    votes = slot[-1]
    if (
        not isinstance(votes, list)
        or len(votes) != 4
        or not all(isinstance(v, int) and not isinstance(v, bool) and v in (-1, 0, 1) for v in votes)
    ):
        raise ValueError(f"{where}: votes (the last element) must be 4 integers in {{-1, 0, 1}}, got {votes!r}")


def load_fense(path: str | Path, drop_ties: bool = True, *, name: str | None = None) -> Dataset:
    r"""
    Load a FENSE human-judgment file (`audiocaps_eval.json` or `clotho_eval.json`) as one row per judged pair.

    Each pair has 4 votes in {+1, -1, 0} (+1 prefers `caption_1`); the preferred caption is given by the sign of the
    vote sum and becomes `chosen`. With the default `drop_ties=True` this gives 1,483 AudioCaps-Eval pairs (HC 203,
    HI 247, HM 239, MM 794) and 1,555 Clotho-Eval pairs (HC 210, HI 244, HM 232, MM 869).

    Args:
        path (`str` or `Path`):
            The upstream JSON: a list of clips with `references`, `audio_id` and/or `raw_name`, and slots `HC`, `HI`,
            `HM`, `MM_1` ... `MM_5`, each `null` or `[caption_1, caption_2, source_1, source_2, ..., votes]`.
        drop_ties (`bool`, *optional*, defaults to `True`):
            Drop pairs whose vote sum is 0. When kept, a tie has `chosen = caption_1`, `preferred = 0` and `margin = 0`.
        name (`str`, *optional*):
            Prefix of the clip ids. Defaults to the file name without `_eval` (`"audiocaps"`, `"clotho"`).

    Returns:
        `datasets.Dataset` with the columns below (no `audio`: FENSE ships no audio; join it by `audio_id` or
        `raw_name`, and validate with `validate_dataset(ds, "pairwise", require_audio=False)`).

        - `pair_id` (`str`): `"<clip_id>-<slot>"`, e.g. `"audiocaps-0042-MM_1"` (matches the flattened CSVs).
        - `clip_id` (`str`): `"<name>-<entry index, 4 digits>"`; `entry_index` (`int`): the clip's list position.
        - `audio_id`, `raw_name` (`str` or `None`): upstream clip ids, `None` when absent.
        - `category` (`str`): `HC`, `HI`, `HM` or `MM`; `slot` (`str`): `HC`, `HI`, `HM`, `MM_1` ... `MM_5`.
        - `chosen`, `rejected` (`str`) and `chosen_source`, `rejected_source` (`str`).
        - `chosen_references`, `rejected_references` (`list[str]`): what each candidate is scored against under the
          FENSE protocol: HC, the references minus that caption itself; HI and HM, the references minus `caption_1`
          for both; MM, all references. Every copy of the removed caption is removed.
        - `references` (`list[str]`): the clip's full reference list (5 captions, as upstream, duplicates included).
        - `caption_1`, `caption_2`, `source_1`, `source_2` (`str`): the pair in its original orientation.
        - `votes` (`list[int]`): the 4 votes in the **original** orientation (+1 = `caption_1` better).
        - `vote_sum` (`int`): sum of `votes`, signed, original orientation.
        - `margin` (`float`): `abs(vote_sum)`, from 1 to 4 (0 for kept ties).
        - `preferred` (`int`): 1 if `caption_1` won, 2 if `caption_2` won, 0 for a tie.

    Raises:
        `ValueError`: if the file is not a list of clip objects, a slot has the wrong shape, or its votes are not 4
        integers in {-1, 0, 1}; the message names the file, the entry index and the slot.
    """
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        entries = json.load(handle)
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of clips, got {type(entries).__name__}.")
    if name is None:
        name = path.stem.removesuffix("_eval")

    rows: dict[str, list] = {column: [] for column in FENSE_FEATURES}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: entry {index} should be an object, got {type(entry).__name__}.")
        references = entry.get("references")
        if not isinstance(references, list) or not all(isinstance(r, str) for r in references):
            raise ValueError(f"{path}: entry {index} needs 'references', a list of strings; got {references!r}.")
        clip_id = f"{name}-{index:04d}"
        for slot_name in FENSE_SLOTS:
            slot = entry.get(slot_name)
            if slot is None:
                continue
            _check_slot(slot, path, index, slot_name)
            caption_1, caption_2, source_1, source_2 = slot[:4]
            votes = list(slot[-1])
            vote_sum = sum(votes)
            if vote_sum == 0 and drop_ties:
                continue
            category = slot_name[:2]
            references_1, references_2 = _fense_references(category, caption_1, caption_2, references)
            first_wins = vote_sum >= 0
            row = {
                "pair_id": f"{clip_id}-{slot_name}",
                "clip_id": clip_id,
                "entry_index": index,
                "audio_id": entry.get("audio_id"),
                "raw_name": entry.get("raw_name"),
                "category": category,
                "slot": slot_name,
                "chosen": caption_1 if first_wins else caption_2,
                "rejected": caption_2 if first_wins else caption_1,
                "chosen_source": source_1 if first_wins else source_2,
                "rejected_source": source_2 if first_wins else source_1,
                "chosen_references": references_1 if first_wins else references_2,
                "rejected_references": references_2 if first_wins else references_1,
                "references": list(references),
                "caption_1": caption_1,
                "caption_2": caption_2,
                "source_1": source_1,
                "source_2": source_2,
                "votes": votes,
                "vote_sum": vote_sum,
                "margin": float(abs(vote_sum)),
                "preferred": 0 if vote_sum == 0 else (1 if vote_sum > 0 else 2),
            }
            for column, value in row.items():
                rows[column].append(value)
    return Dataset.from_dict(rows, features=FENSE_FEATURES)


AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


def attach_audio(ds: Dataset, audio_dir: str | Path, *, skip_missing: bool = False) -> Dataset:
    """
    Add an `audio` column (`datasets.Audio(decode=False)` file paths) to FENSE pairs from a folder of clips.

    FENSE ships judgments, not audio: point this at your copy of the AudioCaps test clips or the Clotho
    evaluation split. A clip is found by its `raw_name` (e.g. `6BJ455B1aAs_0.000_8.000.wav`, Clotho file
    names), else by its YouTube `audio_id` as a file name prefix (`<id>*.wav`, or `Y<id>*.wav` as in
    AudioSet dumps). Files are searched recursively.

    Args:
        ds (`datasets.Dataset`): output of [`load_fense`].
        audio_dir (`str` or `Path`): folder holding the clips.
        skip_missing (`bool`, *optional*, defaults to `False`):
            Drop pairs whose clip is not found (logged with a count) instead of raising.

    Returns:
        `datasets.Dataset` with an `audio` column.
    """
    import logging

    from .audio import ensure_audio_column

    audio_dir = Path(audio_dir).expanduser()
    if not audio_dir.is_dir():
        raise ValueError(f"attach_audio: audio_dir {audio_dir} is not a folder.")
    by_name: dict[str, str] = {}
    by_stem: dict[str, str] = {}
    for path in sorted(audio_dir.rglob("*")):
        if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file():
            by_name.setdefault(path.name, str(path))
            by_stem.setdefault(path.stem, str(path))
    stems = sorted(by_stem)

    def find(raw_name: str | None, audio_id: str | None) -> str | None:
        if raw_name and raw_name in by_name:
            return by_name[raw_name]
        for prefix in [audio_id, f"Y{audio_id}"] if audio_id else []:
            if prefix in by_stem:
                return by_stem[prefix]
            matches = [s for s in stems if s.startswith(prefix + "_")]
            if matches:
                return by_stem[matches[0]]
        return None

    paths = [find(r, a) for r, a in zip(ds["raw_name"], ds["audio_id"])]
    missing = sorted({c for c, p in zip(ds["clip_id"], paths) if p is None})
    if missing:
        message = (
            f"attach_audio: {len(missing)} clips have no audio file in {audio_dir} (first: {missing[:5]}); "
            f"{len(by_name)} audio files were found there."
        )
        if not skip_missing:
            raise ValueError(message + " Pass skip_missing=True to drop their pairs.")
        keep = [i for i, p in enumerate(paths) if p is not None]
        logging.getLogger(__name__).warning("%s Dropping %d of %d pairs.", message, len(ds) - len(keep), len(ds))
        ds, paths = ds.select(keep), [paths[i] for i in keep]
    return ensure_audio_column(ds.add_column("audio", paths), "audio")
