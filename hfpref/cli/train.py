"""
`hfpref train <method>`: run `hfpref/scripts/<method>.py` under `accelerate launch`, as `trl <method>` runs
`trl/scripts/<method>.py` (TRL's `trl/cli/commands/training.py`).

The method's own parser reads `--config` and the script flags; whatever it does not know goes to `accelerate launch`
(`--num_processes 2`, `--mixed_precision bf16`, ...), and `--accelerate_config` names one of
`recipes/accelerate_configs/*.yaml` (or is a path to any accelerate config):

    hfpref train caption_sft --config recipes/caption_sft/config_synthetic.yaml --learning_rate 5e-4
    hfpref train caption_rl --config recipes/caption_rl/config_scst.yaml --accelerate_config multi_cpu
    hfpref train reward_model --config recipes/reward_model/config_tiny.yaml --accelerate_config zero3_cpu

`--num_processes N` alone (no config, no `--multi_gpu`) gets `--multi_gpu`, so that N processes really start.
"""

import sys
from pathlib import Path


# method -> (script module, what it trains). `tests/cli/test_train.py` checks it against hfpref/scripts/*.py.
TRAINING_METHODS = {
    "reward_model": (
        "hfpref.scripts.reward_model",
        "CLAP reward model on preference pairs (Bradley-Terry) or binary feedback (BCE/MSE)",
    ),
    "clap_contrastive": ("hfpref.scripts.clap_contrastive", "fit or domain-adapt a CLAP contrastively"),
    "caption_sft": ("hfpref.scripts.caption_sft", "supervised fine-tuning of an audio captioner"),
    "caption_rl": ("hfpref.scripts.caption_rl", "RL fine-tuning of a seq2seq captioner (SCST / RLOO / PPO-clip)"),
    "caption_grpo": ("hfpref.scripts.caption_grpo", "GRPO fine-tuning of a decoder-only captioner with TRL"),
    "caption_dpo": (
        "hfpref.scripts.caption_dpo",
        "DPO of an audio captioner (audio LLM or seq2seq) on (audio, chosen, rejected) caption pairs",
    ),
    "aligncap_kd": ("hfpref.scripts.aligncap_kd", "AlignCap KD: a LoRA student on speech tokens"),
    "aligncap_dpo": ("hfpref.scripts.aligncap_dpo", "AlignCap DPO on judged pairs of the KD student's captions"),
    "reward_weighted_diffusion": (
        "hfpref.scripts.reward_weighted_diffusion",
        "BATON reward-weighted fine-tuning of a text-to-audio diffusion model",
    ),
    "audibility_classifier": (
        "hfpref.scripts.audibility_classifier",
        "the audibility classifier that guides decoding",
    ),
}

# The named accelerate configs ship with the repository, beside the package in a checkout, not in the wheel.
ACCELERATE_CONFIGS_DIR = Path(__file__).resolve().parents[2] / "recipes" / "accelerate_configs"


def accelerate_config_names() -> list[str]:
    """The names `--accelerate_config` takes: the YAML files in `recipes/accelerate_configs/` of this checkout."""
    return sorted(path.stem for path in ACCELERATE_CONFIGS_DIR.glob("*.yaml"))


def resolve_accelerate_config(launch_args: list[str]) -> list[str]:
    """
    `launch_args` with `--accelerate_config NAME_OR_PATH` turned into accelerate's `--config_file PATH`.

    A path to a file is taken as it is; a name is looked up in `recipes/accelerate_configs/` of the hfpref checkout
    (an installed wheel has none, so there it must be a path).

    Example:

    ```python
    >>> resolve_accelerate_config(["--num_processes", "2"])
    ['--num_processes', '2']
    >>> args = resolve_accelerate_config(["--accelerate_config", "multi_cpu", "--num_processes", "2"])
    >>> args[0], Path(args[1]).name, args[2:]
    ('--config_file', 'multi_cpu.yaml', ['--num_processes', '2'])

    ```
    """
    args = list(launch_args)
    for index, arg in enumerate(args):
        if arg == "--accelerate_config":
            if index + 1 >= len(args):
                raise SystemExit("hfpref train: --accelerate_config needs a value: a config name or a YAML path")
            value, rest = args[index + 1], args[:index] + args[index + 2 :]
            break
        if arg.startswith("--accelerate_config="):
            value, rest = arg.partition("=")[2], args[:index] + args[index + 1 :]
            break
    else:
        return args
    if Path(value).is_file():
        return ["--config_file", value, *rest]
    names = accelerate_config_names()
    if value in names:
        return ["--config_file", str(ACCELERATE_CONFIGS_DIR / f"{value}.yaml"), *rest]
    if names:
        raise SystemExit(
            f"hfpref train: --accelerate_config {value!r} is neither a file nor one of {names} "
            f"(in {ACCELERATE_CONFIGS_DIR}); give one of those names or the path to an accelerate config YAML"
        )
    raise SystemExit(
        f"hfpref train: --accelerate_config {value!r} is not a file, and the named configs (cpu, ddp, multi_cpu, "
        "zero2, zero3, fsdp, zero2_cpu, zero3_cpu, fsdp2_cpu) ship with the hfpref repository (recipes/accelerate_configs/), not with the installed "
        "package; give the path to an accelerate config YAML, e.g. your copy of "
        f"recipes/accelerate_configs/{value}.yaml"
    )


# accelerate flags that pick a multi-process mode; without one, `--num_processes N` alone starts one process.
MULTI_PROCESS_FLAGS = ("--config_file", "--multi_gpu", "--use_deepspeed", "--use_fsdp", "--use_megatron_lm", "--tpu")


