"""
`hfpref loop`: rounds of preference learning on the synthetic world, each in its own folder with the quickstart's stage
records (a finished stage is reused, an interrupted loop resumes where it stopped).

    <output_dir>/round-0/            world, clap, sft, preferences, reward-model  (the quickstart's first stages)
    <output_dir>/round-<k>/          pool, candidates, judgments, pairs, preferences, reward-model,
                                     selection-reward-model, rl, evaluation.jsonl, results.json
    <output_dir>/round-<k>-control/  rl, evaluation.jsonl, results.json  (with `control`: no new pairs)
    <output_dir>/results.json, results.md, win_rates.png

Round `k` draws `pool_clips` fresh clips (never used before: the world's clips and earlier pools have other seeds
and clip ids), has the round `k - 1` captioner write a greedy and a top-k caption of each, has the judge pick,
adds the pairs to every earlier round's (one dataset with a `round` column, held-out pairs split by clip within each
round), retrains the reward-model ensemble and the selection reward model on them, runs RL from the round `k - 1`
captioner with the KL term to round 0's SFT captioner, and evaluates on the world's test clips: this round over
round `k - 1` and over round 0, by the oracle and by the reward model frozen before the round (round `k - 1`'s).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..quickstart.evaluation import _split_masks, _win_rate
from ..quickstart.preferences import _baseline_judgments, judgment_pairs, preference_splits
from ..quickstart.stages import (
    DEPENDS_ON,
    SIZES,
    STAGE_OUTPUTS,
    _clap,
    _jsonable,
    _load_captioner,
    _reward,
    _rl,
    _sft,
    _Stages,
    _world,
    stage_configs,
    world_settings,
)
from ..utils.records import OutputLock, atomic_write_json
from .config import LoopConfig


# Round 0: the quickstart's first five stages, as the quickstart runs them.
ROUND0_STAGES = ("world", "clap", "sft", "preferences", "reward")
ROUND0_OUTPUTS = {stage: STAGE_OUTPUTS[stage] for stage in ROUND0_STAGES}
ROUND0_DEPENDS_ON = {stage: DEPENDS_ON[stage] for stage in ROUND0_STAGES}
# A round: what each stage leaves (relative to the round's folder) and reads within the round; what it reads from
# other rounds' folders goes in as `upstream` fingerprints.
ROUND_OUTPUTS = {
    "generate": ["pool/state.json", "candidates/state.json"],
    "judge": ["judgments/state.json", "pairs/dataset_dict.json"],
    "preferences": ["preferences/dataset_dict.json"],
    "reward": ["reward-model/model.safetensors"],
    "selection": ["selection-reward-model/model.safetensors"],
    "rl": ["rl/model.safetensors"],
    "evaluate": ["evaluation.jsonl"],
}
ROUND_DEPENDS_ON = {
    "generate": [],
    "judge": ["generate"],
    "preferences": ["judge"],
    "reward": ["preferences"],
    "selection": ["preferences"],
    "rl": ["reward", "selection"],
    "evaluate": ["rl"],
}
CONTROL_OUTPUTS = {stage: ROUND_OUTPUTS[stage] for stage in ("rl", "evaluate")}
CONTROL_DEPENDS_ON = {"rl": [], "evaluate": ["rl"]}
# Round k's pool is drawn from the world generator with seed `seed + POOL_SEED_STRIDE * k` (round 0's world uses
# `seed`), its clip ids prefixed `r<k>-` so that no id repeats across rounds.
POOL_SEED_STRIDE = 100_003
# The win rates a round reports: this round's captioner against these others.
OPPONENTS = ("previous", "round_0")


def round_dir(output_dir: Path, k: int, control: bool = False) -> Path:
    return output_dir / (f"round-{k}-control" if control else f"round-{k}")


def captioner_dir(output_dir: Path, k: int) -> Path:
    """The captioner of round `k`: round 0's SFT, then each round's RL."""
    return round_dir(output_dir, 0) / "sft" if k == 0 else round_dir(output_dir, k) / "rl"


def _fingerprint(stages: _Stages, name: str) -> str:
    return stages.records[name]["fingerprint"]


def _name_round(folder: Path, k: int, what: str, output_dir: Path) -> None:
    """Append to the model card in `folder` which round of which loop made it."""
    card = folder / "README.md"
    text = card.read_text() if card.is_file() else ""
    text += (
        f"\n\n## hfpref loop: round {k}\n\nThe {what} of round {k} of an `hfpref loop` run "
        f"(`{output_dir.name}/round-{k}`): trained on the preference pairs of rounds 0 to {k}"
        + (f", starting from round {k - 1}'s captioner with its KL term to round 0's." if what == "captioner" else ".")
        + "\n"
    )
    card.write_text(text)


def _round0(config: LoopConfig, output_dir: Path) -> _Stages:
    size, seed = SIZES[config.size], config.seed
    folder = round_dir(output_dir, 0)
    configs = stage_configs(folder, size, seed, config.captioner)
    configs["reward"]["embedding_cache_dir"] = (output_dir / "embedding-cache").as_posix()
    stages = _Stages(folder, config.force, config.captioner, outputs=ROUND0_OUTPUTS, depends_on=ROUND0_DEPENDS_ON)
    world = world_settings(size, seed)
    from ..quickstart.preferences import FAIL_BELOW
    from ..quickstart.preferences import _preferences as quickstart_preferences

    print(f"== round 0 -> {folder}")
    stages.run("world", world, lambda: _world(folder, size, seed))
    stages.run("clap", configs["clap"], lambda: _clap(configs["clap"], folder / "world"))
    stages.run("sft", configs["sft"], lambda: _sft(configs["sft"]))
    stages.run(
        "preferences",
        {"top_k": size.top_k, "fail_below": FAIL_BELOW, "seed": seed},
        lambda: quickstart_preferences(folder, size, seed),
    )

    def reward() -> dict:
        outputs = _reward(configs["reward"])
        _name_round(folder / "reward-model", 0, "reward model", output_dir)
        return outputs

    stages.run("reward", configs["reward"], reward)
    return stages


def _generate(folder: Path, captioner: Path, config: LoopConfig, k: int) -> dict:
    """A fresh pool of clips and the round `k - 1` captioner's greedy and top-k caption of each."""
    from datasets import Dataset

    from ..data.synthetic.audio_world import make_world

    size, seed = SIZES[config.size], config.seed
    pool = make_world(config.pool_size, seed=seed + POOL_SEED_STRIDE * k, clip_seconds=float(size.clip_seconds))
    pool = pool.map(lambda clip: {"clip_id": f"r{k}-{clip}"}, input_columns="clip_id")
    pool.save_to_disk(str(folder / "pool"))
    model, processor = _load_captioner(captioner)
    judged = _baseline_judgments(model, processor, pool, size.top_k, seed + k)
    columns = ("clip_id", "events", "references", "greedy", "top_k")
    Dataset.from_list([{c: j[c] for c in columns} for j in judged]).save_to_disk(str(folder / "candidates"))
    same = sum(j["greedy"] == j["top_k"] for j in judged)
    summary = (
        f"{len(pool)} fresh clips captioned by {captioner.parent.name}/{captioner.name} ({same} with one caption)"
    )
    return {"summary": summary, "clips": len(pool), "identical_captions": same}


