import json
import re
from pathlib import Path

import pytest
import yaml

from hfpref.cli.main import main
from hfpref.quickstart import (
    CAPTIONERS,
    DEFAULT_OUTPUT_DIRS,
    DEFAULT_SIZE,
    SIZES,
    STAGES,
    TRAINING_STAGES,
    parse_stage_config,
    stage_config_name,
    stage_configs,
)


ROOT = Path(__file__).resolve().parents[1]
QUICKSTART_CONFIGS = ROOT / "recipes" / "quickstart"

# Numbers that depend only on the seed; wall times and memory do not.
SEEDED_KEYS = [
    "clap_test_r1",
    "rm_heldout_accuracy_human",
    "rm_heldout_accuracy",
    "rl_win_rate",
    "rl_win_rate_challenging",
    "rl_win_rate_nonchallenging",
    "rm_win_rate",
    "baseline_mean_length",
    "rl_mean_length",
    "baseline_mean_reward",
    "rl_mean_reward",
    "challenging_test_clips",
    "preferences",
]


@pytest.mark.parametrize("captioner", CAPTIONERS)
@pytest.mark.parametrize("stage", sorted(TRAINING_STAGES))
def test_shipped_stage_config_is_the_quickstarts_own(stage, captioner):
    """
    recipes/quickstart/<recipe>/config_small.yaml (config_small_audio_llm.yaml) is what `make quickstart`
    (`hfpref quickstart --captioner audio-llm`) runs; regenerate with --write-configs.
    """
    out = DEFAULT_OUTPUT_DIRS[captioner]
    path = QUICKSTART_CONFIGS / TRAINING_STAGES[stage] / stage_config_name(captioner, stage)
    assert yaml.safe_load(path.read_text()) == stage_configs(out, DEFAULT_SIZE, 0, captioner)[stage]
    from importlib import import_module

    parser = import_module(f"hfpref.scripts.{TRAINING_STAGES[stage]}").make_parser()
    _, training_args, model_args = parser.parse_args_and_config(["--config", str(path)])
    folders = {"reward": "reward-model", "selection": "selection-reward-model"}
    assert training_args.output_dir == f"{out}/{folders.get(stage, stage)}"
    if stage == "sft":
        assert model_args.tiny_architecture == {"whisper": "whisper", "audio-llm": "qwen2_audio"}[captioner]


@pytest.mark.parametrize("captioner", CAPTIONERS)
@pytest.mark.parametrize("size", sorted(SIZES))
def test_every_size_parses_through_the_recipe_parsers(tmp_path, size, captioner):
    from hfpref.quickstart.stages import SELECTION_SEED_OFFSET

    for stage, config in stage_configs(tmp_path, size, seed=3, captioner=captioner).items():
        script_args, training_args, model_args = parse_stage_config(stage, config)
        # The selection reward model is the reward recipe from another seed (not the RL reward's members).
        assert training_args.seed == 3 + (SELECTION_SEED_OFFSET if stage == "selection" else 0)
        assert training_args.output_dir.startswith(str(tmp_path))
        if stage in ("sft", "rl"):  # the audio-LLM captioner trains its audio encoder too (built from scratch)
            assert model_args.freeze_audio_encoder is {"whisper": None, "audio-llm": False}[captioner]


def test_write_configs_command(tmp_path, capsys):
    assert main(["quickstart", "--write-configs", str(tmp_path)]) == 0
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.yaml"))
    expected = [
        f"{TRAINING_STAGES[stage]}/{stage_config_name(captioner, stage)}"
        for stage in TRAINING_STAGES
        for captioner in CAPTIONERS
    ]
    assert "reward_model/config_small_selection.yaml" in expected and len(set(expected)) == 2 * len(TRAINING_STAGES)
    assert written == sorted(expected)
    for path in written:
        assert (tmp_path / path).read_text() == (QUICKSTART_CONFIGS / path).read_text()


def test_unknown_size_and_captioner_are_refused(tmp_path):
    with pytest.raises(ValueError, match="size='huge' is not one of"):
        stage_configs(tmp_path, "huge")
    with pytest.raises(ValueError, match=r"captioner='qwen' is not one of \['whisper', 'audio-llm'\]"):
        stage_configs(tmp_path, "tiny", captioner="qwen")
    from hfpref.quickstart import run_quickstart

    with pytest.raises(ValueError, match="captioner='qwen' is not one of"):
        run_quickstart(tmp_path / "run", size="tiny", captioner="qwen")
    assert not (tmp_path / "run").exists()  # refused before anything is written


