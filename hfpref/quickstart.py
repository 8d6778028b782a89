"""The main job, on the offline synthetic world: what `make quickstart` runs.

Today it synthesizes the world, builds a tiny CLAP, embeds every clip and caption
through the on-disk cache (cold, then warm), builds pairwise preference data with
synthetic negatives judged by the world's oracle, and prints a summary. Each later
stage of the pipeline (reward model, RL fine-tuning, evaluation) joins it here.
"""

import time
from pathlib import Path

import numpy as np


def run_quickstart(output_dir: str | Path = "outputs/quickstart", n_clips: int = 96, seed: int = 0) -> dict:
    """
    Run the pipeline end to end on the synthetic world and print what it did.

    Args:
        output_dir (`str` or `Path`, *optional*, defaults to `"outputs/quickstart"`):
            Where the world, the tiny CLAP, the embedding cache and the datasets are written.
        n_clips (`int`, *optional*, defaults to `96`):
            Number of synthetic clips.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the world and of the models.

    Returns:
        `dict`: the numbers the summary prints.
    """
    from .data.preference import add_synthetic_negatives, split_by_clip
    from .data.synth import make_world, oracle_score
    from .encoders.clap import ClapEmbedder, build_tiny_clap
    from .encoders.dataset import add_embeddings

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    steps = []

    start = time.perf_counter()
    world = make_world(n_clips, seed=seed, sampling_rate=16000)
    world.save_to_disk(str(output_dir / "world"))
    steps.append(f"synthesized {len(world)} clips ({time.perf_counter() - start:.1f}s) -> {output_dir / 'world'}")

    texts = [text for refs in world["references"] for text in refs]
    model, processor = build_tiny_clap(texts, seed=seed)
    clap_dir = output_dir / "tiny-clap"
    model.save_pretrained(str(clap_dir))
    processor.save_pretrained(str(clap_dir))
    steps.append(f"built a tiny CLAP (random weights, {model.num_parameters() / 1e6:.2f}M parameters) -> {clap_dir}")

    embedder = ClapEmbedder.from_pretrained(str(clap_dir), cache_dir=str(output_dir / "embedding-cache"))
    timings = {}
    for run in ("cold", "warm"):
        start = time.perf_counter()
        embedded = add_embeddings(world, embedder, text_columns={"caption": "caption_embedding"})
        timings[run] = time.perf_counter() - start
    embedded.save_to_disk(str(output_dir / "world-embedded"))
    steps.append(
        f"embedded {len(world)} clips + captions: cold {timings['cold']:.2f}s, warm {timings['warm']:.2f}s "
        f"(cache {embedder.cache.stats})"
    )

    pairs = add_synthetic_negatives(world, seed=seed)
    events = dict(zip(world["clip_id"], world["events"]))
    chosen = np.array([oracle_score(c, events[k]) for c, k in zip(pairs["chosen"], pairs["clip_id"])])
    rejected = np.array([oracle_score(c, events[k]) for c, k in zip(pairs["rejected"], pairs["clip_id"])])
    splits = split_by_clip(pairs, test_size=0.2, seed=seed)
    splits.save_to_disk(str(output_dir / "preference-pairs"))
    steps.append(
        f"built {len(pairs)} preference pairs (true caption vs another clip's), split by clip "
        f"{len(splits['train'])}/{len(splits['test'])} -> {output_dir / 'preference-pairs'}"
    )

    audio = np.asarray(embedded.with_format("numpy")["audio_embedding"])
    text = np.asarray(embedded.with_format("numpy")["caption_embedding"])
    summary = {
        "n_clips": len(world),
        "embedding_dim": int(audio.shape[1]),
        "cache_speedup": timings["cold"] / max(timings["warm"], 1e-9),
        "oracle_chosen_mean": float(chosen.mean()),
        "oracle_rejected_mean": float(rejected.mean()),
        "oracle_agrees_with_pairs": float((chosen > rejected).mean()),
        "matched_cosine_mean": float((audio * text).sum(1).mean()),
    }

    print("\nhfpref quickstart: what it did")
    for i, step in enumerate(steps, 1):
        print(f"  {i}. {step}")
    print("Summary")
    print(f"  clips: {summary['n_clips']}, CLAP embedding width: {summary['embedding_dim']}")
    print(f"  embedding cache: warm pass {summary['cache_speedup']:.0f}x faster than cold")
    print(
        f"  oracle score of chosen captions {summary['oracle_chosen_mean']:.2f} vs rejected "
        f"{summary['oracle_rejected_mean']:.2f}; the oracle prefers chosen in "
        f"{100 * summary['oracle_agrees_with_pairs']:.0f}% of pairs"
    )
    print(
        f"  audio-caption cosine of matched pairs: {summary['matched_cosine_mean']:.3f} "
        "(random CLAP weights: no meaning yet)"
    )
    print(
        "Not yet chained here: CLAP contrastive fitting, the reward model, SCST and evaluation; each runs today as "
        "its own recipe (see the README's recipe table)."
    )
    return summary
