"""
The quickstart end to end: [`run_quickstart`] runs the eight stages in order (reusing finished ones) and writes
`results.json` and `results.md`; [`run_quickstart_seeds`] runs it once per seed and summarises the seeds.
"""

import json
import time
from pathlib import Path
from typing import Any

from ..utils.records import OutputLock, atomic_write_json
from .evaluation import _evaluate
from .preferences import FAIL_BELOW, _preferences
from .report import (
    SEED_FIGURES,
    TARGETS,
    _plot,
    _reward_histogram,
    _targets,
    render_results_markdown,
    render_seeds_markdown,
    summarize_seeds,
)
from .stages import (
    DEFAULT_CAPTIONER,
    DEFAULT_OUTPUT_DIR,
    DEFAULT_SIZE,
    QuickstartSize,
    _check_captioner_name,
    _clap,
    _jsonable,
    _reward,
    _rl,
    _sft,
    _size,
    _Stages,
    _world,
    check_captioner,
    peak_rss_mb,
    stage_configs,
    world_settings,
)


def run_quickstart(
    output_dir: str | Path = DEFAULT_OUTPUT_DIR,
    size: str | QuickstartSize = DEFAULT_SIZE,
    seed: int = 0,
    force: bool = False,
    captioner: str = DEFAULT_CAPTIONER,
) -> dict:
    r"""
    Run the RLHF captioning pipeline end to end on the synthetic world and write `results.json` and `results.md`.

    Args:
        output_dir (`str` or `Path`, *optional*, defaults to `"outputs/quickstart"`):
            Where every stage writes (world, models with their cards, datasets, plots, results).
        size (`str` or [`QuickstartSize`], *optional*, defaults to `"small"`):
            `"small"` (the default: about 10 minutes on 2 CPU cores), `"medium"`, `"tiny"` (a smoke test of every
            stage in under a minute, too small to learn anything) or a custom size.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the world and of every stage; the same seed gives the same results.
        force (`bool`, *optional*, defaults to `False`):
            Re-run every stage even when a finished one with the same configuration is on disk.
        captioner (`str`, *optional*, defaults to `"whisper"`):
            The captioner trained from scratch and fine-tuned by RL: `"whisper"` (a 2-layer Whisper) or `"audio-llm"`
            (Qwen2-Audio's architecture cut to 2 layers each side). A folder holds one captioner's run: running the
            other in it is refused unless `force` ([`~hfpref.quickstart.stages.check_captioner`]).

    Returns:
        `dict`: the contents of `results.json`.
    """
    import datasets

    datasets.disable_progress_bars()
    start = time.perf_counter()
    size_name = size if isinstance(size, str) else "custom"
    size = _size(size)
    _check_captioner_name(captioner)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with OutputLock(output_dir):  # a second run on the same folder stops with an error naming it and this run's pid
        check_captioner(output_dir, captioner, force)
        return _run_quickstart(output_dir, size, size_name, seed, force, start, captioner)


def _run_quickstart(
    output_dir: Path, size: QuickstartSize, size_name: str, seed: int, force: bool, start: float, captioner: str
):
    configs = stage_configs(output_dir, size, seed, captioner)
    stages = _Stages(output_dir, force, captioner)
    world = world_settings(size, seed)
    judged = {"top_k": size.top_k, "fail_below": FAIL_BELOW, "seed": seed}

    stages.run("world", world, lambda: _world(output_dir, size, seed))
    stages.run("clap", configs["clap"], lambda: _clap(configs["clap"], output_dir / "world"))
    stages.run("sft", configs["sft"], lambda: _sft(configs["sft"]))
    stages.run("preferences", judged, lambda: _preferences(output_dir, size, seed))
    stages.run("reward", configs["reward"], lambda: _reward(configs["reward"]))
    stages.run("selection", configs["selection"], lambda: _reward(configs["selection"]))
    stages.run("rl", configs["rl"], lambda: _rl(configs["rl"]))
    evaluation = stages.run("evaluate", judged, lambda: _evaluate(output_dir, size, seed))

    tables = evaluation["tables"]
    win = {split: tables[split]["win_rates"]["oracle"]["rl_win_rate"] for split in tables}
    lengths = {s: tables["all"][s]["mean_length"] for s in ("baseline", "rl")}
    # A reused stage counts at the time and memory it took when it ran: what the results cost, not this invocation.
    wall = time.perf_counter() - start
    peak = max([peak_rss_mb(), *(r.get("peak_rss_mb", 0.0) for r in stages.records.values())])
    results: dict[str, Any] = {
        "output_dir": output_dir.name,  # the folder's name only: a report holds no machine-local path
        "size": size_name,
        "seed": seed,
        "captioner": captioner,
        "clap_test_r1": stages.records["clap"]["outputs"]["test_r1"],
        "rm_heldout_accuracy_human": stages.records["reward"]["outputs"]["heldout_accuracy_human"],
        "rm_heldout_accuracy": stages.records["reward"]["outputs"]["heldout_accuracy"],
        "rm_heldout_accuracy_by_source": stages.records["reward"]["outputs"]["heldout_accuracy_by_source"],
        # Each ensemble member's accuracy on the same held-out human pairs, and the selection reward model's.
        "rm_heldout_accuracy_human_members": stages.records["reward"]["outputs"]["heldout_accuracy_human_members"],
        "selection_rm_heldout_accuracy_human": stages.records["selection"]["outputs"]["heldout_accuracy_human"],
        "rl_selected_step": stages.records["rl"]["outputs"]["selected_step"],
        "rl_selection_rewards": stages.records["rl"]["outputs"]["selection_rewards"],
        "rl_win_rate": win["all"],
        "rl_win_rate_challenging": win["challenging"],
        "rl_win_rate_nonchallenging": win["non_challenging"],
        # RL's oracle score minus the baseline's on the non-challenging test clips: what RL cost the good captions.
        "rl_oracle_delta_nonchallenging": _difference(
            tables["non_challenging"]["rl"]["oracle_score"], tables["non_challenging"]["baseline"]["oracle_score"]
        ),
        # The same win rates on the validation clips, where the settings were chosen (the test clips are scored once).
        "validation_rl_win_rate_challenging": evaluation["validation"]["challenging"]["rl_win_rate"],
        "validation_rl_win_rate_nonchallenging": evaluation["validation"]["non_challenging"]["rl_win_rate"],
        "validation_rl_oracle_delta_nonchallenging": _difference(
            evaluation["validation"]["non_challenging"]["rl_oracle_score"],
            evaluation["validation"]["non_challenging"]["baseline_oracle_score"],
        ),
        # Circular (RL optimised this reward model), so reported apart from the oracle's independent figures.
        "rm_win_rate": tables["all"]["win_rates"]["reward"]["rl_win_rate"],
        "baseline_mean_length": lengths["baseline"],
        "rl_mean_length": lengths["rl"],
        "baseline_mean_reward": tables["all"]["baseline"]["mean_reward"],
        "rl_mean_reward": tables["all"]["rl"]["mean_reward"],
        "challenging_test_clips": tables["challenging"]["clips"],
        "preferences": {k: v for k, v in stages.records["preferences"]["outputs"].items()},
        "evaluation": evaluation,
        "stages": {s: {"seconds": r["seconds"], "summary": r["summary"]} for s, r in stages.records.items()},
        "stage_seconds_total": sum(r["seconds"] for r in stages.records.values()),
        "stages_reused": sorted(stages.reused),
        "wall_seconds": wall,
        "peak_rss_mb": peak,
    }
    results["targets"] = _targets(results)
    per_clip = [json.loads(line) for line in (output_dir / "evaluation.jsonl").read_text().splitlines()]
    plots = _plot(output_dir) + [_reward_histogram(output_dir, per_clip)]
    results["plots"] = [Path(plot).name for plot in plots]  # beside results.json: names, not machine-local paths
    atomic_write_json(output_dir / "results.json", _jsonable(results))
    (output_dir / "results.md").write_text(render_results_markdown(results))
    print(render_results_markdown(results).split("## Targets")[-1].strip())
    print(f"results: {output_dir / 'results.md'} and {output_dir / 'results.json'}")
    return results


