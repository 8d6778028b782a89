"""Speed-up of training the CLAP reward model on cached embeddings instead of re-embedding every step.

Cached side (measured): trains a `CLAPRewardModel(CLAPRewardConfig(embedding_dim=512))` through
`RewardModelTrainer` with the paper schedule (`RewardModelConfig.from_preset("paper_pairwise")`: 70 epochs,
batch 64, Bradley-Terry) on synthetic pairs of cached 512-d unit embeddings: `audio` random,
`chosen = normalize(audio + noise)`, `rejected` random, so there is something to learn; a held-out set
shows that it does. The whole `trainer.train()` is timed.

Uncached side (extrapolated): builds the `laion/clap-htsat-unfused` architecture (`ClapConfig()` defaults,
random weights) with `ClapFeatureExtractor(truncation="rand_trunc")` (48 kHz, 10 s windows) and a tokenizer
trained on the captions; nothing is downloaded. Times the frozen-CLAP forward passes one non-cached step needs
(audio embeddings of `batch_size` synthesized 10 s clips, text embeddings of the chosen and rejected captions,
under `torch.inference_mode()`, feature extraction and tokenization included, no audio decoding) for a few
batches, after an untimed warm-up pass. Uncached wall time = measured CLAP cost per pair x pairs x epochs
+ the measured head-training time.

    python bench/reward_training.py --pairs 3000 --epochs 70 --clap-batches 2

The last line is `RATIO reward_cache_speedup=<extrapolated uncached wall time over measured cached wall time>`.
"""

import argparse
import math
import os
import tempfile
import time

import numpy as np
import torch
from datasets import Dataset, Features, List, Value
from embed_cache import (  # sibling script: bench/embed_cache.py
    SAMPLING_RATE,
    build_real_clap_architecture,
    make_captions,
    timed,
)
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from hfpref.encoders import ClapEmbedder
from hfpref.rewards import CLAPRewardConfig, CLAPRewardModel
from hfpref.trainers import RewardModelConfig, RewardModelTrainer


EMBEDDING_DIM = 512
COLUMNS = ["audio_embedding", "chosen_embedding", "rejected_embedding"]
WARM_UP = 2  # clips and captions embedded once before the timed CLAP batches


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def make_pairs(count: int, noise: float, seed: int) -> Dataset:
    """Cached-embedding pairs: chosen = normalize(audio + noise), rejected unrelated to the audio."""
    rng = np.random.default_rng(seed)
    audio = unit(rng.standard_normal((count, EMBEDDING_DIM)))
    chosen = unit(audio + noise * rng.standard_normal((count, EMBEDDING_DIM)) / math.sqrt(EMBEDDING_DIM))
    rejected = unit(rng.standard_normal((count, EMBEDDING_DIM)))
    # The column type hfpref.encoders.add_embeddings writes.
    features = Features({column: List(Value("float32"), length=EMBEDDING_DIM) for column in COLUMNS})
    columns = dict(zip(COLUMNS, (audio, chosen, rejected)))
    return Dataset.from_dict({k: v.astype(np.float32) for k, v in columns.items()}, features=features)


