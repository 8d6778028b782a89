"""
The reward-model, SFT and RL recipes as data-parallel jobs of 2 CPU processes (gloo), launched exactly as the README
says (`accelerate launch --config_file recipes/accelerate_configs/multi_cpu.yaml ...`): both processes join one process
group, end with identical weights, and the result equals a 1-process run at the same global batch.

The 1-process run takes the same global batch as 2 micro-batches of gradient accumulation: the data order is the
same (one seeded sampler; process k of 2 takes every other per-device batch, accumulation step k takes the same
ones), and so are the RL samples (each micro-batch's sampling seed depends on the step and on
`process_index * gradient_accumulation_steps + micro-step` only). The runs use SGD so the weights are linear in the
summed gradients: the only difference left is the order of float additions (an all-reduce mean vs accumulated
halves), ~1e-7 relative per step, so 1e-5 absolute on these weights is far above it yet far below the training
updates (checked to be > 1e-3).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file


ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tests" / "recipes" / "distributed_runner.py"
CONFIGS = ROOT / "recipes" / "accelerate_configs"
COMMON = {
    "save_strategy": "no",
    "eval_strategy": "no",
    "report_to": "none",
    "disable_tqdm": True,
    "seed": 0,
    "optim": "sgd",
    "dataloader_drop_last": True,
    "max_grad_norm": 0.0,
    "lr_scheduler_type": "constant",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path: Path, script: str, config: dict, processes: int) -> list[dict]:
    """Run `script` under accelerate with `processes` CPU processes; returns each process's view and weights."""
    out = Path(config["output_dir"])
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    launch_config = CONFIGS / ("multi_cpu.yaml" if processes > 1 else "cpu.yaml")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(launch_config)]
    if processes > 1:
        command += ["--num_processes", str(processes), "--main_process_port", str(_free_port())]
    command += [str(RUNNER), script, "--config", str(path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    ranks = []
    for rank in range(processes):
        view = json.loads((out / f"rank{rank}.json").read_text())
        view["weights"] = load_file(str(out / f"rank{rank}.safetensors"))
        view["start"] = load_file(str(out / f"rank{rank}-start.safetensors"))
        ranks.append(view)
    return ranks


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _check(two: list[dict], one: list[dict]):
    assert [r["world_size"] for r in two] == [2, 2] and [r["rank"] for r in two] == [0, 1]
    assert {r["backend"] for r in two} == {"gloo"}
    assert one[0]["world_size"] == 1 and one[0]["gradient_accumulation_steps"] == 2
    assert two[0]["global_step"] == one[0]["global_step"] > 0
    assert _max_difference(two[0]["weights"], two[1]["weights"]) == 0.0  # both ranks hold the same model
    assert _max_difference(two[0]["weights"], one[0]["weights"]) < 1e-5
    assert _max_difference(two[0]["start"], one[0]["start"]) == 0.0  # same initial weights
    moved = _max_difference(one[0]["weights"], one[0]["start"])
    assert moved > 1e-3, moved  # the runs did train, far beyond the tolerance


def _pair(tmp_path, script, config, per_device):
    two = _launch(
        tmp_path,
        script,
        {**config, "per_device_train_batch_size": per_device, "output_dir": str(tmp_path / f"{script}-2proc")},
        processes=2,
    )
    one = _launch(
        tmp_path,
        script,
        {
            **config,
            "per_device_train_batch_size": per_device,
            "gradient_accumulation_steps": 2,
            "output_dir": str(tmp_path / f"{script}-1proc"),
        },
        processes=1,
    )
    return two, one


@pytest.fixture(scope="module")
def sft_runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("sft")
    config = {
        **COMMON,
        "synthetic_clips": 48,
        "tiny_captioner": True,
        "tiny_clip_seconds": 2.0,
        "max_steps": 3,
        "learning_rate": 0.5,
        "per_device_eval_batch_size": 8,
        "max_caption_tokens": 16,
    }
    return (*_pair(tmp_path, "caption_sft", config, per_device=4), config)


def test_sft_recipe_on_two_processes(sft_runs):
    two, one, config = sft_runs
    _check(two, one)


def test_rl_recipe_on_two_processes(tmp_path, sft_runs):
    _, sft, _ = sft_runs
    sft_dir = Path(sft[0]["output_dir"])
    config = {
        **COMMON,
        "synthetic_clips": 48,
        "model_name_or_path": str(sft_dir),
        "reward_funcs": ["cider_d"],
        "length_penalty_alpha": 0.4,
        "loss_type": "scst",
        "num_samples": 2,
        "temperature": 0.7,
        "max_steps": 2,
        "max_new_tokens": 10,
        "learning_rate": 0.05,
        "per_device_eval_batch_size": 8,
    }
    two, one = _pair(tmp_path, "caption_rl", config, per_device=4)
    _check(two, one)
    saved = load_file(str(sft_dir / "model.safetensors"))  # RL began at the SFT result (tied weights saved once)
    torch.testing.assert_close({k: one[0]["start"][k] for k in saved}, saved)


def test_reward_recipe_on_two_processes(tmp_path, tiny_clap_dir):
    config = {
        **COMMON,
        "synthetic_clips": 40,
        "synthetic_negatives": True,
        "clap_model_name_or_path": str(tiny_clap_dir),
        "loss_type": "bt",
        "hidden_sizes": [32, 8],
        "dropout": 0.0,
        "max_steps": 3,
        "learning_rate": 0.5,
    }
    two, one = _pair(tmp_path, "reward_model", config, per_device=8)
    _check(two, one)
