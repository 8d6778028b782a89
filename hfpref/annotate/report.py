"""What a listening test's annotators said, as the papers report it: vote counts, ties, Fleiss' kappa per split and
the agreement between annotators.

Kappa is computed over the answer categories of the task (pairwise: `caption_1`, `caption_2`, `tie`, `both_wrong`;
binary: `match`, `mismatch`, `skip`) on the items rated by the same number of annotators, the most common number of
at least two (Fleiss' kappa needs a fixed number of raters per subject): the RLHF audio-captioning paper measures
agreement the same way, on the samples its overlapping annotators all rated, per split (non-challenging /
challenging). The items left out of kappa are counted.
"""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np

from ..metrics.preference import category_counts, fleiss_kappa, win_rate
from .export import CHALLENGING_SHARE, judgments
from .storage import ANSWERS, Session


def _kappa(rows: list[dict], categories: tuple[str, ...]) -> dict:
    counts = Counter(len(r["answers"]) for r in rows if len(r["answers"]) >= 2)
    if not counts:
        return {"kappa": None, "items": 0, "raters": None, "left_out": len(rows), "why": "no item has 2 ratings"}
    raters = max(counts, key=lambda n: (counts[n], n))
    used = [r["answers"] for r in rows if len(r["answers"]) == raters]
    result = {"raters": raters, "items": len(used), "left_out": len(rows) - len(used)}
    try:
        return {"kappa": fleiss_kappa(category_counts(used, categories)), **result}
    except ValueError as error:  # e.g. every rating in one category: kappa is undefined
        return {"kappa": None, **result, "why": str(error)}


def _split_report(task: str, rows: list[dict], items: int) -> dict:
    answers = Counter(a for r in rows for a in r["answers"])
    report = {
        "items": items,
        "answered": len(rows),
        "answers": sum(answers.values()),
        "votes": {a: answers.get(a, 0) for a in ANSWERS[task]},
        "fleiss_kappa": _kappa(rows, ANSWERS[task]),
    }
    if task == "pairwise":
        sums = [r["vote_sum"] for r in rows]
        report["ties"] = answers.get("tie", 0)
        report["items_without_preference"] = sum(s == 0 for s in sums)
        report["preferred"] = {"caption_1": sum(s > 0 for s in sums), "caption_2": sum(s < 0 for s in sums)}
        report["challenging"] = sum(r["challenging"] for r in rows)
        report["win_rate_caption_1"] = win_rate(sums) if any(sums) else None
    else:
        labels = [r["label"] for r in rows]
        report["labels"] = {"1": labels.count(1), "0": labels.count(0), "none": labels.count(None)}
    return report


def _annotator_agreement(rows: list[dict]) -> dict:
    """Share of identical answers for every pair of annotators on the items both rated."""
    by_annotator: dict[str, dict[str, str]] = {}
    for r in rows:
        for annotator, answer in zip(r["annotators"], r["answers"]):
            by_annotator.setdefault(annotator, {})[r["item_id"]] = answer
    pairs = {}
    for a, b in itertools.combinations(sorted(by_annotator), 2):
        shared = sorted(set(by_annotator[a]) & set(by_annotator[b]))
        if shared:
            same = sum(by_annotator[a][i] == by_annotator[b][i] for i in shared)
            pairs[f"{a}|{b}"] = {"items": len(shared), "agreement": same / len(shared)}
    return pairs


