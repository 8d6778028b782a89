"""Peak memory of one AlignCap KD step: the adapter-disabled teacher (shared weights) vs a separate frozen teacher.

Builds a ~100M-parameter Llama from a config (random weights, 768 wide, 18 layers, speech tokens added, a tokenizer
trained on the benchmark's captions; nothing is downloaded), wraps it in the r = 8 LoRA student of
`AlignCapKDTrainer`, and runs one training step on speech-token prompts of 2 s (100 tokens) against text prompts.
Each side runs in its own subprocess, so the peak resident set size (`ru_maxrss`) of one does not hide the other:

- `shared`: the teacher is the student's base with the adapter disabled (one copy of the weights);
- `separate`: the teacher is a frozen deep copy of the base (two copies).

    python bench/kd_memory.py --batch-size 4

The last line is `RATIO kd_memory_saving=<separate peak RSS / shared peak RSS>`, whole processes (Python, torch and
the model included); the difference in MiB is printed above it.
"""

import argparse
import copy
import json
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
INSTRUCTION = "Describe the speaker's emotion."


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
        "step_seconds": time.perf_counter() - start,
        "loss": loss,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--hidden-size", type=int, default=768)
    parser.add_argument("--layers", type=int, default=18)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--side", choices=["shared", "separate"], help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.side is not None:
        print(json.dumps(one_step(args.side, args.batch_size, args.hidden_size, args.layers, args.seed)))
        return

    results = {}
    for side in ("shared", "separate"):
        command = [sys.executable, __file__, "--side", side] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "side"
        ]
        child = subprocess.run(command, capture_output=True, text=True)
        if child.returncode != 0:
            raise SystemExit(f"the {side} side failed:\n{child.stderr[-3000:]}")
        results[side] = json.loads(child.stdout.strip().splitlines()[-1])
        r = results[side]
        print(
            f"{side:>8}: {r['parameters'] / 1e6:.1f}M parameters, peak RSS {r['peak_rss_mib']:.0f} MiB, "
            f"one KD step {r['step_seconds']:.1f} s, loss {r['loss']:.3f}"
        )
    shared, separate = results["shared"]["peak_rss_mib"], results["separate"]["peak_rss_mib"]
    weights_mib = results["shared"]["parameters"] * 4 / 2**20
    print(f"separate - shared: {separate - shared:.0f} MiB (one fp32 copy of the weights: {weights_mib:.0f} MiB)")
    print(f"RATIO kd_memory_saving={separate / shared:.3f}")


if __name__ == "__main__":
    main()
