"""Speed-up of the on-disk CLAP embedding cache: cold (empty cache) vs warm embedding.

Builds the `laion/clap-htsat-unfused` architecture (`ClapConfig()` defaults, HTSAT audio
encoder + RoBERTa-base text encoder, 512-d embeddings) with random weights, a matching
`ClapFeatureExtractor(truncation="rand_trunc")` (48 kHz, 10 s windows) and a tokenizer
trained on the benchmark's captions; nothing is downloaded. Embeds synthesized clips and
captions into an empty temporary cache, then again from the warm cache.

    python bench/embed_cache.py --clips 32 --captions 64

The last line is `RATIO embed_cache_speedup=<warm items/s over cold items/s>`, clips and
captions together. The model fingerprint (hashing all weights, once per process) is timed
apart and left out of both.
"""

import argparse
import tempfile
import time

import numpy as np
import torch
from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

from hfpref.encoders import ClapEmbedder, train_clap_tokenizer


SAMPLING_RATE = 48_000
SOURCES = ["dog", "siren", "engine", "bird", "door", "crowd", "rain", "bell", "drill", "baby", "train", "whistle"]
ACTIONS = ["barks", "wails", "hums", "chirps", "slams", "murmurs", "patters", "rings", "whirs", "cries"]
PLACES = ["in the distance", "nearby", "indoors", "on a street", "in a hall", "twice", "briefly", "repeatedly"]


def make_captions(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    captions: dict[str, None] = {}
    while len(captions) < count:
        first, second = rng.choice(SOURCES, 2, replace=False)
        caption = f"a {first} {rng.choice(ACTIONS)} {rng.choice(PLACES)} while a {second} {rng.choice(ACTIONS)}"
        captions[caption] = None
    return list(captions)


def make_clips(count: int, seconds: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    clips = []
    for index in range(count):
        length = rng.uniform(0.5 * seconds, 1.5 * seconds)
        t = np.arange(int(length * SAMPLING_RATE)) / SAMPLING_RATE
        if index % 2:
            wave = np.sin(2 * np.pi * rng.uniform(100, 4000) * t) + 0.1 * rng.standard_normal(t.size)
        else:
            wave = rng.standard_normal(t.size) * np.exp(-rng.uniform(0.2, 2.0) * t)
        clips.append((0.3 * wave).astype(np.float32))
    return clips


def build_real_clap_architecture(captions: list[str], seed: int):
    """`laion/clap-htsat-unfused`'s architecture (`ClapConfig()`), random weights, a tokenizer trained on `captions`."""
    tokenizer = train_clap_tokenizer(captions, vocab_size=2000, model_max_length=512)
    feature_extractor = ClapFeatureExtractor(truncation="rand_trunc")
    torch.manual_seed(seed)
    model = ClapModel(ClapConfig()).eval()
    processor = ClapProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    print(f"built laion/clap-htsat-unfused architecture: {parameters / 1e6:.1f}M parameters, random weights")
    return model, processor


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=32, help="number of distinct clips")
    parser.add_argument("--captions", type=int, default=64, help="number of distinct captions")
    parser.add_argument("--seconds", type=float, default=4.0, help="mean clip length in seconds (48 kHz)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    captions = make_captions(args.captions, args.seed)
    clips = make_clips(args.clips, args.seconds, args.seed)

    start = time.perf_counter()
    model, processor = build_real_clap_architecture(captions, args.seed)
    print(f"setup {time.perf_counter() - start:.1f}s, torch threads {torch.get_num_threads()}")

    with tempfile.TemporaryDirectory(prefix="hfpref-bench-cache-") as cache_dir:
        embedder = ClapEmbedder(model, processor, cache_dir=cache_dir, batch_size=args.batch_size, show_progress=False)
        _, fingerprint_seconds = timed(lambda: embedder.cache)
        print(f"fingerprint {embedder.fingerprint} in {fingerprint_seconds:.2f}s (once per process, not timed below)")

        seconds = {}
        for phase in ("cold", "warm"):
            cold_audio, seconds[phase, "audio"] = timed(
                lambda: embedder.embed_audio(clips, sampling_rate=SAMPLING_RATE)
            )
            cold_text, seconds[phase, "text"] = timed(embedder.embed_text, captions)
            if phase == "cold":
                reference = (cold_audio, cold_text)
            else:
                assert np.array_equal(cold_audio, reference[0]) and np.array_equal(cold_text, reference[1])
            print(
                f"{phase}: {len(clips) / seconds[phase, 'audio']:10.1f} clips/s  "
                f"{len(captions) / seconds[phase, 'text']:10.1f} captions/s"
            )
        print(f"cache stats: {embedder.cache.stats}")

    items = len(clips) + len(captions)
    cold = items / (seconds["cold", "audio"] + seconds["cold", "text"])
    warm = items / (seconds["warm", "audio"] + seconds["warm", "text"])
    print(f"combined: cold {cold:.1f} items/s, warm {warm:.1f} items/s")
    print(f"RATIO embed_cache_speedup={warm / cold:.1f}")


if __name__ == "__main__":
    main()
