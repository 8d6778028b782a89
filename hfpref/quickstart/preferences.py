"""
Stage 4 of the quickstart, `preferences`: the preference pairs the reward model trains on. For each preference clip
the baseline captioner writes a greedy and a top-k caption; the world's oracle ([`~hfpref.judges.oracle.OracleJudge`],
in place of the paper's annotators) picks one or calls a tie, and corrects the clips where both fail (the
"challenging" clips); synthetic negatives (a clip's true caption against another clip's) are added to training only.
"""

from pathlib import Path

import numpy as np

from ..judges.oracle import OracleJudge
from .stages import QuickstartSize, _load_captioner


# The oracle calls a caption a failure below 0.8 (see [`~hfpref.judges.oracle.oracle_score`]): naming one of two
# events (0.75) or only absent ones (0) fails; every event in the wrong order (0.8), two of three events (0.83) or all
# events plus one invented (0.9 with two true events) pass.
FAIL_BELOW = 0.8


def _oracle_judgments(world_split, greedy: list[str], sampled: list[str], fail_below: float) -> list[dict]:
    """What the oracle annotator says about each clip's greedy and top-k caption."""
    judge = OracleJudge()
    rows = []
    for clip_id, events, references, g, s in zip(
        world_split["clip_id"], world_split["events"], world_split["references"], greedy, sampled
    ):
        g_score, s_score = judge.score([g, s], events=events)
        verdict = "tie" if abs(g_score - s_score) <= 1e-9 else ("greedy" if g_score > s_score else "top_k")
        rows.append(
            {
                "clip_id": clip_id,
                "events": list(events),
                "references": list(references),
                "greedy": g,
                "top_k": s,
                "greedy_score": g_score,
                "top_k_score": s_score,
                "verdict": verdict,
                "both_fail": max(g_score, s_score) < fail_below,
            }
        )
    return rows


def _baseline_judgments(model, processor, split, top_k: int, seed: int) -> list[dict]:
    import torch

    from ..models.captioning import generate_captions

    audio = list(split["audio"])
    greedy = generate_captions(model, processor, audio, batch_size=64, max_new_tokens=24)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sampled = generate_captions(
            model, processor, audio, batch_size=64, max_new_tokens=24, do_sample=True, top_k=top_k
        )
    return _oracle_judgments(split, greedy, sampled, FAIL_BELOW)


def judgment_pairs(judgments: list[dict]) -> list[dict]:
    """
    The preference pairs a clip's judgment gives: the preferred caption over the other (none for a tie), and, for a
    clip where both fail, the annotator's correction (the row's `correction`, else the clip's first reference) over
    the better attempt.
    """
    rows = []
    for j in judgments:
        if j["verdict"] != "tie":
            better, worse = (j["greedy"], j["top_k"]) if j["verdict"] == "greedy" else (j["top_k"], j["greedy"])
            rows.append({"clip_id": j["clip_id"], "chosen": better, "rejected": worse, "source": "baseline"})
        if j["both_fail"]:  # the annotator writes a correction: it beats the better attempt
            best = j["top_k"] if j["verdict"] == "top_k" else j["greedy"]
            correction = j.get("correction") or j["references"][0]
            if correction != best:
                rows.append({"clip_id": j["clip_id"], "chosen": correction, "rejected": best, "source": "correction"})
    return rows


def preference_splits(rows: list[dict], clips, seed: int):
    """
    The pairs of `rows` with their clips' audio (from `clips`, a world split), split 80/20 by clip, and synthetic
    negatives (a train clip's true caption against another clip's) added to the train split only: they are easy, and
    in the held-out split they would carry the accuracy the reward model is judged by.
    """
    from datasets import Dataset, DatasetDict, concatenate_datasets

    from ..data.preference import add_synthetic_negatives, split_by_clip

    audio = dict(zip(clips["clip_id"], clips["audio"]))
    audio_feature = clips.features["audio"]
    pairs = Dataset.from_list(rows)
    pairs = pairs.add_column("audio", [audio[c] for c in pairs["clip_id"]]).cast_column("audio", audio_feature)
    splits = split_by_clip(pairs, test_size=0.2, seed=seed)
    train_clips = set(splits["train"]["clip_id"])
    train_world = clips.filter(lambda clip: clip in train_clips, input_columns="clip_id")
    negatives = add_synthetic_negatives(train_world, seed=seed).select_columns(["clip_id", "chosen", "rejected"])
    negatives = negatives.add_column("source", ["synthetic_negative"] * len(negatives))
    negatives = negatives.add_column("audio", [audio[c] for c in negatives["clip_id"]]).cast_column(
        "audio", audio_feature
    )
    splits["train"] = concatenate_datasets([splits["train"], negatives.cast(splits["train"].features)])
    return DatasetDict(splits)


def _preferences(output_dir: Path, size: QuickstartSize, seed: int) -> dict:
    from datasets import Dataset, load_from_disk

    world = load_from_disk(str(output_dir / "world"))["preference"]
    model, processor = _load_captioner(output_dir / "sft")
    judgments = _baseline_judgments(model, processor, world, size.top_k, seed)
    Dataset.from_list(judgments).save_to_disk(str(output_dir / "preference-judgments"))
    splits = preference_splits(judgment_pairs(judgments), world, seed)
    splits.save_to_disk(str(output_dir / "preferences"))

    verdicts = [j["verdict"] for j in judgments]
    counts = {
        "clips": len(judgments),
        "greedy_wins": verdicts.count("greedy"),
        "top_k_wins": verdicts.count("top_k"),
        "ties": verdicts.count("tie"),
        "both_fail": sum(j["both_fail"] for j in judgments),
        "pairs_by_source": {
            split: {
                s: list(splits[split]["source"]).count(s) for s in ("baseline", "correction", "synthetic_negative")
            }
            for split in ("train", "test")
        },
        "train_pairs": len(splits["train"]),
        "test_pairs": len(splits["test"]),
        "baseline_greedy_oracle_mean": float(np.mean([j["greedy_score"] for j in judgments])),
    }
    summary = (
        f"{counts['clips']} clips judged: greedy wins {counts['greedy_wins']}, top-k wins {counts['top_k_wins']}, "
        f"ties {counts['ties']}, both fail {counts['both_fail']} (challenging); "
        f"{counts['train_pairs']} train pairs {counts['pairs_by_source']['train']} (synthetic negatives in train "
        f"only), {counts['test_pairs']} held-out pairs {counts['pairs_by_source']['test']}, split by clip"
    )
    return {"summary": summary, **counts}
