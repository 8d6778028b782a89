"""Turn a listening test's answers into the project's preference datasets.

Pairwise (the FENSE protocol, https://huggingface.co/papers/2110.04684, that the RLHF audio-captioning paper
follows, https://huggingface.co/papers/2509.14659): each answer is a vote in the original orientation, +1 for
`caption_1`, -1 for `caption_2`, 0 for a tie or "both wrong"; the preferred caption is the sign of the vote sum, and
items whose votes sum to 0 give no pair (they are counted). An item is *challenging* when at least half of its
annotators marked both captions wrong; every correction then beats both captions (`source="correction"`).

Binary (BATON, https://huggingface.co/papers/2402.00744): the label is the majority of the annotators' 0/1 answers;
skips do not vote, and items with no majority or only skips are dropped and counted. A correction written for a
mismatching clip becomes a row of its own with label 1.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from pathlib import Path

from datasets import Dataset, concatenate_datasets

from ..data.schemas import validate_dataset
from .storage import Session


logger = logging.getLogger(__name__)

PAIRWISE_VOTE = {"caption_1": 1, "caption_2": -1, "tie": 0, "both_wrong": 0}
BINARY_LABEL = {"match": 1, "mismatch": 0, "skip": None}
# Share of an item's annotators that must mark both captions wrong for the item to count as challenging.
CHALLENGING_SHARE = 0.5
DATASET_DIR = "dataset"
EXPORT_FILE = "export.json"
FEEDBACK_FILE = "feedback.csv"
KINDS = {"pairwise": "pairwise", "binary": "pointwise"}
# Dataset-card descriptions of the columns the export adds (the others are described in `data.schemas`).
COLUMN_DESCRIPTIONS = {
    "source": "`human`: the annotators' vote; `correction`: an annotator's correction beats the caption",
    "challenging": "at least half the clip's annotators marked both captions wrong",
    "caption_1": "first candidate in the items' order (the app shows the two in an order randomized per annotator)",
    "caption_2": "second candidate in the items' order",
    "votes": "the annotators' votes: pairwise +1 = caption_1 better, -1 = caption_2, 0 = tie or both wrong; binary 0/1",
    "vote_sum": "sum of `votes` (its sign gives the preferred caption)",
    "skips": "annotators who skipped the item (they do not vote)",
    "text_source": "the column the text came from",
    "item_id": "identifier of the listening-test item (a hash of clip and texts)",
    "annotators": "who answered the item, sorted by name (pairwise: aligned with `votes`)",
}


def judgments(session: Session, challenging_share: float = CHALLENGING_SHARE) -> list[dict]:
    r"""
    One row per answered item: who answered what, and what the answers add up to.

    Args:
        session ([`~annotate.storage.Session`]): the session.
        challenging_share (`float`, *optional*, defaults to `0.5`):
            Pairwise: share of an item's annotators that must answer `both_wrong` for it to be challenging.

    Returns:
        `list[dict]` in item order, each with `item_id`, `row` (in the item table), `clip_id`, `split`, `annotators`
        (sorted), `answers` (theirs, aligned), `corrections` (`[annotator, text]` pairs), and for pairwise `votes`,
        `vote_sum`, `preferred` (1, 2, or 0 for none), `challenging`; for binary `labels` (`None` for a skip) and
        `label` (the majority, `None` when there is none).
    """
    by_item: dict[str, list[dict]] = {}
    for record in session.answers():
        by_item.setdefault(record["item_id"], []).append(record)
    rows = []
    for row, (identifier, clip_id, split) in enumerate(
        zip(session.items["item_id"], session.items["clip_id"], session.items["split"])
    ):
        records = sorted(by_item.get(identifier, []), key=lambda r: r["annotator"])
        if not records:
            continue
        judged = {
            "item_id": identifier,
            "row": row,
            "clip_id": clip_id,
            "split": split,
            "annotators": [r["annotator"] for r in records],
            "answers": [r["answer"] for r in records],
            "corrections": [[r["annotator"], r["correction"]] for r in records if r.get("correction")],
        }
        if session.task == "pairwise":
            votes = [PAIRWISE_VOTE[a] for a in judged["answers"]]
            total = sum(votes)
            both_wrong = judged["answers"].count("both_wrong")
            judged.update(
                votes=votes,
                vote_sum=total,
                preferred=1 if total > 0 else 2 if total < 0 else 0,
                challenging=both_wrong > 0 and both_wrong >= challenging_share * len(records),
            )
        else:
            labels = [BINARY_LABEL[a] for a in judged["answers"]]
            given = [label for label in labels if label is not None]
            ones = sum(given)
            judged.update(labels=labels, label=None if 2 * ones == len(given) else int(2 * ones > len(given)))
        rows.append(judged)
    return rows


def _with_audio(session: Session, columns: dict[str, list], rows: list[int]) -> Dataset:
    table = Dataset.from_dict(columns)
    audio = session.items.select(rows).select_columns(["audio"])
    return concatenate_datasets([audio, table], axis=1)


def _texts(session: Session) -> list[dict]:
    """The item table without its audio, as rows (reading a row of the table would read its audio too)."""
    return session.items.remove_columns("audio").to_list()


class _Rows:
    """Columns of the exported rows, the item row each comes from (for its audio), and counts by source."""

    def __init__(self, names: list[str]):
        self.columns: dict[str, list] = {name: [] for name in names}
        self.rows: list[int] = []
        self.counts: Counter = Counter()

    def add(self, row: int, source: str, values: dict) -> None:
        for name, column in self.columns.items():
            column.append(values[name])
        self.rows.append(row)
        self.counts[source] += 1


def _pairwise_rows(session: Session, judged: list[dict]) -> _Rows:
    items = _texts(session)
    names = ["chosen", "rejected", "clip_id", "margin", "source", "category", "challenging", "votes", "vote_sum"]
    out = _Rows(names + ["preferred", "caption_1", "caption_2", "source_1", "source_2", "item_id", "annotators"])

    def add(j: dict, chosen: str, rejected: str, margin: float, source: str) -> None:
        item = items[j["row"]]
        values = {"chosen": chosen, "rejected": rejected, "margin": margin, "source": source, "category": j["split"]}
        values.update({k: j[k] for k in ("clip_id", "challenging", "votes", "vote_sum", "preferred", "item_id")})
        values.update({k: item[k] for k in ("caption_1", "caption_2", "source_1", "source_2")})
        out.add(j["row"], source, {**values, "annotators": j["annotators"]})

    for j in judged:
        captions = items[j["row"]]["caption_1"], items[j["row"]]["caption_2"]
        if j["preferred"]:
            winner = captions[j["preferred"] - 1]
            add(j, winner, captions[2 - j["preferred"]], float(abs(j["vote_sum"])), "human")
        else:
            out.counts["no_preference"] += 1
        out.counts["challenging"] += j["challenging"]
        for _, correction in j["corrections"]:
            for caption in captions:
                if correction.strip() != caption.strip():
                    add(j, correction, caption, 1.0, "correction")
    return out


def _binary_rows(session: Session, judged: list[dict]) -> _Rows:
    text_column = session.settings["text_column"]
    items = _texts(session)
    names = [text_column, "label", "clip_id", "source", "category", "votes", "skips", "text_source", "item_id"]
    out = _Rows(names + ["annotators"])

    def add(j: dict, text: str, label: int, source: str) -> None:
        values = {text_column: text, "label": label, "clip_id": j["clip_id"], "source": source, "category": j["split"]}
        values["votes"] = [label for label in j["labels"] if label is not None]
        values["skips"] = j["labels"].count(None)
        values["text_source"] = items[j["row"]]["text_source"]
        out.add(j["row"], source, {**values, "item_id": j["item_id"], "annotators": j["annotators"]})

    for j in judged:
        if all(label is None for label in j["labels"]):
            out.counts["all_skipped"] += 1
        elif j["label"] is None:
            out.counts["no_majority"] += 1
        else:
            add(j, items[j["row"]]["text"], j["label"], "human")
        for _, correction in j["corrections"]:
            add(j, correction, 1, "correction")
    return out


def build_preference_dataset(
    session: Session, challenging_share: float = CHALLENGING_SHARE, *, judged: list[dict] | None = None
) -> tuple[Dataset, dict]:
    r"""
    The session's answers as a preference dataset of the project's schemas, validated.

    Pairwise rows: `audio`, `chosen`, `rejected`, `clip_id`, `margin` (|vote sum|; 1 for corrections), `source`
    (`human` or `correction`), `category` (the item's split), `challenging`, `votes`, `vote_sum`, `preferred`,
    `caption_1`, `caption_2`, `source_1`, `source_2`, `item_id`, `annotators`. Binary rows: `audio`, `prompt` (or
    `caption`), `label`, `clip_id`, `source`, `category`, `votes`, `skips`, `text_source`, `item_id`, `annotators`.

    Args:
        session ([`~annotate.storage.Session`]): the session.
        challenging_share (`float`, *optional*, defaults to `0.5`): see [`judgments`].
        judged (`list[dict]`, *optional*): the session's [`judgments`], when they are already at hand.

    Returns:
        `tuple[datasets.Dataset, dict]`: the dataset and counts (`items`, `answered`, `answers`, `annotators`, rows
        by `source`, and the items left out: `no_preference` pairwise, `no_majority` and `all_skipped` binary).

    Raises:
        `ValueError`: when no answer gives a row yet.
    """
    judged = judgments(session, challenging_share) if judged is None else judged
    build = _pairwise_rows if session.task == "pairwise" else _binary_rows
    out = build(session, judged)
    counts = out.counts
    stats = {
        "task": session.task,
        "items": len(session.items),
        "answered": len(judged),
        "answers": sum(len(j["answers"]) for j in judged),
        "annotators": sorted({a for j in judged for a in j["annotators"]}),
        **dict(counts),
    }
    if not out.rows:
        raise ValueError(f"{session.output_dir}: no answer gives a preference row yet ({stats}).")
    dataset = _with_audio(session, out.columns, out.rows)
    validate_dataset(dataset, KINDS[session.task])
    for reason in ("no_preference", "no_majority", "all_skipped"):
        if counts[reason]:
            logger.warning("%d answered item(s) left out of the dataset: %s.", counts[reason], reason)
    return dataset, stats


def write_labelled_feedback(session: Session, judged: list[dict], path: str | Path) -> Path | None:
    """
    For a binary test on a BATON feedback file (`hfpref tta-generate`'s `feedback.csv`): the same file with `label`
    filled in (the majority label; `skip` for answered items with no majority or only skips) and absolute audio
    paths, written to `path`. Rows nobody answered keep an empty label: they stay the pool that
    `recipes/reward_weighted_diffusion.py` labels with the reward model (its `feedback_file`). Corrections are in the
    dataset only: a feedback row's prompt is the one that generated its audio.

    Returns:
        `Path` or `None` when the session's items do not come from a `.csv` feedback file.
    """
    source = session.settings.get("feedback_file")
    if session.task != "binary" or not source or Path(source).suffix.lower() != ".csv":
        return None
    source, path = Path(source), Path(path)
    # the items' clip_id is the row's audio path as the file writes it (see `annotate.items`)
    labels = {j["clip_id"]: "skip" if j["label"] is None else str(j["label"]) for j in judged}
    with source.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fieldnames, rows = reader.fieldnames, list(reader)
    for row in rows:
        row["label"] = labels.get(row["audio"], row.get("label") or "")
        audio = Path(row["audio"])
        row["audio"] = str((audio if audio.is_absolute() else source.parent / audio).resolve())
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    return path


def export_annotations(
    output_dir: str | Path,
    *,
    push_to_hub: str | None = None,
    private: bool = False,
    challenging_share: float = CHALLENGING_SHARE,
    license: str | None = None,
) -> tuple[Dataset, dict]:
    r"""
    Write the session's preference dataset to `<output_dir>/dataset` (`save_to_disk`), its counts to
    `<output_dir>/export.json` and, for a binary test on a BATON feedback file, the labelled file to
    `<output_dir>/feedback.csv` ([`write_labelled_feedback`]); push the dataset with
    [`~hub.datasets.push_preference_dataset`] when asked.

    The folder trains a reward model as it is: `dataset_name: <output_dir>/dataset` in a `recipes/reward_model.py`
    config (`loss_type: bt` for pairwise, `bce` with `text_column: prompt` for binary), split by clip.

    Args:
        output_dir (`str` or `Path`): the session folder.
        push_to_hub (`str`, *optional*): a Hub dataset repository, `"user/name"`.
        private (`bool`, *optional*, defaults to `False`): create the repository as private.
        challenging_share (`float`, *optional*, defaults to `0.5`): see [`judgments`].
        license (`str`, *optional*): Hub license id of the pushed dataset's card; the card says when none is given.
    """
    output_dir = Path(output_dir)
    session = Session.open(output_dir)
    judged = judgments(session, challenging_share)
    dataset, stats = build_preference_dataset(session, judged=judged)
    dataset.save_to_disk(str(session.output_dir / DATASET_DIR))
    feedback = write_labelled_feedback(session, judged, output_dir / FEEDBACK_FILE)
    stats["feedback_file"] = str(feedback) if feedback else None
    (session.output_dir / EXPORT_FILE).write_text(json.dumps(stats, indent=2))
    if push_to_hub:
        from ..hub.datasets import push_preference_dataset

        push_preference_dataset(
            dataset,
            push_to_hub,
            kind=KINDS[session.task],
            private=private,
            description=f"Human {session.task} judgments collected with `hfpref annotate` on {session.settings['items']}.",
            method=(
                "Pairwise: the sign of the vote sum gives the preferred caption (ties dropped); corrections beat both "
                "captions. Binary: majority label, skips do not vote."
            ),
            column_descriptions=COLUMN_DESCRIPTIONS,
            license=license,
        )
    return dataset, stats
