"""`hfpref train <method>`: the method table, the launch through accelerate, and a real run in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hfpref.cli import train
from hfpref.cli.main import main
from hfpref.cli.train import TRAINING_METHODS, resolve_accelerate_config


ROOT = Path(__file__).resolve().parents[2]
ACCELERATE_CONFIGS = ["cpu", "ddp", "multi_cpu", "zero2", "zero3", "fsdp"]
TINY_SFT = {
    "synthetic_clips": 8,
    "tiny_captioner": True,
    "tiny_clip_seconds": 1.0,
    "max_steps": 3,
    "per_device_train_batch_size": 2,
    "per_device_eval_batch_size": 4,
    "max_caption_tokens": 16,
    "eval_strategy": "no",
    "save_strategy": "no",
    "report_to": "none",
    "disable_tqdm": True,
    "use_cpu": True,
}


def _write_config(path: Path, **config) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def test_method_table_lists_every_script():
    scripts = {path.stem for path in (ROOT / "hfpref" / "scripts").glob("*.py")} - {"__init__", "utils"}
    assert set(TRAINING_METHODS) == scripts
    assert {name: module for name, (module, _) in TRAINING_METHODS.items()} == {
        name: f"hfpref.scripts.{name}" for name in scripts
    }


def test_train_help_lists_the_methods(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["train", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in TRAINING_METHODS)
    assert all(name in out for name in ACCELERATE_CONFIGS)
    # Without a method: the same help, not an error.
    assert main(["train"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: hfpref train") and all(name in out for name in TRAINING_METHODS)


def test_unknown_method_names_the_methods(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["train", "nope", "--config", "x.yaml"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and all(name in err for name in TRAINING_METHODS)


def test_other_commands_still_refuse_unknown_flags(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["synth", "--output-dir", str(tmp_path / "world"), "--max_steps", "2"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --max_steps 2" in capsys.readouterr().err


@pytest.mark.parametrize("name", ACCELERATE_CONFIGS)
def test_accelerate_config_names_resolve_to_the_repository_configs(name):
    launch_args = resolve_accelerate_config(["--num_processes", "2", "--accelerate_config", name])
    assert launch_args == ["--config_file", str(ROOT / "recipes" / "accelerate_configs" / f"{name}.yaml")] + [
        "--num_processes",
        "2",
    ]
    assert resolve_accelerate_config([f"--accelerate_config={name}"])[1] == launch_args[1]


def test_accelerate_config_paths_and_bad_names(tmp_path, monkeypatch):
    path = _write_config(tmp_path / "mine.yaml", distributed_type="NO")
    assert resolve_accelerate_config(["--accelerate_config", str(path)]) == ["--config_file", str(path)]
    with pytest.raises(SystemExit, match=r"'zero4' is neither a file nor one of \['cpu', 'ddp', 'fsdp'"):
        resolve_accelerate_config(["--accelerate_config", "zero4"])
    with pytest.raises(SystemExit, match="needs a value"):
        resolve_accelerate_config(["--accelerate_config"])
    # Installed from a wheel: no recipes/ beside the package, so only a path will do, and the message says so.
    monkeypatch.setattr(train, "ACCELERATE_CONFIGS_DIR", tmp_path / "no-checkout")
    with pytest.raises(SystemExit, match=r"ship with the hfpref repository .* not with the installed package"):
        resolve_accelerate_config(["--accelerate_config", "zero2"])
    assert resolve_accelerate_config(["--accelerate_config", str(path)]) == ["--config_file", str(path)]


def test_launch_arguments_are_split_as_trl_splits_them(tmp_path, monkeypatch):
    import accelerate.commands.launch

    launched = []
    monkeypatch.setattr(accelerate.commands.launch, "launch_command", launched.append)
    config = _write_config(tmp_path / "sft.yaml", **TINY_SFT, output_dir=str(tmp_path / "out"))
    script_flags = ["--config", str(config), "--learning_rate", "0.01", "--tiny_clip_seconds", "2.0"]
    argv = ["train", "caption_sft", *script_flags[:2], "--accelerate_config", "multi_cpu", *script_flags[2:]]
    assert main([*argv, "--num_processes", "2", "--main_process_port", "29600"]) == 0
    (args,) = launched
    assert Path(args.training_script) == ROOT / "hfpref" / "scripts" / "caption_sft.py"
    assert args.training_script_args == script_flags  # in their order, untouched
    assert Path(args.config_file) == ROOT / "recipes" / "accelerate_configs" / "multi_cpu.yaml"
    assert (args.num_processes, args.main_process_port) == (2, 29600)


def test_unknown_config_key_stops_before_the_launch(tmp_path, monkeypatch):
    import accelerate.commands.launch

    launched = []
    monkeypatch.setattr(accelerate.commands.launch, "launch_command", launched.append)
    config = _write_config(tmp_path / "sft.yaml", **TINY_SFT, output_dir=str(tmp_path / "out"), learnin_rate=0.1)
    with pytest.raises(
        SystemExit, match=r"takes no config keys 'learnin_rate' \(line \d+, did you mean 'learning_rate'"
    ):
        main(["train", "caption_sft", "--config", str(config)])
    # A key written twice (YAML keeps the last silently) and an alias stop here too, naming the lines.
    text = config.read_text().replace("learnin_rate: 0.1\n", "")
    (tmp_path / "twice.yaml").write_text(text + "learning_rate: 0.1\nlearning_rate: 0.2\n")
    with pytest.raises(SystemExit, match=r"twice.yaml:\d+: the key 'learning_rate' is written twice"):
        main(["train", "caption_sft", f"--config={tmp_path / 'twice.yaml'}"])
    (tmp_path / "alias.yaml").write_text(text + "logging_dir: &a out\nrun_name: *a\n")
    with pytest.raises(SystemExit, match=r"alias"):
        main(["train", "caption_sft", "--config", str(tmp_path / "alias.yaml")])
    assert launched == []


def test_train_runs_the_script_under_accelerate(tmp_path):
    out = tmp_path / "sft"
    # The config asks for 3 steps and saves nothing; the command line's flags override it.
    config = _write_config(tmp_path / "sft.yaml", **TINY_SFT, output_dir=str(out))
    command = [sys.executable, "-m", "hfpref.cli", "train", "caption_sft", "--config", str(config)]
    command += ["--accelerate_config", "cpu", "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    assert (out / "model.safetensors").is_file()
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == state["max_steps"] == 2


def test_bare_hfpref_prints_the_help():
    done = subprocess.run([sys.executable, "-m", "hfpref.cli"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: hfpref") and "train" in done.stdout and done.stderr == ""


def test_help_imports_no_trainer():
    """
    `hfpref --help` loads no training code: no TRL, no trainer or script module, no diffusers. (torch and transformers
    are loaded: `import hfpref` registers the reward model with transformers' Auto classes, and transformers 5 imports
    torch for any config class.)
    """
    code = (
        "import json, sys\n"
        "from hfpref.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as exited:\n"
        "    assert exited.code == 0\n"
        "heavy = ('trl', 'diffusers', 'peft', 'hfpref.trainers', 'hfpref.scripts', 'hfpref.quickstart.stages')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []
