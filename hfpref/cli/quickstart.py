"""`hfpref quickstart`: the main job end to end on the synthetic world (what `make quickstart` runs)."""


def add_quickstart_parser(subparsers):
    """Register `hfpref quickstart`."""
    p = subparsers.add_parser("quickstart", help="run the main job end to end on the synthetic world")
    p.add_argument(
        "--output-dir",
        help="where every stage writes (default: outputs/quickstart, outputs/quickstart-audio-llm for --captioner "
        "audio-llm); a folder holds one captioner's run, running the other in it is refused unless --force",
    )
    p.add_argument(
        "--captioner",
        choices=["whisper", "audio-llm"],
        default="whisper",
        help="the captioner trained from scratch (SFT) and fine-tuned by RL: a 2-layer Whisper, or Qwen2-Audio's "
        "architecture (audio encoder + decoder-only LLM) cut to 2 layers each side",
    )
    p.add_argument(
        "--size",
        choices=["small", "medium", "tiny"],
        default="small",
        help="how big each stage is (tiny: a smoke test of every stage, too small to learn)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the world and of every stage")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="SEED",
        help="run once per seed (in OUTPUT_DIR/seed-<k>) and report every figure as mean, spread and per seed",
    )
    p.add_argument("--force", action="store_true", help="re-run every stage, even finished ones")
    p.add_argument(
        "--write-configs",
        metavar="DIR",
        help="only write each training stage's recipe config under DIR (recipes/quickstart) and exit: "
        "<recipe>/config_small.yaml, and <recipe>/config_small_audio_llm.yaml for --captioner audio-llm",
    )
    p.set_defaults(func=cmd_quickstart)
    return p


def cmd_quickstart(args) -> int:
    from ..quickstart import DEFAULT_OUTPUT_DIRS, run_quickstart, run_quickstart_seeds, write_stage_configs

    if args.write_configs:
        for path in write_stage_configs(args.write_configs, output_dir=args.output_dir, seed=args.seed):
            print(path)
        return 0
    output_dir = args.output_dir or DEFAULT_OUTPUT_DIRS[args.captioner]
    run = dict(output_dir=output_dir, size=args.size, force=args.force, captioner=args.captioner)
    if args.seeds:
        results = run_quickstart_seeds(seeds=args.seeds, **run)
        missed = [name for name, target in results["targets"].items() if not target["met_on_mean"]]
    else:
        results = run_quickstart(seed=args.seed, **run)
        missed = [name for name, target in results["targets"].items() if not target["met"]]
    if missed:
        print(f"targets not met: {missed} (see {output_dir}/results.md)")
    return 0
