"""
The parser's part of multi-process launches (hfpref.utils.distributed): each engine accelerate was configured for
gets the arguments it needs on a machine without a GPU, a config that would silently turn it into another engine is
refused, and a launch that asked for more processes than it started is refused. The launches themselves are in
test_distributed.py.
"""

import pytest
import yaml

from hfpref.scripts.caption_rl import make_parser
from hfpref.utils import distributed
from hfpref.utils.distributed import Engine


def _config(tmp_path, **extra):
    path = tmp_path / "rl.yaml"
    config = {"synthetic_clips": 8, "tiny_captioner": True, "output_dir": str(tmp_path / "out"), "report_to": "none"}
    path.write_text(yaml.safe_dump({**config, **extra}))
    return ["--config", str(path)]


@pytest.fixture
def no_gpu_launch(monkeypatch):
    """What a launch of `engine` on 2 processes of a machine without a GPU looks like (no process group is started)."""

    def launch(engine: Engine):
        monkeypatch.setattr(distributed, "accelerator_available", lambda: False)
        monkeypatch.setattr(distributed, "_launcher_requested_processes", lambda: None)
        monkeypatch.setattr(Engine, "from_env", classmethod(lambda cls: engine))
        monkeypatch.setattr(distributed, "_teach_accelerate_fsdp_on_cpu", lambda: None)
        monkeypatch.setattr("hfpref.scripts.utils.announce_launch", lambda method, args: None)

    return launch


def test_ddp_launch_without_gpu_turns_use_cpu_on(tmp_path, no_gpu_launch):
    no_gpu_launch(Engine("ddp", 2))
    _, training_args, _ = make_parser().parse_args_and_config(_config(tmp_path))
    assert training_args.use_cpu


def test_ddp_launch_refuses_use_cpu_false(tmp_path, no_gpu_launch):
    no_gpu_launch(Engine("ddp", 2))
    with pytest.raises(ValueError, match="2 processes were launched .* each process would train alone"):
        make_parser().parse_args_and_config(_config(tmp_path, use_cpu=False))


@pytest.mark.parametrize("engine", [Engine("deepspeed", 2, zero_stage=3), Engine("fsdp", 2, fsdp_version=2)])
def test_sharded_engines_without_gpu_run_on_gloo_not_as_ddp(no_gpu_launch, monkeypatch, engine):
    # Parsing a full config would start the 2-process group; the launches are in test_distributed.py.
    from types import SimpleNamespace

    from hfpref.scripts.utils import check_engine_arguments

    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    no_gpu_launch(engine)
    needed = distributed.prepare_launch(engine)
    # use_cpu would make accelerate run plain DDP; gloo is the CPU backend the engine runs on.
    assert needed == {"ddp_backend": "gloo"}
    if engine.kind == "deepspeed":
        import os

        assert os.environ["DS_ACCELERATOR"] == "cpu"
    check_engine_arguments(SimpleNamespace(use_cpu=False, ddp_backend="gloo"), engine, needed)
    with pytest.raises(ValueError, match=f"runs {engine.name} on 2 processes, but the config sets use_cpu: true"):
        check_engine_arguments(SimpleNamespace(use_cpu=True, ddp_backend="gloo"), engine, needed)
    with pytest.raises(ValueError, match="ddp_backend='nccl' on a machine without a GPU"):
        check_engine_arguments(SimpleNamespace(use_cpu=False, ddp_backend="nccl"), engine, needed)


def test_fsdp1_is_refused_on_cpu(no_gpu_launch):
    no_gpu_launch(Engine("fsdp", 2, fsdp_version=1))
    with pytest.raises(RuntimeError, match="FSDP1 does not run on CPU; use fsdp_version: 2"):
        distributed.prepare_launch(Engine("fsdp", 2, fsdp_version=1))


def test_single_process_launch_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(distributed, "_launcher_requested_processes", lambda: None)
    assert distributed.prepare_launch() == {}
    _, training_args, _ = make_parser().parse_args_and_config(_config(tmp_path))
    assert not training_args.use_cpu