def _judge(folder: Path, output_dir: Path, config: LoopConfig, k: int) -> dict:
    """The judge's verdicts on the round's candidates, and the round's pairs (split by clip, with a `round` column)."""
    from datasets import Dataset, load_from_disk

    from .judging import annotation_judgments, llm_judgments, oracle_judgments, reward_model_judgments

    candidates = load_from_disk(str(folder / "candidates"))
    pool = load_from_disk(str(folder / "pool"))
    stats: dict[str, Any] = {}
    if config.judge == "oracle":
        rows = oracle_judgments(candidates)
    elif config.judge == "reward_model":
        judge_model = config.judge_reward_model or str(round_dir(output_dir, k - 1) / "reward-model")
        audio = dict(zip(pool["clip_id"], pool["audio"]))
        with_audio = candidates.add_column("audio", [audio[c] for c in candidates["clip_id"]])
        with_audio = with_audio.cast_column("audio", pool.features["audio"])
        rows = reward_model_judgments(
            with_audio, judge_model, str(round_dir(output_dir, 0) / "clap"), str(output_dir / "embedding-cache")
        )
    elif config.judge == "llm":
        rows = llm_judgments(candidates, config.llm_base_url, config.llm_model, config.llm_api_key, config.llm_timeout)
    else:
        rows, stats = annotation_judgments(
            candidates,
            pool,
            folder / "annotation",
            answers_per_item=config.annotate_answers_per_item,
            deadline_minutes=config.annotate_deadline_minutes,
            host=config.annotate_host,
            port=config.annotate_port,
            allowed_hosts=config.annotate_allowed_hosts,
            seed=config.seed + k,
        )
    Dataset.from_list(rows).save_to_disk(str(folder / "judgments"))
    pairs = judgment_pairs(rows)
    if len({p["clip_id"] for p in pairs}) < 2:
        raise RuntimeError(
            f"round {k}'s judge ({config.judge}) preferred a caption on fewer than 2 clips of {len(rows)}: too few "
            "pairs to split by clip"
        )
    splits = preference_splits(pairs, pool, config.seed + k)
    splits = _with_round(splits, k)
    splits.save_to_disk(str(folder / "pairs"))
    verdicts = [r["verdict"] for r in rows]
    counts = {
        "judge": config.judge,
        "clips": len(rows),
        "greedy_wins": verdicts.count("greedy"),
        "top_k_wins": verdicts.count("top_k"),
        "ties": verdicts.count("tie"),
        "both_fail": sum(bool(r["both_fail"]) for r in rows),
        "train_pairs": len(splits["train"]),
        "test_pairs": len(splits["test"]),
        **stats,
    }
    summary = (
        f"{config.judge}: greedy wins {counts['greedy_wins']}, top-k wins {counts['top_k_wins']}, ties "
        f"{counts['ties']}, both fail {counts['both_fail']}; {counts['train_pairs']} train and {counts['test_pairs']} "
        "held-out pairs"
    )
    return {"summary": summary, **counts}


