"""The `hfpref` command line."""

import argparse
import json
import logging
import sys
import time


def _positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1, with a message that says so."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _load_one_split(name_or_path: str, split: str | None):
    from datasets import DatasetDict

    from hfpref.data.loading import load_any_dataset

    ds = load_any_dataset(name_or_path, split=split)
    if isinstance(ds, DatasetDict) and len(ds) == 1:
        ds = next(iter(ds.values()))
    elif isinstance(ds, DatasetDict):
        raise SystemExit(f"hfpref: {name_or_path} has splits {list(ds)}; pick one with --split")
    return ds


def cmd_synth(args) -> int:
    from hfpref.data.synthetic.audio_world import make_world

    world = make_world(args.n_clips, seed=args.seed, sampling_rate=args.sampling_rate)
    world.save_to_disk(args.output_dir)
    counts: dict[str, int] = {}
    for events in world["events"]:
        for event in events:
            counts[event] = counts.get(event, 0) + 1
    print(f"Synthesized {len(world)} clips at {args.sampling_rate} Hz (seed {args.seed}) into {args.output_dir}")
    print("Event counts: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    print(f"Example: {world[0]['clip_id']}: {world[0]['caption']!r}")
    return 0


def cmd_embed(args) -> int:
    from hfpref.encoders.clap import ClapEmbedder
    from hfpref.encoders.dataset import add_embeddings

    ds = _load_one_split(args.dataset, args.split)
    embedder = ClapEmbedder.from_pretrained(args.model, cache_dir=args.cache_dir, batch_size=args.batch_size)
    start = time.perf_counter()
    ds = add_embeddings(
        ds,
        embedder,
        audio_column=None if args.audio_column == "none" else args.audio_column,
        text_columns=args.text_columns,
        skip_bad_audio=args.skip_bad_audio,
    )
    seconds = time.perf_counter() - start
    ds.save_to_disk(args.output_dir)
    print(f"Embedded {len(ds)} rows with {args.model} in {seconds:.1f}s into {args.output_dir}")
    print(f"Cache {args.cache_dir}: {json.dumps(embedder.cache.stats) if embedder.cache else 'disabled'}")
    return 0


def cmd_quickstart(args) -> int:
    from hfpref.quickstart import run_quickstart, write_stage_configs

    if args.write_configs:
        for path in write_stage_configs(args.write_configs, output_dir=args.output_dir, seed=args.seed):
            print(path)
        return 0
    if args.seeds:
        from hfpref.quickstart import run_quickstart_seeds

        results = run_quickstart_seeds(output_dir=args.output_dir, seeds=args.seeds, size=args.size, force=args.force)
        missed = [name for name, target in results["targets"].items() if not target["met_on_mean"]]
    else:
        results = run_quickstart(output_dir=args.output_dir, size=args.size, seed=args.seed, force=args.force)
        missed = [name for name, target in results["targets"].items() if not target["met"]]
    if missed:
        print(f"targets not met: {missed} (see {args.output_dir}/results.md)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from hfpref.cli.audibility_data import add_audibility_data_parser
    from hfpref.cli.metrics import add_agreement_parser, add_eval_parser
    from hfpref.cli.pairs import add_pairs_parser
    from hfpref.cli.tta import add_tta_generate_parser

    parser = argparse.ArgumentParser(
        prog="hfpref",
        description="Preference training for audio-language models (reward models, RL fine-tuning, DPO).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="synthesize a procedural audio world with true captions")
    p.add_argument("--n-clips", type=_positive_int, default=200, help="number of clips (at least 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampling-rate", type=_positive_int, default=16000)
    p.add_argument("--output-dir", required=True, help="where to save the dataset (save_to_disk)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("embed", help="add CLAP embedding columns to a dataset, through the embedding cache")
    p.add_argument("--dataset", required=True, help="a saved dataset dir, a json/csv/parquet file, or a Hub name")
    p.add_argument("--split", default=None)
    p.add_argument(
        "--model", required=True, help="CLAP checkpoint: a local dir or a Hub name (laion/clap-htsat-unfused)"
    )
    p.add_argument("--cache-dir", default=None, help="embedding cache dir (default: no cache)")
    p.add_argument("--audio-column", default="audio", help="audio column, or 'none'")
    p.add_argument("--text-columns", nargs="*", default=["caption"])
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.add_argument("--skip-bad-audio", action="store_true", help="drop undecodable rows (logged) instead of failing")
    p.add_argument("--output-dir", required=True)
    p.set_defaults(func=cmd_embed)

    add_eval_parser(sub)
    add_pairs_parser(sub)
    add_audibility_data_parser(sub)
    add_agreement_parser(sub)
    add_tta_generate_parser(sub)

    from hfpref.cli.annotate import add_annotate_parser

    add_annotate_parser(sub)

    p = sub.add_parser("quickstart", help="run the main job end to end on the synthetic world")
    p.add_argument("--output-dir", default="outputs/quickstart")
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
        help="only write each training stage's recipe config under DIR (recipes/quickstart) and exit",
    )
    p.set_defaults(func=cmd_quickstart)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
