"""Overhead of `RewardModelTrainer` over a bare PyTorch loop that does the same training.

Data: FENSE-sized pairwise data of precomputed features (1,186 training pairs, 384-d, the width of the
sentence-embedding features the issue measured with; 296 held-out pairs), seeded Gaussian vectors with a planted
preference (`chosen` is closer to the audio vector than `rejected`), stored as a `datasets.Dataset` with fixed-length
float32 list columns, as `hfpref.encoders.add_embeddings` writes them. Both sides start from that `Dataset`.

Both sides train the same `CLAPRewardModel` (hidden sizes 512, 128; same seed, same initial weights) with the same
math: the Bradley-Terry loss with the L2 penalty of `RewardModelConfig` defaults, AdamW (`weight_decay=0`, i.e. Adam),
linear learning-rate decay, gradient clipping at `max_grad_norm=1.0`, batch 64, shuffled each epoch, 70 epochs, then
one evaluation of held-out accuracy. The bare loop indexes tensors directly; the trainer side is
`RewardModelTrainer(...).train()` then `.evaluate()` with logging every 10 steps, nothing written to disk but its
output folder. The timed region of each side includes turning the `Dataset` into tensors (the trainer's validation
and preparation included).

The sides are interleaved (bare, trainer, trainer, bare, ...) `--repeats` times so machine load hits both alike; the
ratio is median(trainer) / median(bare).

    OMP_NUM_THREADS=1 python bench/reward_trainer_overhead.py --repeats 3

The last line is `RATIO reward_trainer_overhead=<median trainer wall time over median bare-loop wall time>`.
"""

import argparse
import math
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from datasets import Dataset, Features, List, Value
from transformers import get_linear_schedule_with_warmup
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from hfpref.rewards import CLAPRewardConfig, CLAPRewardModel
from hfpref.rewards.losses import bradley_terry_loss, l2_penalty
from hfpref.trainers import RewardModelConfig, RewardModelTrainer


COLUMNS = ["audio_embedding", "chosen_embedding", "rejected_embedding"]


def make_pairs(count: int, dim: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    audio = rng.standard_normal((count, dim)).astype(np.float32)
    chosen = (audio + 1.5 * rng.standard_normal((count, dim))).astype(np.float32)
    rejected = rng.standard_normal((count, dim)).astype(np.float32)
    features = Features({column: List(Value("float32"), length=dim) for column in COLUMNS})
    return Dataset.from_dict(dict(zip(COLUMNS, (audio, chosen, rejected))), features=features)


def new_model(dim: int, seed: int) -> CLAPRewardModel:
    torch.manual_seed(seed)
    return CLAPRewardModel(CLAPRewardConfig(embedding_dim=dim, hidden_sizes=[512, 128]))


def config(output_dir: str, epochs: int, seed: int) -> RewardModelConfig:
    return RewardModelConfig(
        output_dir=output_dir,
        num_train_epochs=epochs,
        per_device_train_batch_size=64,
        per_device_eval_batch_size=256,
        logging_steps=10,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        reward_histogram=False,
        disable_tqdm=True,
        use_cpu=True,
        seed=seed,
    )


def bare_loop(train: Dataset, test: Dataset, args: RewardModelConfig, seed: int) -> float:
    """The same training, written as the plain loop a PyTorch user would write. Returns held-out accuracy."""
    tensors = {c: torch.from_numpy(np.asarray(train.with_format("numpy")[c])) for c in COLUMNS}
    held_out = {c: torch.from_numpy(np.asarray(test.with_format("numpy")[c])) for c in COLUMNS}
    model = new_model(tensors["audio_embedding"].shape[1], seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    batch = args.per_device_train_batch_size
    steps_per_epoch = math.ceil(len(train) / batch)
    total = steps_per_epoch * int(args.num_train_epochs)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, total)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(int(args.num_train_epochs)):
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), batch):
            index = order[start : start + batch]
            audio = tensors["audio_embedding"][index]
            text = torch.cat([tensors["chosen_embedding"][index], tensors["rejected_embedding"][index]])
            rewards = model(audio_embedding=torch.cat([audio, audio]), text_embedding=text).rewards
            chosen, rejected = rewards.chunk(2)
            loss = bradley_terry_loss(chosen, rejected, scale=args.bt_scale) + args.l2_coef * l2_penalty(
                model.parameters(), reduction=args.l2_reduction
            )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        audio = held_out["audio_embedding"]
        chosen = model(audio_embedding=audio, text_embedding=held_out["chosen_embedding"]).rewards
        rejected = model(audio_embedding=audio, text_embedding=held_out["rejected_embedding"]).rewards
    return float((chosen > rejected).float().mean())


def trainer_run(train: Dataset, test: Dataset, args: RewardModelConfig, seed: int) -> float:
    trainer = RewardModelTrainer(new_model(args_dim(train), seed), args, train_dataset=train, eval_dataset=test)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.train()
    return trainer.evaluate()["eval_accuracy"]


def args_dim(dataset: Dataset) -> int:
    return dataset.features["audio_embedding"].length


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=1186)
    parser.add_argument("--eval-pairs", type=int, default=296)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--epochs", type=int, default=70)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    cli = parser.parse_args()

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    train = make_pairs(cli.pairs, cli.dim, cli.seed)
    test = make_pairs(cli.eval_pairs, cli.dim, cli.seed + 1)
    print(f"{cli.pairs} training pairs, {cli.eval_pairs} held-out pairs, {cli.dim}-d, {cli.epochs} epochs, batch 64")
    print(
        f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs), torch threads {torch.get_num_threads()}"
    )
    times = {"bare": [], "trainer": []}
    with tempfile.TemporaryDirectory() as tmp:
        args = config(tmp, cli.epochs, cli.seed)
        for repeat in range(cli.repeats):
            order = ("bare", "trainer") if repeat % 2 == 0 else ("trainer", "bare")
            for side in order:
                start = time.perf_counter()
                accuracy = (bare_loop if side == "bare" else trainer_run)(train, test, args, cli.seed)
                elapsed = time.perf_counter() - start
                times[side].append(elapsed)
                print(f"repeat {repeat} {side:>7}: {elapsed:7.2f} s, held-out accuracy {accuracy:.3f}")
    ratios = [t / b for t, b in zip(times["trainer"], times["bare"])]
    bare, trainer = statistics.median(times["bare"]), statistics.median(times["trainer"])
    print(f"bare loop: median {bare:.2f} s; trainer: median {trainer:.2f} s")
    print(f"per-repeat ratios: {', '.join(f'{r:.2f}' for r in ratios)} (mean {statistics.mean(ratios):.2f})")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print(f"RATIO reward_trainer_overhead={trainer / bare:.2f}")


if __name__ == "__main__":
    main()
