"""
Stage 8 of the quickstart, `evaluate`: the baseline and the RL captioner on the test clips, as the paper's Tables 1,
2 and 4. Each caption is scored by the oracle ([`~hfpref.judges.oracle.OracleJudge`]), the reward model and the
captioning metrics; RL's win rate over the baseline is split into challenging clips (both baseline captions fail)
and the rest, and each metric's win rate is compared with the oracle's (weighted deviation).
"""

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..judges.oracle import OracleJudge
from .preferences import _baseline_judgments
from .report import _fmt
from .stages import QuickstartSize, _load_captioner


def _win_rate(a: list[float], b: list[float]) -> tuple[float | None, int]:
    """Share of a's wins among the non-tie comparisons (`None` when all tie), and how many were non-ties."""
    from ..metrics.preference import win_rate

    non_ties = int((np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)) > 1e-9).sum())
    return (win_rate(a, b, tie_tolerance=1e-9) if non_ties else None), non_ties


def _split_masks(challenging: np.ndarray) -> dict[str, np.ndarray]:
    """The clips of each reported split: all, challenging (both baseline captions fail) and the rest."""
    return {"all": np.ones(len(challenging), bool), "challenging": challenging, "non_challenging": ~challenging}


def _evaluate(output_dir: Path, size: QuickstartSize, seed: int) -> dict:
    from datasets import load_from_disk

    from ..encoders.clap import ClapEmbedder
    from ..metrics.captioning import evaluate_captions, evaluate_sentences
    from ..metrics.preference import weighted_deviation
    from ..models.captioning import generate_captions
    from ..rewards import CLAPRewardModel
    from ..rewards.functions import get_reward_model_reward

    test = load_from_disk(str(output_dir / "world"))["test"]
    baseline, processor = _load_captioner(output_dir / "sft")
    judgments = _baseline_judgments(baseline, processor, test, size.top_k, seed + 1)
    challenging = np.array([j["both_fail"] for j in judgments])
    rl_model, rl_processor = _load_captioner(output_dir / "rl")
    audio = list(test["audio"])
    captions = {
        "baseline": [j["greedy"] for j in judgments],
        "rl": generate_captions(rl_model, rl_processor, audio, batch_size=64, max_new_tokens=24),
    }
    references = [list(r) for r in test["references"]]
    events = list(test["events"])

    embedder = ClapEmbedder.from_pretrained(str(output_dir / "clap"), cache_dir=str(output_dir / "embedding-cache"))
    reward_func = get_reward_model_reward(CLAPRewardModel.from_pretrained(str(output_dir / "reward-model")), embedder)
    oracle = OracleJudge()
    names = ["oracle", "reward", "bleu_4", "cider_d", "sbert_sim", "clap_sim"]
    per_caption, corpus = {}, {}
    for system, cands in captions.items():
        sentences = evaluate_sentences(
            cands, references, ["bleu_4", "cider_d", "sbert_sim", "clap_sim", "reward"],
            audio=audio, embedder=embedder, reward_func=reward_func, tokenizer="simple",
        )  # fmt: skip
        if sentences.get("skipped"):
            raise RuntimeError(f"quickstart evaluation could not compute {sentences['skipped']}")
        per_caption[system] = {name: np.asarray(sentences[name], dtype=float) for name in names if name != "oracle"}
        per_caption[system]["oracle"] = np.array([oracle.score([c], events=e)[0] for c, e in zip(cands, events)])
        per_caption[system]["length"] = np.array([len(c.split()) for c in cands], dtype=float)
        corpus[system] = evaluate_captions(cands, references, ["bleu_4", "cider_d"], tokenizer="simple")

    splits = _split_masks(challenging)
    tables: dict[str, dict] = {}
    for split, mask in splits.items():
        table: dict[str, Any] = {"clips": int(mask.sum())}
        for system in captions:
            table[system] = {
                "oracle_score": float(per_caption[system]["oracle"][mask].mean()) if mask.any() else None,
                "mean_reward": float(per_caption[system]["reward"][mask].mean()) if mask.any() else None,
                "mean_length": float(per_caption[system]["length"][mask].mean()) if mask.any() else None,
            }
            if mask.any():
                subset = [i for i in np.flatnonzero(mask)]
                scores = evaluate_captions(
                    [captions[system][i] for i in subset], [references[i] for i in subset], ["bleu_4", "cider_d"],
                    tokenizer="simple",
                )  # fmt: skip
                table[system].update(bleu_4=scores["bleu_4"], cider_d=scores["cider_d"])
        table["win_rates"] = {}
        for name in names:
            rate, non_ties = _win_rate(list(per_caption["rl"][name][mask]), list(per_caption["baseline"][name][mask]))
            table["win_rates"][name] = {"rl_win_rate": rate, "non_ties": non_ties}
        tables[split] = table

    deviation = {}
    halves = ("non_challenging", "challenging")
    if all(tables[h]["win_rates"]["oracle"]["rl_win_rate"] is not None for h in halves):
        human = [100 * tables[h]["win_rates"]["oracle"]["rl_win_rate"] for h in halves]
        counts = [tables[h]["clips"] for h in halves]
        for name in names[1:]:
            rates = [tables[h]["win_rates"][name]["rl_win_rate"] for h in halves]
            if None not in rates:
                deviation[name] = weighted_deviation([100 * r for r in rates], human, counts)

    with open(output_dir / "evaluation.jsonl", "w") as f:
        for i, clip_id in enumerate(test["clip_id"]):
            row = {"clip_id": clip_id, "challenging": bool(challenging[i]), "truth": test["caption"][i]}
            for system in captions:
                row[system] = captions[system][i]
                row.update({f"{system}_{name}": float(per_caption[system][name][i]) for name in names})
            f.write(json.dumps(row) + "\n")

    validation = _validation_win_rates(output_dir, size, seed, (baseline, processor), (rl_model, rl_processor))
    order = np.argsort(-(per_caption["rl"]["oracle"] - per_caption["baseline"]["oracle"]), kind="stable")
    examples = [
        {
            "clip_id": test["clip_id"][i],
            "challenging": bool(challenging[i]),
            "baseline": captions["baseline"][i],
            "rl": captions["rl"][i],
            "truth": test["caption"][i],
            "baseline_oracle": float(per_caption["baseline"]["oracle"][i]),
            "rl_oracle": float(per_caption["rl"]["oracle"][i]),
        }
        for i in list(order[:3]) + list(order[len(order) // 2 : len(order) // 2 + 2])
    ]
    overall = tables["all"]["win_rates"]["oracle"]
    summary = (
        f"oracle win rate of RL over baseline {_fmt(overall['rl_win_rate'])} ({overall['non_ties']} non-ties), "
        f"challenging {_fmt(tables['challenging']['win_rates']['oracle']['rl_win_rate'])}, "
        f"non-challenging {_fmt(tables['non_challenging']['win_rates']['oracle']['rl_win_rate'])}"
    )
    return {
        "summary": summary,
        "tables": tables,
        "corpus": {s: {k: v for k, v in c.items() if k != "skipped"} for s, c in corpus.items()},
        "weighted_deviation": deviation,
        "examples": examples,
        "validation": validation,
    }


def _validation_win_rates(output_dir: Path, size: QuickstartSize, seed: int, baseline, rl) -> dict:
    """
    The oracle win rates of RL over the baseline on the validation clips, challenging and not: what the quickstart's
    settings were chosen on (README, "What we tried"), never the test clips. The pipeline itself never reads them.
    """
    from datasets import load_from_disk

    from ..models.captioning import generate_captions

    validation = load_from_disk(str(output_dir / "world"))["validation"]
    judgments = _baseline_judgments(*baseline, validation, size.top_k, seed + 2)
    challenging = np.array([j["both_fail"] for j in judgments])
    oracle = OracleJudge()
    rl_captions = generate_captions(*rl, list(validation["audio"]), batch_size=64, max_new_tokens=24)
    scores = {
        "baseline": np.array([j["greedy_score"] for j in judgments]),
        "rl": np.array([oracle.score([c], events=e)[0] for c, e in zip(rl_captions, validation["events"])]),
    }
    out = {}
    for name, part in _split_masks(challenging).items():
        rate, non_ties = _win_rate(list(scores["rl"][part]), list(scores["baseline"][part]))
        out[name] = {
            "clips": int(part.sum()),
            "rl_win_rate": rate,
            "non_ties": non_ties,
            "baseline_oracle_score": float(scores["baseline"][part].mean()) if part.any() else None,
            "rl_oracle_score": float(scores["rl"][part].mean()) if part.any() else None,
        }
    return out
