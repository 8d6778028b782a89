"""Peak memory of one AlignCap KD step: the adapter-disabled teacher (shared weights) vs a separate frozen teacher.

Builds a 616M-parameter Llama from a config (random fp32 weights, 4096 wide as LLaMA-7B, the model AlignCap used, 4
decoder layers, speech tokens added, a tokenizer trained on the benchmark's captions; nothing is downloaded), wraps it
in the r = 8 LoRA student of `AlignCapKDTrainer`, and runs one training step on speech-token prompts of 2 s (100
tokens) against text prompts, batch 4. Each side runs in its own subprocess, so the peak resident set size
(`ru_maxrss`) of one does not hide the other:

- `shared`: the teacher is the student's base with the adapter disabled (one copy of the weights);
- `separate`: the teacher is a frozen deep copy of the base (two copies).

    python bench/kd_memory.py

Both sides build the same model and train on the same batch. Why this size: per layer, the weights grow with the
width squared and the activations kept for backward with the width, so at LLaMA-7B's width the weights dominate a
layer as they do in the real model; fewer layers shrink both alike, but not the fixed part of the process (Python,
torch, transformers and the data, about 550 MiB), so the ratio here is below that of the whole model. At the earlier
size (`--hidden-size 768 --layers 18`, 98M parameters) the weights are 373 MiB, less than the fixed part plus the
activations, and the ratio cannot pass about 1.3 whatever the teacher costs.

Large allocations are mapped by themselves (glibc's `MALLOC_MMAP_THRESHOLD_`, 128 KiB, set for both children), so
the peak RSS follows the tensors alive. With glibc's default, whose threshold rises as tensors are freed, freed
activations stayed resident in its heap by the luck of the allocation order: at the earlier size one step measured
1.05 before the teacher ran first and 1.47 after, though the tensors alive differ by about 10 MiB, some 300 MiB of
freed heap landing on one side or the other. `--glibc-heap` measures with the default.

The last line is `RATIO kd_memory_saving=<separate peak RSS / shared peak RSS>`, whole processes (Python, torch and
the model included); above it, each side's fixed part (RSS before the model is built), the difference against one
fp32 copy of the weights, and the shared side split into weights, fixed part and the rest (activations kept for
backward, the speech-token rows and their optimizer state, transients).
"""

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from datasets import Dataset

from hfpref.data.synthetic.speech_world import make_speech_world
from hfpref.encoders.audio_tokens import render_speech_tokens
from hfpref.encoders.speech_tokens import build_tiny_speech_llm
from hfpref.prompts.emotion_clues import teacher_prompt
from hfpref.trainers import AlignCapKDConfig, AlignCapKDTrainer


CODEBOOK_SIZE = 1024
# glibc serves allocations below this from its heap and maps larger ones (tensors) on their own, returning them to
# the system when freed; its default threshold rises as tensors are freed, after which freed tensors stay resident.
MMAP_THRESHOLD = 128 * 1024
INSTRUCTION = "Describe the speaker's emotion."


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def one_step(side: str, batch_size: int, hidden_size: int, layers: int, seed: int) -> dict:
    torch.manual_seed(seed)
    world = make_speech_world(batch_size, seed, backend="procedural", clip_seconds=0.2)
    captions = list(world["caption"])
    rng = np.random.default_rng(seed)
    data = Dataset.from_dict(
        {
            "prompt": [
                f"{render_speech_tokens(rng.integers(CODEBOOK_SIZE, size=100))} {INSTRUCTION}" for _ in captions
            ],
            "text_prompt": [teacher_prompt(c, INSTRUCTION) for c in captions],
            "caption": captions,
        }
    )
    texts = [r for refs in world["references"] for r in refs] + list(data["text_prompt"])
    fixed_mib = current_rss_mib()  # Python, torch, transformers, the data: everything before the model
    model, tokenizer = build_tiny_speech_llm(
        texts, CODEBOOK_SIZE, seed=seed, hidden_size=hidden_size, num_hidden_layers=layers
    )
    n_params = sum(p.numel() for p in model.parameters())
    teacher = copy.deepcopy(model) if side == "separate" else None
    args = AlignCapKDConfig(
        output_dir="/tmp/kd-memory-bench",
        max_steps=1,
        per_device_train_batch_size=batch_size,
        learning_rate=1e-5,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=seed,
    )
    trainer = AlignCapKDTrainer(model, args, train_dataset=data, processing_class=tokenizer, teacher_model=teacher)
    start = time.perf_counter()
    trainer.train()
    loss = trainer.state.log_history[0]["loss"]
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "side": side,
        "parameters": n_params,
        "peak_rss_mib": peak_kib / 1024,
        "fixed_rss_mib": fixed_mib,
        "step_seconds": time.perf_counter() - start,
        "loss": loss,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--hidden-size", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--glibc-heap",
        action="store_true",
        help="leave glibc's default mmap threshold: freed tensors stay resident in its heap, by run-to-run luck",
    )
    parser.add_argument("--side", choices=["shared", "separate"], help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.side is not None:
        print(json.dumps(one_step(args.side, args.batch_size, args.hidden_size, args.layers, args.seed)))
        return

    env = dict(os.environ)
    if not args.glibc_heap:
        env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    results = {}
    for side in ("shared", "separate"):
        command = [sys.executable, __file__, "--side", side] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("side", "glibc_heap")
        ]
        child = subprocess.run(command, capture_output=True, text=True, env=env)
        if child.returncode != 0:
            raise SystemExit(f"the {side} side failed:\n{child.stderr[-3000:]}")
        results[side] = json.loads(child.stdout.strip().splitlines()[-1])
        r = results[side]
        print(
            f"{side:>8}: {r['parameters'] / 1e6:.1f}M parameters, peak RSS {r['peak_rss_mib']:.0f} MiB "
            f"(of which {r['fixed_rss_mib']:.0f} before the model: Python, torch, the data), "
            f"one KD step {r['step_seconds']:.1f} s, loss {r['loss']:.3f}"
        )
    shared, separate = results["shared"]["peak_rss_mib"], results["separate"]["peak_rss_mib"]
    weights_mib = results["shared"]["parameters"] * 4 / 2**20
    fixed = results["shared"]["fixed_rss_mib"]
    print(f"separate - shared: {separate - shared:.0f} MiB (one fp32 copy of the weights: {weights_mib:.0f} MiB)")
    print(
        f"shared: weights {weights_mib:.0f} MiB, fixed {fixed:.0f} MiB, the rest (activations kept for backward, "
        f"optimizer, transients) {shared - weights_mib - fixed:.0f} MiB; "
        f"(shared + one copy) / shared = {(shared + weights_mib) / shared:.3f}"
    )
    print(f"ratio without the fixed part: {(separate - fixed) / (shared - fixed):.3f}")
    print(f"RATIO kd_memory_saving={separate / shared:.3f}")


if __name__ == "__main__":
    main()