def _with_round(splits, k: int):
    """The pairs with a `round` column of `k` (pairs that have one keep it: round 0's quickstart pairs have none)."""
    if "round" in splits["train"].column_names:
        return splits
    return type(splits)({name: split.add_column("round", [k] * len(split)) for name, split in splits.items()})


def _preferences(folder: Path, previous: Path, k: int) -> dict:
    """Every round's pairs so far: the previous round's preference dataset and this round's pairs."""
    from datasets import DatasetDict, concatenate_datasets, load_from_disk

    before = _with_round(load_from_disk(str(previous)), 0)
    new = load_from_disk(str(folder / "pairs"))
    merged = DatasetDict(
        {
            name: concatenate_datasets(
                [before[name], new[name].select_columns(before[name].column_names).cast(before[name].features)]
            )
            for name in ("train", "test")
        }
    )
    merged.save_to_disk(str(folder / "preferences"))
    by_round = {
        name: {str(r): list(merged[name]["round"]).count(r) for r in range(k + 1)} for name in ("train", "test")
    }
    summary = f"rounds 0-{k}: {len(merged['train'])} train pairs {by_round['train']}, {len(merged['test'])} held out"
    return {"summary": summary, "pairs_by_round": by_round}


def _push(preferences: Path, config: LoopConfig, k: int) -> None:
    """Push the preference dataset (every round's pairs so far, with their `round`) to the loop's Hub dataset."""
    from datasets import load_from_disk

    load_from_disk(str(preferences)).push_to_hub(
        config.hub_dataset_id, private=config.hub_private, commit_message=f"hfpref loop round {k}"
    )
    print(f"round {k}: preference dataset pushed to https://huggingface.co/datasets/{config.hub_dataset_id}")


