"""
How a round of `hfpref loop` judges its candidates: each judge turns a pool clip's greedy and top-k captions into a
verdict (`"greedy"`, `"top_k"` or `"tie"`) and says whether both fail (then the pair of a correction over the better
attempt is added, see [`~hfpref.quickstart.preferences.judgment_pairs`]). Every judge writes the same rows as the
quickstart's oracle ([`~hfpref.quickstart.preferences._oracle_judgments`]), so the pairs are built one way.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

from ..quickstart.preferences import FAIL_BELOW, _oracle_judgments


logger = logging.getLogger(__name__)

# Seconds between two looks at the annotation session's answers.
POLL_SECONDS = 1.0
SERVER_FILE = "server.json"
DEADLINE_FILE = "loop-deadline.json"


def _verdict(greedy_score: float, top_k_score: float) -> str:
    return "tie" if abs(greedy_score - top_k_score) <= 1e-9 else ("greedy" if greedy_score > top_k_score else "top_k")


def judgment_row(
    candidate: dict, verdict: str, both_fail: bool, scores=(None, None), correction: str | None = None
) -> dict:
    """One clip's judgment: its candidates, the verdict, whether both fail, the scores (when the judge scores) and
    the correction (when an annotator wrote one)."""
    return {
        "clip_id": candidate["clip_id"],
        "events": list(candidate["events"]),
        "references": list(candidate["references"]),
        "greedy": candidate["greedy"],
        "top_k": candidate["top_k"],
        "greedy_score": None if scores[0] is None else float(scores[0]),
        "top_k_score": None if scores[1] is None else float(scores[1]),
        "verdict": verdict,
        "both_fail": both_fail,
        "correction": correction,
    }


def scored_judgments(candidates, scores: list[tuple[float, float]], fail_below: float | None) -> list[dict]:
    """
    Judgment rows from a score of each clip's greedy and top-k caption; `fail_below`: both fail when the better score
    is below it (`None`: a judge that cannot tell, never both fail).
    """
    return [
        judgment_row(row, _verdict(g, s), fail_below is not None and max(g, s) < fail_below, (g, s))
        for row, (g, s) in zip(candidates, scores)
    ]


def oracle_judgments(candidates) -> list[dict]:
    """The synthetic world's oracle: scores against the clip's events, a correction (a reference) when both fail."""
    rows = _oracle_judgments(candidates, list(candidates["greedy"]), list(candidates["top_k"]), FAIL_BELOW)
    return [{**row, "correction": None} for row in rows]


def reward_model_judgments(candidates, reward_model_path: str, clap_path: str, cache_dir: str) -> list[dict]:
    """A reward model's pick (its reward of each caption); it never calls both captions failures."""
    from ..judges.registry import get_judge

    judge = get_judge(
        "reward_model",
        reward_model_name_or_path=reward_model_path,
        clap_model_name_or_path=clap_path,
        embedding_cache_dir=cache_dir,
    )
    scores = [tuple(judge.score([row["greedy"], row["top_k"]], audio=row["audio"])) for row in candidates]
    return scored_judgments(candidates, scores, fail_below=None)


def llm_judgments(candidates, base_url: str, model: str, api_key: str | None, timeout: float) -> list[dict]:
    """
    An LLM behind an OpenAI-compatible endpoint, rating each caption against the clip's references with the audio
    caption prompt ([`~hfpref.judges.llm.AUDIO_CAPTION_PROMPT`]).
    """
    from ..judges.llm import AUDIO_CAPTION_PROMPT, OpenAIJudge

    judge = OpenAIJudge(base_url, model, api_key=api_key, timeout=timeout, prompt=AUDIO_CAPTION_PROMPT)
    scores = [tuple(judge.score([row["greedy"], row["top_k"]], references=row["references"])) for row in candidates]
    return scored_judgments(candidates, scores, fail_below=None)


