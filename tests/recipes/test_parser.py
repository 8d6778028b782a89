import pytest
import yaml

from hfpref.scripts import utils
from hfpref.scripts.caption_rl import make_parser


def _config(tmp_path, **extra):
    path = tmp_path / "rl.yaml"
    config = {"synthetic_clips": 8, "tiny_captioner": True, "output_dir": str(tmp_path / "out"), "report_to": "none"}
    path.write_text(yaml.safe_dump({**config, **extra}))
    return ["--config", str(path)]


def test_multiprocess_cpu_launch_turns_use_cpu_on(tmp_path, monkeypatch):
    # What `accelerate launch --multi_gpu --num_processes 2` on a CPU-only machine looks like to the parser.
    monkeypatch.setattr(utils, "cpu_multiprocess_launch", lambda: 2)
    _, training_args, _ = make_parser().parse_args_and_config(_config(tmp_path))
    assert training_args.use_cpu


def test_multiprocess_cpu_launch_refuses_use_cpu_false(tmp_path, monkeypatch):
    monkeypatch.setattr(utils, "cpu_multiprocess_launch", lambda: 2)
    with pytest.raises(ValueError, match="2 processes were launched .* each process would train alone"):
        make_parser().parse_args_and_config(_config(tmp_path, use_cpu=False))


def test_single_process_launch_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert utils.cpu_multiprocess_launch() == 0
    _, training_args, _ = make_parser().parse_args_and_config(_config(tmp_path))
    assert not training_args.use_cpu


def test_world_size_without_accelerator_is_detected(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setattr(utils, "accelerator_available", lambda: False)
    assert utils.cpu_multiprocess_launch() == 4
    monkeypatch.setattr(utils, "accelerator_available", lambda: True)
    assert utils.cpu_multiprocess_launch() == 0