def test_gpu_machines_are_left_to_accelerate(monkeypatch):
    monkeypatch.setattr(distributed, "accelerator_available", lambda: True)
    monkeypatch.setattr(distributed, "_launcher_requested_processes", lambda: None)
    for engine in (Engine("ddp", 8), Engine("deepspeed", 8, zero_stage=3), Engine("fsdp", 8, fsdp_version=2)):
        assert distributed.prepare_launch(engine) == {}


def test_a_launch_that_started_fewer_processes_than_asked_is_refused(monkeypatch):
    # `accelerate launch --num_processes 2 recipe.py` without --multi_gpu (or with --cpu) starts the script once.
    monkeypatch.setattr(distributed, "_launcher_requested_processes", lambda: 2)
    with pytest.raises(RuntimeError, match="--num_processes 2` started 1 process"):
        distributed.prepare_launch(Engine("single", 1))
    distributed.check_launch(Engine("ddp", 2))  # as asked: fine


def test_launcher_arguments_are_read_from_the_parent_command_line(monkeypatch, tmp_path):
    cmdline = tmp_path / "cmdline"
    monkeypatch.setattr(distributed.os, "getppid", lambda: 4242)
    real = distributed.Path

    def fake_path(path):
        return cmdline if str(path) == "/proc/4242/cmdline" else real(path)

    monkeypatch.setattr(distributed, "Path", fake_path)
    cmdline.write_bytes(b"/venv/bin/python\0/venv/bin/accelerate\0launch\0--num_processes\x002\0recipe.py\0")
    assert distributed._launcher_requested_processes() == 2
    cmdline.write_bytes(b"/venv/bin/accelerate\0launch\0--cpu\0--num_processes=4\0recipe.py\0")
    assert distributed._launcher_requested_processes() == 4
    cmdline.write_bytes(b"/venv/bin/python\0-m\0accelerate.commands.launch\0--num_processes\x003\0recipe.py\0")
    assert distributed._launcher_requested_processes() == 3
    cmdline.write_bytes(b"/venv/bin/python\0/venv/bin/hfpref\0train\0reward_model\0--num_processes\x002\0")
    assert distributed._launcher_requested_processes() == 2
    cmdline.write_bytes(b"/usr/bin/python\0-m\0pytest\0--num_processes\x002\0")  # not accelerate
    assert distributed._launcher_requested_processes() is None


def test_engine_is_read_from_accelerates_environment(monkeypatch):
    for key in ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP", "ACCELERATE_DEEPSPEED_ZERO_STAGE", "FSDP_VERSION"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert Engine.from_env() == Engine("ddp", 2)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    assert Engine.from_env().name == "deepspeed zero3"
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    assert Engine.from_env().name == "fsdp2"


def test_hfpref_train_starts_the_processes_it_asks_for():
    from hfpref.cli.train import multi_process_launch_args

    assert multi_process_launch_args(["--num_processes", "2"]) == ["--multi_gpu", "--num_processes", "2"]
    assert multi_process_launch_args(["--num_processes=1"]) == ["--num_processes=1"]
    with_config = ["--config_file", "recipes/accelerate_configs/zero3_cpu.yaml", "--num_processes", "2"]
    assert multi_process_launch_args(with_config) == with_config
    with pytest.raises(SystemExit, match="--cpu with --num_processes 2: accelerate then starts one process"):
        multi_process_launch_args(["--cpu", "--num_processes", "2"])


# The --config YAML: read strictly before TRL reads it (TRL keeps a repeated key's last value and renders unknown keys).