def annotation_judgments(
    candidates,
    pool,
    session_dir: Path,
    *,
    answers_per_item: int,
    deadline_minutes: float | None,
    host: str,
    port: int,
    allowed_hosts: list[str] | tuple[str, ...] = (),
    seed: int = 0,
) -> tuple[list[dict], dict]:
    """
    People's picks, through the annotation app: serve the round's items (greedy vs top-k caption of each pool clip)
    and wait until every item has `answers_per_item` answers or the deadline passes. Answers are stored durably in
    `session_dir` as they come; run again, the same session is served and only the missing answers are waited for
    (the deadline, counted from the session's first start, is kept in `session_dir`). An annotator's `both_wrong`
    marks the clip challenging and their correction, when they write one, becomes the chosen caption of a pair.

    Returns:
        `(rows, counts)`: judgment rows (unanswered items and identical captions are ties: no pair) and the counts
        of items, answered items and answers.
    """
    from ..annotate.app import AnnotationApp, make_server
    from ..annotate.export import judgments
    from ..annotate.items import load_items
    from ..annotate.storage import Session
    from ..utils.records import atomic_write_json

    source = session_dir.parent / "candidates"
    items, counts = load_items(str(source), "pairwise", audio_dataset=str(session_dir.parent / "pool"))
    settings = {"task": "pairwise", "items": "candidates", "audio_dataset": "pool", "seed": seed, **counts}
    session = Session.create(session_dir, settings, items)
    deadline_file = session_dir / DEADLINE_FILE
    if not deadline_file.is_file():
        started = time.time()
        ends = None if deadline_minutes is None else started + 60 * deadline_minutes
        atomic_write_json(deadline_file, {"started": started, "deadline": ends})
    deadline = json.loads(deadline_file.read_text())["deadline"]

    def answers_by_item() -> dict[str, int]:
        by_item: dict[str, set] = {}
        for record in session.answers():
            by_item.setdefault(record["item_id"], set()).add(record["annotator"])
        return {item: len(names) for item, names in by_item.items()}

    def complete() -> bool:
        counted = answers_by_item()
        return all(counted.get(item, 0) >= answers_per_item for item in session.items["item_id"])

    if not complete():
        app = AnnotationApp(session)
        server = make_server(app, host, port, allowed_host=list(allowed_hosts))
        bound = server.server_address[1]
        url = f"http://{'127.0.0.1' if host in ('', '0.0.0.0', '::') else host}:{bound}/"
        atomic_write_json(session_dir / SERVER_FILE, {"url": url, "port": bound, "token_file": "app-token"})
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        print(
            f"Annotation round: {len(session.items)} items on {url}?annotator=NAME; waiting for "
            f"{answers_per_item} answer(s) per item"
            + (f" or the deadline ({time.strftime('%H:%M:%S', time.localtime(deadline))})" if deadline else ""),
            flush=True,
        )
        try:
            while not complete() and (deadline is None or time.time() < deadline):
                time.sleep(POLL_SECONDS)
        finally:
            server.shutdown()
            server.server_close()
            thread.join()
            (session_dir / SERVER_FILE).unlink(missing_ok=True)
    counted = answers_by_item()
    answered = {row["item_id"]: row for row in judgments(session)}
    if not answered:
        raise RuntimeError(
            f"the annotation session {session_dir} has no answers by its deadline: nothing to learn from this round "
            "(serve it again with `hfpref annotate --output-dir` and re-run the loop, or set a later deadline)"
        )
    by_clip = {}
    for item in session.items.select_columns(["item_id", "clip_id", "caption_1", "caption_2"]).to_list():
        by_clip[item["clip_id"]] = (item, answered.get(item["item_id"]))
    rows = []
    for row in candidates.remove_columns("audio") if "audio" in candidates.column_names else candidates:
        item, judged = by_clip.get(row["clip_id"], (None, None))
        verdict, both_fail, correction = "tie", False, None
        if judged is not None:
            # caption_1/caption_2 are the candidates' greedy/top-k in that order (load_items' default pair).
            verdict = {1: "greedy", 2: "top_k", 0: "tie"}[judged["preferred"]]
            if item["caption_1"] != row["greedy"]:
                verdict = {"greedy": "top_k", "top_k": "greedy", "tie": "tie"}[verdict]
            both_fail = bool(judged["challenging"])
            corrections = [text for _, text in judged["corrections"] if text and text.strip()]
            correction = corrections[0].strip() if corrections else None
        # Without a written correction a both-wrong clip gives no pair: the loop never reads the world's references on
        # a person's behalf.
        rows.append(judgment_row(row, verdict, both_fail and correction is not None, correction=correction))
    stats = {
        "items": len(session.items),
        "answered_items": len(answered),
        "complete_items": sum(counted.get(i, 0) >= answers_per_item for i in session.items["item_id"]),
        "answers": sum(counted.values()),
    }
    return rows, stats