def make_clips(count: int, seconds: float, seed: int) -> list[np.ndarray]:
    """Clips of exactly `seconds` at 48 kHz: tones in noise and decaying noise bursts."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    clips = []
    for index in range(count):
        if index % 2:
            wave = np.sin(2 * np.pi * rng.uniform(100, 4000) * t) + 0.1 * rng.standard_normal(t.size)
        else:
            wave = rng.standard_normal(t.size) * np.exp(-rng.uniform(0.2, 2.0) * t)
        clips.append((0.3 * wave).astype(np.float32))
    return clips


def train_head(args, train: Dataset, held_out: Dataset) -> dict:
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    with tempfile.TemporaryDirectory(prefix="hfpref-bench-reward-") as output_dir:
        config = RewardModelConfig.from_preset(
            "paper_pairwise",
            output_dir=output_dir,
            num_train_epochs=args.epochs,
            per_device_train_batch_size=args.batch_size,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            logging_steps=max(1, steps_per_epoch * max(1, args.epochs // 7)),
            reward_histogram=False,
            disable_tqdm=True,
            seed=args.seed,
        )
        torch.manual_seed(args.seed)
        model = CLAPRewardModel(CLAPRewardConfig(embedding_dim=EMBEDDING_DIM))
        trainer, setup_seconds = timed(
            lambda: RewardModelTrainer(model=model, args=config, train_dataset=train, eval_dataset=held_out)
        )
        for callback in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(callback)
        before = trainer.evaluate()
        output, seconds = timed(trainer.train)
        after = trainer.evaluate()
        losses = [(entry["epoch"], entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
    return {
        "seconds": seconds,
        "setup_seconds": setup_seconds,
        "steps": output.global_step,
        "mean_loss": output.training_loss,
        "losses": losses,
        "before": before,
        "after": after,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3000, help="training pairs of cached embeddings")
    parser.add_argument("--held-out", type=int, default=300, help="held-out pairs for the accuracy check")
    parser.add_argument("--epochs", type=int, default=70, help="epochs (70: the paper_pairwise schedule)")
    parser.add_argument("--batch-size", type=int, default=64, help="pairs per optimizer step (64: the paper's)")
    parser.add_argument("--noise", type=float, default=1.0, help="noise norm added to the audio to make `chosen`")
    parser.add_argument("--clap-batches", type=int, default=2, help="training batches whose CLAP passes are timed")
    parser.add_argument("--clap-sub-batch", type=int, default=16, help="clips or captions per CLAP forward pass")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length in seconds (48 kHz)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f} at start")

    # Cached side: the real trainer on precomputed embeddings, measured end to end.
    train = make_pairs(args.pairs, args.noise, args.seed)
    held_out = make_pairs(args.held_out, args.noise, args.seed + 1)
    head = train_head(args, train, held_out)
    cached = head["seconds"]
    steps = head["steps"]
    print(
        f"cached: {args.pairs} pairs, {args.epochs} epochs, batch {args.batch_size}: {steps} optimizer steps "
        f"in {cached:.1f}s ({1000 * cached / steps:.1f} ms/step); trainer setup {head['setup_seconds']:.1f}s untimed"
    )
    print("train loss by epoch: " + ", ".join(f"{epoch:g}: {loss:.4f}" for epoch, loss in head["losses"]))
    print(f"train loss: mean over the run {head['mean_loss']:.4f}, last logged {head['losses'][-1][1]:.4f}")
    print(
        f"held-out accuracy ({args.held_out} pairs): {head['before']['eval_accuracy']:.3f} before training, "
        f"{head['after']['eval_accuracy']:.3f} after (reward margin {head['after']['eval_reward_margin']:.3f})"
    )

    # Uncached side: the frozen CLAP forward passes each step would need, timed for a few batches.
    captions = make_captions(2 * args.batch_size * (args.clap_batches + 1), args.seed)
    clips = make_clips(args.batch_size * args.clap_batches + WARM_UP, args.seconds, args.seed)
    start = time.perf_counter()
    model, processor = build_real_clap_architecture(captions, args.seed)
    print(f"setup {time.perf_counter() - start:.1f}s")

    # No cache_dir: every call runs the model (the embedder uses torch.inference_mode and eval mode).
    embedder = ClapEmbedder(model, processor, batch_size=args.clap_sub_batch, show_progress=False)
    warm_clips, warm_captions = clips[-WARM_UP:], captions[-WARM_UP:]
    _, warm_seconds = timed(
        lambda: (embedder.embed_audio(warm_clips, sampling_rate=SAMPLING_RATE), embedder.embed_text(warm_captions))
    )
    print(f"warm-up ({WARM_UP} clips + {WARM_UP} captions, left out of the timings): {warm_seconds:.1f}s")
    per_batch = []
    for index in range(args.clap_batches):
        batch_clips = clips[index * args.batch_size : (index + 1) * args.batch_size]
        batch_captions = captions[2 * index * args.batch_size : 2 * (index + 1) * args.batch_size]
        _, audio_seconds = timed(lambda clips=batch_clips: embedder.embed_audio(clips, sampling_rate=SAMPLING_RATE))
        _, text_seconds = timed(embedder.embed_text, batch_captions)
        per_batch.append(audio_seconds + text_seconds)
        print(
            f"CLAP batch {index + 1}: {len(batch_clips)} clips ({args.seconds:g} s, 48 kHz) {audio_seconds:.1f}s "
            f"+ {len(batch_captions)} captions (chosen + rejected) {text_seconds:.1f}s = {per_batch[-1]:.1f}s "
            f"(forward passes of {args.clap_sub_batch})"
        )
    batch_seconds = float(np.mean(per_batch))
    pairs_seen = args.pairs * args.epochs
    clap_total = batch_seconds / args.batch_size * pairs_seen
    uncached = clap_total + cached

    print(f"cached wall time (measured): {cached:.1f}s for {steps} steps")
    print(
        f"uncached wall time (EXTRAPOLATED from the measured CLAP cost of {batch_seconds:.1f}s per batch of "
        f"{args.batch_size}, mean of {args.clap_batches}): {batch_seconds:.1f}s / {args.batch_size} pairs x "
        f"{pairs_seen} pairs ({steps} steps) = {clap_total:.0f}s CLAP + {cached:.1f}s head = {uncached:.0f}s "
        f"({uncached / 3600:.2f} h)"
    )
    print(f"load average {os.getloadavg()[0]:.2f} at the end (timings assume an otherwise idle machine)")
    print(f"RATIO reward_cache_speedup={uncached / cached:.1f}")


if __name__ == "__main__":
    main()
