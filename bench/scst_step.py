"""
One SCST step on the whisper-tiny architecture (random weights, 30 s inputs, batch 8): the audio encoder
run once and reused by the sampled decode, the greedy decode and the log-prob pass (what
`CaptionRLTrainer` does), against recomputing it for each of the three passes.

    python bench/scst_step.py [--batch-size 8] [--max-new-tokens 20] [--repeats 1]

Last line: `RATIO scst_encoder_reuse_speedup=<recomputed seconds / reused seconds>`.
"""

import argparse
import time

import numpy as np
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from hfpref.models.captioning import decode, encode_audio, token_log_probs


def scst_step(model, features, rewards, *, reuse: bool, max_new_tokens: int) -> float:
    """One SCST update's forward and backward passes; returns wall seconds."""
    start = time.perf_counter()
    inputs = {"input_features": features}
    encoded = encode_audio(model, inputs)
    sampled = decode(model, encoded, do_sample=True, max_new_tokens=max_new_tokens)
    if not reuse:
        encoded = encode_audio(model, inputs)
    greedy = decode(model, encoded, do_sample=False, max_new_tokens=max_new_tokens)
    if not reuse:
        encoded = encode_audio(model, inputs)
    advantage = rewards(sampled.completion_ids) - rewards(greedy.completion_ids)
    log_probs, mask = token_log_probs(model, encoded, sampled)
    loss = -(advantage * (log_probs * mask).sum(-1)).mean()
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    # openai/whisper-tiny's architecture: WhisperConfig with its sizes, random weights (nothing is downloaded).
    config = WhisperConfig(
        d_model=384,
        encoder_layers=4,
        decoder_layers=4,
        encoder_attention_heads=6,
        decoder_attention_heads=6,
        encoder_ffn_dim=1536,
        decoder_ffn_dim=1536,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    model.train()
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    features = torch.randn(args.batch_size, config.num_mel_bins, 2 * config.max_source_positions)  # 30 s of mels

    def rewards(ids):  # a cheap stand-in reward; the benchmark measures the model passes
        return ids.float().mean(-1) / config.vocab_size

    print(
        f"whisper-tiny architecture ({n_params:.1f}M parameters), batch {args.batch_size}, 30 s inputs, "
        f"{args.max_new_tokens} new tokens per decode, {torch.get_num_threads()} threads"
    )
    scst_step(model, features, rewards, reuse=True, max_new_tokens=2)  # warm-up
    times = {"reused": [], "recomputed": []}
    for _ in range(args.repeats):
        for mode in times:
            times[mode].append(
                scst_step(model, features, rewards, reuse=mode == "reused", max_new_tokens=args.max_new_tokens)
            )
    with torch.no_grad():
        start = time.perf_counter()
        encode_audio(model, {"input_features": features})
        encoder_seconds = time.perf_counter() - start
    reused, recomputed = float(np.median(times["reused"])), float(np.median(times["recomputed"]))
    print(f"encoder forward alone: {encoder_seconds:.2f} s")
    print(f"SCST step, encoder run once and reused:      {reused:.2f} s (median of {args.repeats})")
    print(f"SCST step, encoder recomputed for each pass: {recomputed:.2f} s (median of {args.repeats})")
    print(f"RATIO scst_encoder_reuse_speedup={recomputed / reused:.2f}")


if __name__ == "__main__":
    main()
