"""`hfpref synth` and `hfpref embed`: a synthetic audio world, and CLAP embedding columns added to a dataset."""

import json
import time

from .utils import positive_int


def add_synth_parser(subparsers):
    """Register `hfpref synth`."""
    p = subparsers.add_parser("synth", help="synthesize a procedural audio world with true captions")
    p.add_argument("--n-clips", type=positive_int, default=200, help="number of clips (at least 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampling-rate", type=positive_int, default=16000)
    p.add_argument("--output-dir", required=True, help="where to save the dataset (save_to_disk)")
    p.set_defaults(func=cmd_synth)
    return p


def add_embed_parser(subparsers):
    """Register `hfpref embed`."""
    p = subparsers.add_parser("embed", help="add CLAP embedding columns to a dataset, through the embedding cache")
    p.add_argument("--dataset", required=True, help="a saved dataset dir, a json/csv/parquet file, or a Hub name")
    p.add_argument("--split", default=None, help="the split to embed (needed when the dataset has several)")
    p.add_argument(
        "--model", required=True, help="CLAP checkpoint: a local dir or a Hub name (laion/clap-htsat-unfused)"
    )
    p.add_argument("--cache-dir", default=None, help="embedding cache dir (default: no cache)")
    p.add_argument("--audio-column", default="audio", help="audio column, or 'none'")
    p.add_argument("--text-columns", nargs="*", default=["caption"])
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--skip-bad-audio", action="store_true", help="drop undecodable rows (logged) instead of failing")
    p.add_argument("--output-dir", required=True)
    p.set_defaults(func=cmd_embed)
    return p


def cmd_synth(args) -> int:
    from ..data.synthetic.audio_world import make_world

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


def _load_one_split(name_or_path: str, split: str | None):
    from datasets import DatasetDict

    from ..data.loading import load_any_dataset

    dataset = load_any_dataset(name_or_path, split=split)
    if isinstance(dataset, DatasetDict) and len(dataset) == 1:
        dataset = next(iter(dataset.values()))
    elif isinstance(dataset, DatasetDict):
        raise SystemExit(f"hfpref embed: {name_or_path} has splits {list(dataset)}; pick one with --split")
    return dataset


def cmd_embed(args) -> int:
    from ..encoders.clap import ClapEmbedder
    from ..encoders.dataset import add_embeddings

    dataset = _load_one_split(args.dataset, args.split)
    embedder = ClapEmbedder.from_pretrained(args.model, cache_dir=args.cache_dir, batch_size=args.batch_size)
    start = time.perf_counter()
    dataset = add_embeddings(
        dataset,
        embedder,
        audio_column=None if args.audio_column == "none" else args.audio_column,
        text_columns=args.text_columns,
        skip_bad_audio=args.skip_bad_audio,
    )
    seconds = time.perf_counter() - start
    dataset.save_to_disk(args.output_dir)
    print(f"Embedded {len(dataset)} rows with {args.model} in {seconds:.1f}s into {args.output_dir}")
    print(f"Cache {args.cache_dir}: {json.dumps(embedder.cache.stats) if embedder.cache else 'disabled'}")
    return 0