def _yaml(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return ["--config", str(path)]


def _base_yaml(tmp_path):
    return f"synthetic_clips: 8\ntiny_captioner: true\noutput_dir: {tmp_path / 'out'}\nreport_to: none\n"


def test_a_key_written_twice_is_refused_with_its_lines(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argv = _yaml(tmp_path, _base_yaml(tmp_path) + "learning_rate: 1.0e-5\nseed: 3\nlearning_rate: 1.0\n")
    with pytest.raises(
        ValueError, match=r"recipe.yaml:7: the key 'learning_rate' is written twice \(first at line 5\)"
    ):
        make_parser().parse_args_and_config(argv)
    # The same keys once each parse, and the value is the one written.
    argv = _yaml(tmp_path, _base_yaml(tmp_path) + "learning_rate: 1.0e-5\nseed: 3\n")
    _, training_args, _ = make_parser().parse_args_and_config(argv)
    assert training_args.learning_rate == 1.0e-5 and training_args.seed == 3


def test_a_key_written_twice_in_a_nested_mapping_is_refused(tmp_path):
    argv = _yaml(tmp_path, _base_yaml(tmp_path) + "env:\n  A: 1\n  A: 2\n")
    with pytest.raises(ValueError, match=r"recipe.yaml:7: the key 'A' is written twice \(first at line 6\)"):
        make_parser().parse_args_and_config(argv)


def test_unknown_keys_are_refused_with_their_lines_and_the_option_they_may_mean(tmp_path):
    argv = _yaml(tmp_path, _base_yaml(tmp_path) + "learnig_rate: 0.1\nnot_an_option: 2\n")
    with pytest.raises(
        ValueError, match=r"'learnig_rate' \(line 5, did you mean 'learning_rate'\?\), 'not_an_option' "
    ):
        make_parser().parse_args_and_config(argv)


BILLION_LAUGHS = """
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    import time

    argv = _yaml(tmp_path, _base_yaml(tmp_path) + BILLION_LAUGHS)
    start = time.perf_counter()
    with pytest.raises(
        ValueError, match=r"recipe.yaml:7: the YAML alias \*a: recipe configs take no anchors or alias"
    ):
        make_parser().parse_args_and_config(argv)
    # Rendering the last key would write 9^9 (387M) strings; refused in well under a second.
    assert time.perf_counter() - start < 1.0


def test_a_bomb_read_by_trls_own_loader_is_refused_before_it_is_rendered(tmp_path):
    """`hfpref train` parses through `TrlParser.parse_args_and_config(parser, ...)`, with TRL's loader."""
    import time

    from trl import TrlParser

    from hfpref.scripts.utils import expanded_size

    # The count, by hand: a list of 9 strings is 10 values, each level 1 + 9 x the level below: e holds 66,430, f
    # 597,871 (the first over the cap).
    shared = ["lol"] * 9
    assert expanded_size(shared) == 10 and expanded_size([shared] * 9) == 1 + 9 * 10
    assert expanded_size({"k": [shared, shared]}) == 1 + 1 + (1 + 2 * 10)
    level = shared  # a
    for _ in range(4):  # b, c, d, e
        level = [level] * 9
    assert expanded_size(level) == 66_430 and expanded_size([level] * 9) == 100_001  # f: counting stops at the cap
    recursive = []
    recursive.append(recursive)
    with pytest.raises(ValueError, match="contains itself"):
        expanded_size(recursive)
    # Then the bomb (after the counts, so that a wrong count fails them instead of rendering it).
    argv = _yaml(tmp_path, _base_yaml(tmp_path) + BILLION_LAUGHS)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"the config key 'f' expands to more than 100000 values"):
        TrlParser.parse_args_and_config(make_parser(), argv, return_remaining_strings=True)
    assert time.perf_counter() - start < 1.0


def test_a_parsed_recipe_ends_its_process_group_at_exit(monkeypatch):
    """A recipe's parse registers `end_process_group`, which destroys a live gloo group (and is a no-op without one)."""
    import atexit

    import torch.distributed as dist

    from hfpref.scripts.reward_model import make_parser
    from hfpref.scripts.utils import end_process_group

    registered = []
    monkeypatch.setattr(atexit, "register", registered.append)
    make_parser().parse_args_and_config(["--output_dir", "unused", "--synthetic_clips", "8"])
    assert registered == [end_process_group]

    end_process_group()  # nothing to end
    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    assert dist.is_initialized()
    end_process_group()
    assert not dist.is_initialized()