def _seeded(results: dict) -> dict:
    return {key: results[key] for key in SEEDED_KEYS}


def test_tiny_quickstart_end_to_end_reuses_stages_and_is_deterministic(tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    assert main(["quickstart", "--size", "tiny", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    for i, stage in enumerate(STAGES, start=1):
        assert f"[{i}/{len(STAGES)}] {stage}: " in printed
    results = json.loads((out / "results.json").read_text())
    for key in [
        "rm_heldout_accuracy_human",
        "rl_win_rate",
        "rl_win_rate_challenging",
        "rl_win_rate_nonchallenging",
        "baseline_mean_length",
        "rl_mean_length",
        "wall_seconds",
        "peak_rss_mb",
    ]:
        assert key in results, key
    assert 0 <= results["rm_heldout_accuracy_human"] <= 1 and results["peak_rss_mb"] > 0
    assert results["wall_seconds"] > 0
    prefs = results["preferences"]
    assert (
        prefs["greedy_wins"] + prefs["top_k_wins"] + prefs["ties"] == prefs["clips"] == SIZES["tiny"].preference_clips
    )
    # Synthetic negatives (one per training clip) train the reward model and are never held out.
    by_source = prefs["pairs_by_source"]
    assert by_source["test"]["synthetic_negative"] == 0 and by_source["train"]["synthetic_negative"] > 0
    assert by_source["train"]["correction"] + by_source["test"]["correction"] == prefs["both_fail"]
    held_out = results["rm_heldout_accuracy_by_source"]
    assert "synthetic_negative" not in held_out and set(held_out) <= {"baseline", "correction"}

    report = (out / "results.md").read_text()
    for section in ["## Stages", "Table 1", "Table 4", "## Against reward over-optimisation", "Table 2", "## Targets"]:
        assert section in report, section
    assert report.count("| synth-") == 5  # five caption examples
    for plot in results["plots"]:
        assert (out / plot).stat().st_size > 0
    assert str(out.parent) not in (out / "results.json").read_text()  # no machine-local path in the results
    # The RL reward is an ensemble (each member's held-out accuracy reported); the selection reward model is another.
    import torch
    from safetensors.torch import load_file

    from hfpref.quickstart.stages import REWARD_MEMBERS
    from hfpref.rewards import CLAPRewardModel

    ensemble = CLAPRewardModel.from_pretrained(str(out / "reward-model"))
    assert ensemble.config.num_members == REWARD_MEMBERS > 1 and ensemble.config.ensemble_lambda > 0
    assert len(results["rm_heldout_accuracy_human_members"]) == REWARD_MEMBERS
    assert CLAPRewardModel.from_pretrained(str(out / "selection-reward-model")).config.num_members == 1
    # RL kept the checkpoint the selection reward model scored highest on the validation clips, and saved it.
    scores = {int(step): value for step, value in results["rl_selection_rewards"].items()}
    assert len(scores) == stage_configs(out, "tiny", 0)["rl"]["max_steps"]  # tiny: an evaluation every step
    assert results["rl_selected_step"] == max(scores, key=lambda step: (scores[step], -step))
    kept = load_file(out / "rl" / f"checkpoint-{results['rl_selected_step']}" / "model.safetensors")
    assert all(torch.equal(kept[name], value) for name, value in load_file(out / "rl" / "model.safetensors").items())
    assert set(results["evaluation"]["validation"]) == {"all", "challenging", "non_challenging"}
    for model_dir in ["clap", "sft", "reward-model", "selection-reward-model", "rl"]:
        assert (out / model_dir / "model.safetensors").is_file(), model_dir
        assert (out / model_dir / "README.md").is_file(), model_dir
        assert any((out / model_dir / "runs").rglob("events.out.tfevents.*")), model_dir  # TensorBoard logs
    assert "`tensorboard --logdir .` in this folder" in report and str(out.parent) not in report  # no local path
    assert "reused" not in report.split("## Stages")[0]
    rows = [json.loads(line) for line in (out / "evaluation.jsonl").read_text().splitlines()]
    assert len(rows) == SIZES["tiny"].test_clips

    # A re-run reuses every finished stage and reports the same numbers.
    assert main(["quickstart", "--size", "tiny", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert all(f"{stage}: reused" in printed for stage in STAGES)
    rerun = json.loads((out / "results.json").read_text())
    assert _seeded(rerun) == _seeded(results)
    # The reused run reports what the stages took when they ran (and their memory), not this short invocation.
    assert rerun["stage_seconds_total"] == pytest.approx(results["stage_seconds_total"])
    assert rerun["peak_rss_mb"] >= results["peak_rss_mb"] and rerun["stages_reused"] == sorted(STAGES)
    header = (out / "results.md").read_text().split("## Stages")[0]
    assert (
        f"{results['stage_seconds_total'] / 60:.1f} min of stages" in header and "reused from an earlier run" in header
    )

    # A stage whose recorded config differs (as after editing it) runs again, and so does every stage reading it;
    # a stage whose outputs are gone runs again too.
    marker = json.loads((out / "stages" / "reward.json").read_text())
    marker["config"]["learning_rate"] = 123.0
    (out / "stages" / "reward.json").write_text(json.dumps(marker))
    (out / "sft" / "model.safetensors").unlink()
    assert main(["quickstart", "--size", "tiny", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "world: reused" in printed and "clap: reused" in printed
    assert not any(f"{stage}: reused" in printed for stage in ["sft", "preferences", "reward", "rl", "evaluate"])
    assert _seeded(json.loads((out / "results.json").read_text())) == _seeded(results)

    # The same seed in a fresh directory, every stage run again (--force), gives the same numbers.
    other = tmp_path / "again"
    assert main(["quickstart", "--size", "tiny", "--output-dir", str(other), "--force"]) == 0
    assert _seeded(json.loads((other / "results.json").read_text())) == _seeded(results)


def test_tiny_audio_llm_quickstart_trains_a_qwen2_audio_captioner_and_keeps_its_folder_apart(
    tmp_path, capsys, one_thread
):
    """
    `hfpref quickstart --captioner audio-llm`: the same eight stages with a Qwen2-Audio-architecture captioner trained
    from scratch (SFT, then RL with the reward model); every record names the captioner, and a Whisper run in the same
    folder is refused before it touches anything.
    """
    out = tmp_path / "run"
    argv = ["quickstart", "--captioner", "audio-llm", "--size", "tiny", "--seed", "0", "--output-dir", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert all(f"[{i}/{len(STAGES)}] {stage}: " in printed for i, stage in enumerate(STAGES, start=1))
    results = json.loads((out / "results.json").read_text())
    assert results["captioner"] == "audio-llm"
    for key in ("rl_win_rate_challenging", "rl_win_rate_nonchallenging"):
        assert key in results, key
    for model_dir in ("sft", "rl"):
        config = json.loads((out / model_dir / "config.json").read_text())
        assert config["architectures"] == ["Qwen2AudioForConditionalGeneration"], model_dir
        assert config["text_config"]["num_hidden_layers"] == 2
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    rl = Qwen2AudioForConditionalGeneration.from_pretrained(out / "rl")
    sft = Qwen2AudioForConditionalGeneration.from_pretrained(out / "sft")
    assert AutoProcessor.from_pretrained(out / "rl").tokenizer.eos_token == "<|im_end|>"
    # RL moved the SFT weights, the audio encoder's too (trained from scratch, it is not frozen).
    rl_weights, sft_weights = rl.state_dict(), sft.state_dict()
    moved = {name for name in rl_weights if not rl_weights[name].equal(sft_weights[name])}
    assert any("language_model" in name for name in moved) and any("audio_tower" in name for name in moved)
    records = {stage: json.loads((out / "stages" / f"{stage}.json").read_text()) for stage in STAGES}
    assert {r["captioner"] for r in records.values()} == {"audio-llm"}
    assert records["sft"]["config"]["tiny_architecture"] == "qwen2_audio"
    report = (out / "results.md").read_text()
    assert "Captioner Qwen2-Audio architecture" in report
    assert "## Baseline vs RL on the test clips, Qwen2-Audio architecture" in report

    # The Whisper quickstart in this folder is refused (stages and results untouched) unless --force replaces it.
    kept = [*(out / "stages").glob("*.json"), out / "results.json", out / "sft" / "model.safetensors"]
    before = {path: path.read_bytes() for path in kept}
    with pytest.raises(
        ValueError,
        match=re.escape(str(out))
        + " holds the quickstart of another captioner \\(stages of 'audio-llm': .*sft.*--force",
    ):
        main(["quickstart", "--size", "tiny", "--output-dir", str(out)])
    assert {path: path.read_bytes() for path in kept} == before
    from hfpref.quickstart.stages import check_captioner

    check_captioner(out, "whisper", force=True)
    assert DEFAULT_OUTPUT_DIRS == {"whisper": "outputs/quickstart", "audio-llm": "outputs/quickstart-audio-llm"}
    # A re-run of the same captioner reuses every stage.
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert all(f"{stage}: reused" in printed for stage in STAGES)


@pytest.mark.slow
def test_default_quickstart_meets_its_targets(tmp_path):
    from hfpref.quickstart import run_quickstart

    results = run_quickstart(tmp_path, size=DEFAULT_SIZE, seed=0)
    missed = {name: t["value"] for name, t in results["targets"].items() if not t["met"]}
    # The non-challenging bar of 0.45 is one on the mean over seeds: seed 0 alone gives 0.397 (README), above the floor
    # every seed must clear (0.35). Every other target, the reward model's 0.82 among them, is met and must stay met.
    assert set(missed) <= {"rl_win_rate_nonchallenging"}, missed
    assert results["targets"]["rl_win_rate_nonchallenging_floor"]["met"]


def test_seeds_are_summarised_with_mean_spread_and_per_seed_values(tmp_path, monkeypatch):
    """`hfpref quickstart --seeds`: each seed in its own folder, every figure as mean/std/min/max/per seed."""
    import hfpref.quickstart as quickstart
    import hfpref.quickstart.pipeline as pipeline

    def fake_run(output_dir, size, seed, force, captioner):
        # What one seed's run returns, with figures that differ by seed (the pipeline itself is tested above).
        results = {name: 0.5 + 0.1 * seed for name in quickstart.SEED_FIGURES}
        results["rm_heldout_accuracy_human"] = 0.7 + 0.1 * seed
        results["evaluation"] = {"weighted_deviation": {"reward": 10.0 + seed}}
        figure = {name: results[name.removesuffix("_floor")] for name in quickstart.TARGETS}
        results["targets"] = {
            name: {"description": name, "value": figure[name], "met": figure[name] >= bar}
            for name, bar in quickstart.TARGETS.items()
        }
        Path(output_dir).mkdir(parents=True)
        return results

    monkeypatch.setattr(pipeline, "run_quickstart", fake_run)
    assert main(["quickstart", "--size", "tiny", "--output-dir", str(tmp_path), "--seeds", "0", "1", "2"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["seeds"] == [0, 1, 2] and all((tmp_path / f"seed-{s}").is_dir() for s in (0, 1, 2))
    assert str(tmp_path) not in (tmp_path / "results.json").read_text()  # no machine-local path in the report
    assert results["per_seed_results"]["1"] == "seed-1/results.json"
    for key in ("rl_win_rate_challenging", "rl_win_rate_nonchallenging"):
        figure = results[key]
        assert figure["per_seed"] == pytest.approx({"0": 0.5, "1": 0.6, "2": 0.7})
        assert figure["mean"] == pytest.approx(0.6) and figure["std"] == pytest.approx(0.1)
        assert (figure["min"], figure["max"]) == pytest.approx((0.5, 0.7))
    assert results["figures"]["weighted_deviation/reward"]["mean"] == pytest.approx(11.0)
    assert results["rm_heldout_accuracy_human"]["mean"] == pytest.approx(0.8)
    # Non-challenging bar 0.45: met on the mean (0.6) and on every seed; the reward-model bar 0.82 on seed 2 only.
    target = results["targets"]["rl_win_rate_nonchallenging"]
    assert target["met_on_mean"] and target["met_on_every_seed"]
    # The floor every seed must clear (0.35) is judged on the same figure.
    floor = results["targets"]["rl_win_rate_nonchallenging_floor"]
    assert floor["mean"] == pytest.approx(0.6) and floor["met_on_every_seed"] and floor["met_on_mean"]
    rm_target = results["targets"]["rm_heldout_accuracy_human"]
    assert rm_target["met_per_seed"] == {"0": False, "1": False, "2": True} and not rm_target["met_on_mean"]
    report = (tmp_path / "results.md").read_text()
    assert "| rl_win_rate_nonchallenging | 0.600 +- 0.100 | 0.500 - 0.700 | 0.500 | 0.600 | 0.700 |" in report
    with pytest.raises(ValueError, match="must be distinct"):
        quickstart.run_quickstart_seeds(tmp_path / "again", seeds=[1, 1])


def test_a_stage_whose_output_was_truncated_or_changed_runs_again_naming_the_file(tmp_path, caplog):
    """A finished stage is reused only while every file it left holds its recorded sha256."""
    import hashlib

    from hfpref.quickstart.stages import _Stages

    runs = []

    def world():
        runs.append(1)
        (tmp_path / "world" / "train").mkdir(parents=True, exist_ok=True)
        (tmp_path / "world" / "dataset_dict.json").write_text('{"splits": ["train"]}')
        (tmp_path / "world" / "train" / "data-00000-of-00001.arrow").write_bytes(bytes(range(256)) * 4)
        (tmp_path / "world" / "runs").mkdir(exist_ok=True)
        (tmp_path / "world" / "runs" / "events").write_text("log")
        return {"summary": "a world"}

    def run():
        caplog.clear()
        with caplog.at_level("WARNING", logger="hfpref.quickstart.stages"):
            _Stages(tmp_path, force=False).run("world", {"clips": 4}, world)
        return caplog.text

    run()
    record = json.loads((tmp_path / "stages" / "world.json").read_text())
    data = tmp_path / "world" / "train" / "data-00000-of-00001.arrow"
    assert record["output_hashes"] == {
        "world/dataset_dict.json": hashlib.sha256(b'{"splits": ["train"]}').hexdigest(),
        "world/train/data-00000-of-00001.arrow": hashlib.sha256(bytes(range(256)) * 4).hexdigest(),
    }
    assert run() == "" and len(runs) == 1  # unchanged: reused
    # Control: a cache file a later stage added beside the data, and a log written on, leave the stage reused.
    (tmp_path / "world" / "train" / "cache-0123.arrow").write_bytes(b"derived")
    (tmp_path / "world" / "runs" / "events").write_text("log, flushed later")
    assert run() == "" and len(runs) == 1

    data.write_bytes(data.read_bytes()[:100])  # truncated
    assert f"quickstart stage 'world' runs again: {data} changed since the stage wrote it" in run()
    assert len(runs) == 2 and data.stat().st_size == 1024
    flipped = bytearray(data.read_bytes())
    flipped[500] ^= 0x01  # one bit, same size
    data.write_bytes(bytes(flipped))
    assert f"{data} changed since the stage wrote it" in run() and len(runs) == 3
    data.unlink()  # a file of the stage that is not in STAGE_OUTPUTS is gone
    assert f"{data} is gone" in run() and len(runs) == 4
    # A record of an older hfpref (no hashes) cannot vouch for its files: the stage runs again.
    record = json.loads((tmp_path / "stages" / "world.json").read_text())
    del record["output_hashes"]
    (tmp_path / "stages" / "world.json").write_text(json.dumps(record))
    assert "holds no content hashes" in run() and len(runs) == 5


def test_choices_are_made_on_validation_clips_and_the_test_clips_stay_those_of_the_world_without_them(tmp_path):
    """
    The world's validation clips are drawn after the test clips: train, preference and test hold exactly the clips a
    world without validation had; the SFT and RL runs evaluate on validation, never on test.
    """
    from datasets import load_from_disk

    from hfpref.data.synthetic.audio_world import make_world
    from hfpref.quickstart.stages import _world

    size = SIZES["tiny"]
    _world(tmp_path, size, seed=3)
    splits = load_from_disk(str(tmp_path / "world"))
    assert {name: len(split) for name, split in splits.items()} == {
        "train": 48, "preference": 32, "test": 24, "validation": 16, "clap": 16,
    }  # fmt: skip
    without = make_world(48 + 32 + 24, seed=3, clip_seconds=float(size.clip_seconds))
    assert splits["test"]["clip_id"] == without.select(range(80, 104))["clip_id"]
    assert splits["test"]["caption"] == without.select(range(80, 104))["caption"]
    assert not set(splits["validation"]["clip_id"]) & set(without["clip_id"])
    # The CLAP's own clips come after validation: new clips, that nothing but the CLAP reads.
    assert not set(splits["clap"]["clip_id"]) & (set(without["clip_id"]) | set(splits["validation"]["clip_id"]))
    configs = stage_configs(tmp_path, "small", 0)
    assert configs["sft"]["dataset_test_split"] == configs["rl"]["dataset_test_split"] == "validation"
    assert configs["clap"]["dataset_train_split"] == "train+clap"
    assert "clap" not in (configs["sft"]["dataset_train_split"], configs["rl"]["dataset_train_split"])