def _evaluate(folder: Path, output_dir: Path, config: LoopConfig, k: int, current: Path) -> dict:
    """
    This round's captioner against round `k - 1`'s and round 0's on the world's test clips: oracle and frozen reward
    model (round `k - 1`'s, fixed before this round) win rates and oracle scores, per split. Challenging clips are
    those the opponent gets wrong, as in the quickstart: both its greedy and its top-k caption fail (against round 0:
    round 0's captions; against round `k - 1`: round `k - 1`'s).
    """
    from datasets import load_from_disk

    from ..encoders.clap import ClapEmbedder
    from ..judges.oracle import OracleJudge
    from ..models.captioning import generate_captions
    from ..rewards import CLAPRewardModel
    from ..rewards.functions import get_reward_model_reward

    size, seed = SIZES[config.size], config.seed
    round0 = round_dir(output_dir, 0)
    test = load_from_disk(str(round0 / "world"))["test"]
    judged = {"round_0": _baseline_judgments(*_load_captioner(round0 / "sft"), test, size.top_k, seed + 1)}
    judged["previous"] = (
        judged["round_0"]
        if k == 1
        else _baseline_judgments(*_load_captioner(captioner_dir(output_dir, k - 1)), test, size.top_k, seed + 1)
    )
    challenging = {name: np.array([j["both_fail"] for j in rows]) for name, rows in judged.items()}
    audio, events = list(test["audio"]), list(test["events"])
    systems = {name: [j["greedy"] for j in judged[name]] for name in OPPONENTS}
    systems["current"] = generate_captions(*_load_captioner(current), audio, batch_size=64, max_new_tokens=24)

    frozen = round_dir(output_dir, k - 1) / "reward-model"
    embedder = ClapEmbedder.from_pretrained(str(round0 / "clap"), cache_dir=str(output_dir / "embedding-cache"))
    reward = get_reward_model_reward(CLAPRewardModel.from_pretrained(str(frozen)), embedder)
    oracle = OracleJudge()
    scores = {}
    for name, captions in systems.items():
        scores[name] = {
            "oracle": np.array([oracle.score([c], events=e)[0] for c, e in zip(captions, events)]),
            "reward": np.asarray(reward(captions, audio=audio), dtype=float),
        }
    win_rates: dict[str, dict] = {}
    oracle_scores: dict[str, dict] = {}
    for opponent in OPPONENTS:
        for split, mask in _split_masks(challenging[opponent]).items():
            oracle_scores.setdefault(opponent, {})[split] = {
                name: float(scores[name]["oracle"][mask].mean()) if mask.any() else None
                for name in (opponent, "current")
            }
            for judge in ("oracle", "reward"):
                rate, non_ties = _win_rate(list(scores["current"][judge][mask]), list(scores[opponent][judge][mask]))
                win_rates.setdefault(opponent, {}).setdefault(judge, {})[split] = {
                    "win_rate": rate,
                    "non_ties": non_ties,
                }
    with open(folder / "evaluation.jsonl", "w") as f:
        for i, clip_id in enumerate(test["clip_id"]):
            row = {"clip_id": clip_id, **{f"challenging_{name}": bool(challenging[name][i]) for name in OPPONENTS}}
            for name in systems:
                row[name] = systems[name][i]
                row.update({f"{name}_{judge}": float(scores[name][judge][i]) for judge in ("oracle", "reward")})
            f.write(json.dumps(row) + "\n")
    previous = win_rates["previous"]["oracle"]
    summary = (
        f"oracle win rate over round {k - 1}: challenging {_rate(previous['challenging']['win_rate'])}, "
        f"non-challenging {_rate(previous['non_challenging']['win_rate'])}; over round 0: "
        f"{_rate(win_rates['round_0']['oracle']['all']['win_rate'])}"
    )
    return {
        "summary": summary,
        "win_rates": win_rates,
        "oracle_scores": oracle_scores,
        "frozen_reward_model": f"round-{k - 1}/reward-model",
        "test_clips": len(test),
        "challenging_test_clips": {name: int(mask.sum()) for name, mask in challenging.items()},
    }


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _delta(scores: dict, split: str, a: str, b: str) -> float | None:
    x, y = scores[split][a], scores[split][b]
    return None if x is None or y is None else x - y