def annotation_report(output_dir, challenging_share: float = CHALLENGING_SHARE) -> dict:
    r"""
    The report of a session: per split (`all`, each value of the items' split column, and for pairwise
    `challenging` / `non_challenging`) the items, answers, vote counts, ties, Fleiss' kappa (with the number of
    raters, items used and left out), and for pairwise the preferred caption counts and the win rate of
    `caption_1` (its source is named in `sources`) among items with a preference; per annotator the answer counts
    and median answer time; per pair of annotators the share of identical answers.

    Args:
        output_dir (`str` or `Path`): the session folder.
        challenging_share (`float`, *optional*, defaults to `0.5`): see [`~annotate.export.judgments`].

    Returns:
        `dict`, JSON-serializable.
    """
    session = Session.open(output_dir)
    task = session.task
    rows = judgments(session, challenging_share)
    item_splits = list(session.items["split"])
    groups: dict[str, list[dict]] = {"all": rows}
    sizes = {"all": len(item_splits)}
    for split in sorted(set(item_splits) - {""}):
        groups[split] = [r for r in rows if r["split"] == split]
        sizes[split] = item_splits.count(split)
    if task == "pairwise":
        for name, flag in (("challenging", True), ("non_challenging", False)):
            groups[f"{name} (annotators)"] = [r for r in rows if r["challenging"] == flag]
            sizes[f"{name} (annotators)"] = len(groups[f"{name} (annotators)"])
    per_annotator: dict[str, dict] = {}
    for record in session.answers():
        entry = per_annotator.setdefault(record["annotator"], {"answers": 0, "seconds": []})
        entry["answers"] += 1
        entry.setdefault(record["answer"], 0)
        entry[record["answer"]] += 1
        if isinstance(record.get("elapsed_ms"), (int, float)):
            entry["seconds"].append(record["elapsed_ms"] / 1000)
    for entry in per_annotator.values():
        seconds = entry.pop("seconds")
        entry["median_seconds"] = float(np.median(seconds)) if seconds else None
    report = {
        "task": task,
        "items": len(session.items),
        "split_column": session.settings.get("split_column"),
        "splits": {name: _split_report(task, group, sizes[name]) for name, group in groups.items()},
        "annotators": dict(sorted(per_annotator.items())),
        "annotator_agreement": _annotator_agreement(rows),
    }
    if task == "pairwise":
        report["sources"] = {
            "caption_1": sorted(set(session.items["source_1"])),
            "caption_2": sorted(set(session.items["source_2"])),
        }
    return report


def _number(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def render_report_markdown(report: dict) -> str:
    """The report as Markdown tables (what `hfpref annotate --report` prints)."""
    task = report["task"]
    lines = [f"# Listening test: {task}, {report['items']} items", ""]
    if task == "pairwise":
        sources = report["sources"]
        lines += [
            f"caption_1 from {', '.join(sources['caption_1'])}; caption_2 from {', '.join(sources['caption_2'])}",
            "",
        ]
    answers = list(ANSWERS[task])
    if task == "pairwise":  # name each caption's source in its vote column when there is one
        answers = [f"{a} ({sources[a][0]})" if a in sources and len(sources[a]) == 1 else a for a in answers]
    header = ["split", "items", "answered", "answers", *answers, "Fleiss' kappa", "raters x items (left out)"]
    if task == "pairwise":
        header += ["no preference", "caption_1 win rate"]
    else:
        header += ["label 1", "label 0", "no label"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, split in report["splits"].items():
        kappa = split["fleiss_kappa"]
        cells = [name, split["items"], split["answered"], split["answers"], *split["votes"].values()]
        cells += [_number(kappa["kappa"]), f"{kappa['raters'] or '-'} x {kappa['items']} ({kappa['left_out']})"]
        if task == "pairwise":
            cells += [split["items_without_preference"], _number(split["win_rate_caption_1"])]
        else:
            cells += list(split["labels"].values())
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "| annotator | answers | " + " | ".join(ANSWERS[task]) + " | median s/answer |"]
    lines.append("|" + "---|" * (len(ANSWERS[task]) + 3))
    for name, entry in report["annotators"].items():
        counts = " | ".join(str(entry.get(a, 0)) for a in ANSWERS[task])
        lines.append(f"| {name} | {entry['answers']} | {counts} | {_number(entry['median_seconds'], 1)} |")
    if report["annotator_agreement"]:
        lines += ["", "| annotators | shared items | identical answers |", "|---|---|---|"]
        for pair, entry in report["annotator_agreement"].items():
            lines.append(f"| {pair.replace('|', ' / ')} | {entry['items']} | {entry['agreement']:.3f} |")
    return "\n".join(lines) + "\n"