def _difference(a: float | None, b: float | None) -> float | None:
    """`a - b`, `None` when either is (a split without clips)."""
    return None if a is None or b is None else a - b


def run_quickstart_seeds(
    output_dir: str | Path = DEFAULT_OUTPUT_DIR,
    seeds: list[int] = (0, 1, 2),
    size: str | QuickstartSize = DEFAULT_SIZE,
    force: bool = False,
    captioner: str = DEFAULT_CAPTIONER,
) -> dict:
    r"""
    The quickstart once per seed (world, models and RL all re-seeded), each in `<output_dir>/seed-<k>`, summarised in
    `<output_dir>/results.json` and `results.md`: every figure as mean, spread (sample std), min, max and per seed, and
    each target met on the mean and on every seed.

    Returns:
        `dict`: the contents of `results.json` (`figures[name]` = `{"mean", "std", "min", "max", "per_seed"}`; the
        top-level keys `rm_heldout_accuracy_human`, `rl_win_rate_challenging`, ... hold the same summaries).
    """
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"seeds={list(seeds)} must be distinct and at least one")
    _check_captioner_name(captioner)
    output_dir = Path(output_dir)
    start = time.perf_counter()
    with OutputLock(output_dir):
        per_seed = {}
        for seed in seeds:
            print(f"== seed {seed} -> {output_dir / f'seed-{seed}'}")
            per_seed[seed] = run_quickstart(
                output_dir / f"seed-{seed}", size=size, seed=seed, force=force, captioner=captioner
            )
        figures = summarize_seeds(per_seed)
        targets = {}
        for name, first in per_seed[seeds[0]]["targets"].items():
            met = [per_seed[seed]["targets"][name]["met"] for seed in seeds]
            mean = figures.get(name.removesuffix("_floor"), {}).get("mean")  # a floor is a bar on the same figure
            targets[name] = {
                "description": first["description"],
                "mean": mean,
                "met_on_mean": bool(mean >= TARGETS[name]) if name in TARGETS and mean is not None else all(met),
                "met_on_every_seed": all(met),
                "met_per_seed": {str(seed): m for seed, m in zip(seeds, met)},
            }
        results = {
            "size": size if isinstance(size, str) else "custom",
            "seeds": list(seeds),
            "captioner": captioner,
            "wall_seconds_all_seeds": time.perf_counter() - start,
            "stage_seconds_all_seeds": sum(r["stage_seconds_total"] for r in per_seed.values()),
            "peak_rss_mb_all_seeds": max(r["peak_rss_mb"] for r in per_seed.values()),
            "figures": figures,
            **{name: figures[name] for name in SEED_FIGURES if name in figures},
            "targets": targets,
            # Beside this results.json: relative, so the report names no machine-local path.
            "per_seed_results": {str(seed): f"seed-{seed}/results.json" for seed in seeds},
        }
        atomic_write_json(output_dir / "results.json", _jsonable(results))
        report = render_seeds_markdown(results)
        (output_dir / "results.md").write_text(report)
        print(report.split("## Targets")[-1].strip())
        print(f"results: {output_dir / 'results.md'} and {output_dir / 'results.json'}")
    return results