def _round_results(stages: _Stages, config: LoopConfig, k: int, control: bool) -> dict:
    evaluation = stages.records["evaluate"]["outputs"]
    oracle = evaluation["win_rates"]["previous"]["oracle"]
    results: dict[str, Any] = {
        "round": k,
        "control": control,
        "judge": None if control else config.judge,
        "seed": config.seed,
        "size": config.size,
        "win_rate_vs_previous_challenging": oracle["challenging"]["win_rate"],
        "win_rate_vs_previous_nonchallenging": oracle["non_challenging"]["win_rate"],
        "win_rate_vs_previous": oracle["all"]["win_rate"],
        "win_rate_vs_round_0": evaluation["win_rates"]["round_0"]["oracle"]["all"]["win_rate"],
        "frozen_rm_win_rate_vs_previous": evaluation["win_rates"]["previous"]["reward"]["all"]["win_rate"],
        # This round's oracle score minus the previous round's on the clips round 0 got right: what it cost them.
        "oracle_delta_vs_previous_nonchallenging": _delta(
            evaluation["oracle_scores"]["previous"], "non_challenging", "current", "previous"
        ),
        "oracle_scores": evaluation["oracle_scores"],
        "evaluation": dict(evaluation),
        "rl_selected_step": stages.records["rl"]["outputs"]["selected_step"],
        "stages": {s: {"seconds": r["seconds"], "summary": r["summary"]} for s, r in stages.records.items()},
        "stage_seconds_total": sum(r["seconds"] for r in stages.records.values()),
    }
    if not control:
        results["rm_heldout_accuracy_human"] = stages.records["reward"]["outputs"]["heldout_accuracy_human"]
        results["pairs"] = {
            "judged": dict(stages.records["judge"]["outputs"]),
            "by_round": stages.records["preferences"]["outputs"]["pairs_by_round"],
        }
    return results


def round_configs(config: LoopConfig, output_dir: Path, k: int, control: bool = False) -> dict[str, dict]:
    """
    The recipe configs of round `k`'s `reward`, `selection` and `rl` stages (of its control: `rl` reads round
    `k - 1`'s reward models): the quickstart's, seeded `seed + k`, reading round 0's world and CLAP, RL starting from
    round `k - 1`'s captioner with the KL term to round 0's SFT captioner.
    """
    size, seed = SIZES[config.size], config.seed
    folder = round_dir(output_dir, k, control)
    round0 = round_dir(output_dir, 0)
    source = round_dir(output_dir, k - 1) if control else folder
    configs = stage_configs(source, size, seed + k, config.captioner)
    for name in ("reward", "selection"):
        configs[name]["embedding_cache_dir"] = (output_dir / "embedding-cache").as_posix()
        configs[name]["clap_model_name_or_path"] = (round0 / "clap").as_posix()
    if config.reward_warm_start and not control:
        configs["reward"]["init_from"] = (round_dir(output_dir, k - 1) / "reward-model").as_posix()
        if k >= 2:  # round 0 trains no selection model
            configs["selection"]["init_from"] = (round_dir(output_dir, k - 1) / "selection-reward-model").as_posix()
    configs["rl"].update(
        dataset_name=(round0 / "world").as_posix(),
        model_name_or_path=captioner_dir(output_dir, k - 1).as_posix(),
        ref_model_name_or_path=(round0 / "sft").as_posix(),
        clap_model_name_or_path=(round0 / "clap").as_posix(),
        embedding_cache_dir=(output_dir / "embedding-cache").as_posix(),
        output_dir=(folder / "rl").as_posix(),
    )
    return configs