def multi_process_launch_args(launch_args: list[str]) -> list[str]:
    """
    `launch_args` that really start the processes they ask for: `accelerate launch --num_processes 2` without a
    multi-process mode runs the script once, alone, with half the planned global batch, so `--multi_gpu` is added
    (DDP; on a machine without a GPU hfpref runs it on the CPU over gloo); `--cpu` with several processes is refused
    (accelerate starts one process whatever `--num_processes` says).

    Example:

    ```python
    >>> multi_process_launch_args(["--num_processes", "2"])
    ['--multi_gpu', '--num_processes', '2']
    >>> multi_process_launch_args(["--config_file", "zero3_cpu.yaml", "--num_processes", "2"])
    ['--config_file', 'zero3_cpu.yaml', '--num_processes', '2']

    ```
    """
    processes = None
    for index, arg in enumerate(launch_args):
        if arg == "--num_processes" and index + 1 < len(launch_args):
            processes = launch_args[index + 1]
        elif arg.startswith("--num_processes="):
            processes = arg.partition("=")[2]
    try:
        processes = int(processes) if processes is not None else 1
    except ValueError:
        raise SystemExit(f"hfpref train: --num_processes {processes!r} is not a number") from None
    if processes < 2:
        return list(launch_args)
    if "--cpu" in launch_args or "--use_cpu" in launch_args:
        raise SystemExit(
            f"hfpref train: --cpu with --num_processes {processes}: accelerate then starts one process; drop --cpu "
            "(on a machine without a GPU hfpref runs the processes on the CPU over gloo), or use "
            "--accelerate_config multi_cpu"
        )
    if any(arg.split("=")[0] in MULTI_PROCESS_FLAGS for arg in launch_args):
        return list(launch_args)
    print(
        f"hfpref train: --num_processes {processes} without a multi-process mode: adding --multi_gpu (DDP) so that "
        f"{processes} processes start (accelerate would start one)",
        file=sys.stderr,
    )
    return ["--multi_gpu", *launch_args]


def _subtract_subsequence(items: list[str], subsequence: list[str]) -> list[str]:
    """`items` without the ordered `subsequence` (the flags the script's parser left for accelerate)."""
    wanted = iter(subsequence)
    current = next(wanted, None)
    kept = []
    for item in items:
        if current is not None and item == current:
            current = next(wanted, None)
        else:
            kept.append(item)
    return kept


def add_train_parser(subparsers):
    """Register `hfpref train` and one sub-command per method (their flags are the script's own)."""
    names = accelerate_config_names()
    configs = (
        f"one of {', '.join(names)} (recipes/accelerate_configs/) or a path"
        if names
        else "a path (the named configs ship with the repository, in recipes/accelerate_configs/)"
    )
    p = subparsers.add_parser(
        "train",
        help="launch a training method's script through accelerate (hfpref train <method> --config <yaml>)",
        description="Launch hfpref/scripts/<method>.py through `accelerate launch` with a recipe config and script "
        "flags (`hfpref train <method> --help` lists them); flags the script does not take go to accelerate "
        f"(--num_processes, --mixed_precision, ...). --accelerate_config: {configs}.",
        epilog="example: hfpref train caption_sft --config recipes/caption_sft/config_synthetic.yaml "
        "--accelerate_config cpu",
    )
    methods = p.add_subparsers(dest="method", title="methods", metavar="METHOD")
    for name, (_, summary) in TRAINING_METHODS.items():
        # add_help=False: `hfpref train <method> --help` reaches the script's parser.
        methods.add_parser(name, help=summary, add_help=False)
    p.set_defaults(func=cmd_train, script_flags=True, train_parser=p)
    return p


def script_argv(argv: list[str], method: str) -> list[str]:
    """What follows `train <method>` on the command line, untouched (as TRL's `argv_after`)."""
    start = argv.index(method, argv.index("train") + 1)
    return argv[start + 1 :]


def _config_path(argv: list[str]) -> str | None:
    """The value of `--config` in a script's arguments (`--config PATH` or `--config=PATH`), if any."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def cmd_train(args) -> int:
    if args.method is None:
        args.train_parser.print_help()
        return 0
    import importlib
    import subprocess

    from accelerate.commands.launch import launch_command, launch_command_parser
    from trl import TrlParser

    module = importlib.import_module(TRAINING_METHODS[args.method][0])
    parser = module.make_parser()
    parser.prog = f"hfpref train {args.method}"
    all_args = script_argv(args.argv, args.method)
    config_path = _config_path(all_args)
    if config_path is not None:
        # Repeated keys, YAML aliases and unknown keys are refused here, before TRL's loader renders anything.
        try:
            parser.check_config_file(config_path)
        except ValueError as error:
            raise SystemExit(f"hfpref train {args.method}: {error}") from None
    # TrlParser's own parse separates the config's leftover keys from the command line's (HfprefParser adds only
    # what the launched processes need); `--help` prints the script's flags and exits here.
    *_, config_remaining, cli_remaining = TrlParser.parse_args_and_config(
        parser, all_args, return_remaining_strings=True, separate_remaining_strings=True
    )
    if config_remaining:
        # TRL hands a config's unknown keys to accelerate; in hfpref an unknown key stops the run, so it stops here.
        keys = [key.removeprefix("--") for key in config_remaining[::2]]
        raise SystemExit(f"hfpref train {args.method}: the config has keys that {args.method} does not take: {keys}")
    launch_args = multi_process_launch_args(resolve_accelerate_config(cli_remaining))
    training_script_args = _subtract_subsequence(all_args, cli_remaining)
    accelerate_args = launch_command_parser().parse_args([*launch_args, module.__file__, *training_script_args])
    try:
        launch_command(accelerate_args)
    except subprocess.CalledProcessError as error:
        print(f"hfpref train {args.method}: the training script exited with code {error.returncode}", file=sys.stderr)
        return error.returncode
    return 0