def _round(config: LoopConfig, output_dir: Path, k: int, previous: dict[str, str], control: bool = False) -> dict:
    """
    Round `k` (or its control) in its folder; `previous` holds the fingerprints of what it reads from earlier rounds.
    Returns the round's results (also in `<folder>/results.json`) and its fingerprints for the next round.
    """
    size, seed = SIZES[config.size], config.seed
    folder = round_dir(output_dir, k, control)
    configs = round_configs(config, output_dir, k, control)
    rl = configs["rl"]
    # A warm-started reward model reads the previous round's: it runs again when that one changed.
    warm = {name: previous[name] for name in ("reward", "selection") if "init_from" in configs[name]}
    outputs, depends = (CONTROL_OUTPUTS, CONTROL_DEPENDS_ON) if control else (ROUND_OUTPUTS, ROUND_DEPENDS_ON)
    stages = _Stages(folder, config.force, config.captioner, outputs=outputs, depends_on=depends)
    print(f"== round {k}{' (control: no new pairs)' if control else ''} -> {folder}")
    world_fp, captioner_fp = previous["world"], previous["captioner"]
    if not control:
        generate = {"pool_clips": config.pool_size, "top_k": size.top_k, "seed": seed, "round": k}
        stages.run(
            "generate",
            generate,
            lambda: _generate(folder, captioner_dir(output_dir, k - 1), config, k),
            upstream={"world": world_fp, "captioner": captioner_fp},
        )
        judge = {
            "judge": config.judge,
            "judge_reward_model": config.judge_reward_model,
            "llm_base_url": config.llm_base_url,
            "llm_model": config.llm_model,
            "annotate_answers_per_item": config.annotate_answers_per_item,
        }
        judge_upstream = {"reward": previous["reward"]} if config.judge == "reward_model" else {}
        stages.run("judge", judge, lambda: _judge(folder, output_dir, config, k), upstream=judge_upstream)
        stages.run(
            "preferences",
            {"round": k},
            lambda: _preferences(folder, round_dir(output_dir, k - 1) / "preferences", k),
            upstream={"preferences": previous["preferences"]},
        )
        if config.push_to_hub:  # every pass (a resumed loop pushes too; the Hub keeps unchanged files as they are)
            _push(folder / "preferences", config, k)

        def reward(name: str, what: str) -> dict:
            outputs = _reward(configs[name])
            _name_round(Path(configs[name]["output_dir"]), k, what, output_dir)
            return outputs

        clap = {"clap": previous["clap"]}
        upstream = {
            name: {**clap, **({"start": warm[name]} if name in warm else {})} for name in ("reward", "selection")
        }
        stages.run("reward", configs["reward"], lambda: reward("reward", "reward model"), upstream=upstream["reward"])
        stages.run(
            "selection",
            configs["selection"],
            lambda: reward("selection", "selection reward model"),
            upstream=upstream["selection"],
        )
        rl_upstream = {"world": world_fp, "captioner": captioner_fp, "reference": previous["sft"], **clap}
    else:
        # The control: no new pairs, so the previous round's reward models are the RL reward and the selection.
        rl_upstream = {
            "world": world_fp,
            "captioner": captioner_fp,
            "reference": previous["sft"],
            "reward": previous["reward"],
            "selection": previous["selection"],
            "clap": previous["clap"],
        }

    def run_rl() -> dict:
        outputs = _rl(rl)
        _name_round(folder / "rl", k, "captioner", output_dir)
        return outputs

    stages.run("rl", rl, run_rl, upstream=rl_upstream)
    evaluate = {"seed": seed, "top_k": size.top_k, "round": k, "challenging": "both of the opponent's captions fail"}
    stages.run(
        "evaluate",
        evaluate,
        lambda: _evaluate(folder, output_dir, config, k, folder / "rl"),
        upstream={"previous_captioner": captioner_fp, "frozen_reward": previous["reward"], "world": world_fp},
    )
    results = _round_results(stages, config, k, control)
    atomic_write_json(folder / "results.json", _jsonable(results))
    fingerprints = {
        "world": world_fp,
        "clap": previous["clap"],
        "sft": previous["sft"],
        "captioner": _fingerprint(stages, "rl"),
    }
    if not control:
        fingerprints.update(
            reward=_fingerprint(stages, "reward"),
            selection=_fingerprint(stages, "selection"),
            preferences=_fingerprint(stages, "preferences"),
        )
    return {"results": results, "fingerprints": fingerprints}


def run_loop(config: LoopConfig) -> dict:
    r"""
    Run `config.rounds` rounds of generate, judge, reward model, RL and evaluation (after round 0), reusing finished
    stages, and write `results.json` (a `rounds` list, one entry a round), `results.md` and `win_rates.png`.

    Args:
        config ([`LoopConfig`]): the loop's settings.

    Returns:
        `dict`: the contents of `results.json`.

    Example:

    ```python
    >>> from hfpref.loop import LoopConfig, run_loop
    >>> results = run_loop(LoopConfig(output_dir="outputs/loop", rounds=2, judge="oracle", seed=0))  # doctest: +SKIP
    >>> [r["win_rate_vs_previous_challenging"] for r in results["rounds"]]  # doctest: +SKIP
    ```
    """
    import datasets

    datasets.disable_progress_bars()
    start = time.perf_counter()
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with OutputLock(output_dir):
        stages0 = _round0(config, output_dir)
        fingerprints = {
            "world": _fingerprint(stages0, "world"),
            "clap": _fingerprint(stages0, "clap"),
            "sft": _fingerprint(stages0, "sft"),
            "captioner": _fingerprint(stages0, "sft"),
            "reward": _fingerprint(stages0, "reward"),
            "preferences": _fingerprint(stages0, "preferences"),
        }
        rounds, before_last = [], fingerprints
        for k in range(1, config.rounds + 1):
            before_last = fingerprints
            done = _round(config, output_dir, k, fingerprints)
            rounds.append(done["results"])
            fingerprints = done["fingerprints"]
        control = None
        if config.control:
            control = _round(config, output_dir, config.rounds, before_last, control=True)["results"]
        results = {
            "seed": config.seed,
            "size": config.size,
            "judge": config.judge,
            "pool_clips": config.pool_size,
            "rm_heldout_accuracy_human_round_0": stages0.records["reward"]["outputs"]["heldout_accuracy_human"],
            "rounds": rounds,
            "control": control,
            "per_round_results": [f"round-{r['round']}/results.json" for r in rounds],
            "wall_seconds": time.perf_counter() - start,
        }
        plot = _plot(output_dir, rounds, control)
        results["plots"] = [plot.name]
        atomic_write_json(output_dir / "results.json", _jsonable(results))
        report = render_loop_markdown(results)
        (output_dir / "results.md").write_text(report)
        print(report)
        print(f"results: {output_dir / 'results.md'} and {output_dir / 'results.json'}")
    return results


def _plot(output_dir: Path, rounds: list[dict], control: dict | None) -> Path:
    """Oracle win rates of each round over the previous round and over round 0, by split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    ks = [r["round"] for r in rounds]
    for ax, opponent, title in zip(axes, OPPONENTS, ("over the previous round", "over round 0")):
        for split in ("challenging", "non_challenging", "all"):
            rates = [r["evaluation"]["win_rates"][opponent]["oracle"][split]["win_rate"] for r in rounds]
            ax.plot(ks, [np.nan if v is None else v for v in rates], marker="o", label=split)
        if control is not None and opponent == "previous":
            rate = control["evaluation"]["win_rates"]["previous"]["oracle"]["challenging"]["win_rate"]
            ax.scatter([control["round"]], [np.nan if rate is None else rate], marker="x", color="k", zorder=3,
                       label="control (challenging)")  # fmt: skip
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_title(f"oracle win rate {title}")
        ax.set_xlabel("round")
        ax.set_xticks(ks)
    axes[0].set_ylabel("win rate")
    axes[0].legend()
    fig.tight_layout()
    path = output_dir / "win_rates.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def render_loop_markdown(results: dict) -> str:
    """The loop's report: one row per round (and the control's), win rates and oracle scores."""
    lines = [
        f"# hfpref loop: {len(results['rounds'])} rounds, judge {results['judge']}, seed {results['seed']}, size "
        f"{results['size']}",
        "",
        f"Round 0: the SFT captioner, its reward model (held-out accuracy {_rate(results['rm_heldout_accuracy_human_round_0'])}).",
        "Win rates are the oracle's on the world's test clips (challenging: clips where both the greedy and the top-k "
        "caption of the opponent, the previous round or round 0, fail); the frozen reward model is the previous "
        "round's, fixed before the round.",
        "",
        "| round | new train pairs | reward-model accuracy | over previous: challenging | non-challenging | all | "
        "oracle delta non-challenging | frozen RM over previous | over round 0 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    entries = list(results["rounds"]) + ([results["control"]] if results.get("control") else [])
    for r in entries:
        pairs = "0 (control)" if r["control"] else str(r["pairs"]["by_round"]["train"][str(r["round"])])
        accuracy = "-" if r["control"] else _rate(r["rm_heldout_accuracy_human"])
        delta = r["oracle_delta_vs_previous_nonchallenging"]
        lines.append(
            f"| {r['round']}{' control' if r['control'] else ''} | {pairs} | {accuracy} | "
            f"{_rate(r['win_rate_vs_previous_challenging'])} | {_rate(r['win_rate_vs_previous_nonchallenging'])} | "
            f"{_rate(r['win_rate_vs_previous'])} | {'n/a' if delta is None else f'{delta:+.3f}'} | "
            f"{_rate(r['frozen_rm_win_rate_vs_previous'])} | {_rate(r['win_rate_vs_round_0'])} |"
        )
    lines += ["", f"Plot: {', '.join(results['plots'])}; wall time {results['wall_seconds'] / 60:.1f} min.", ""]
    return "\n".join(lines)
