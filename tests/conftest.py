import os


# Tests never reach a hub: every model is built from a config, every tokenizer is
# trained in a fixture, every clip is synthesized.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `make test` runs the suite on 2 pytest-xdist workers (one per core): each worker's torch gets one thread, since two
# processes with 2 threads each on 2 cores slow torch down many times over (OpenMP threads spin while they wait).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


# ../shared beside the checkout; `make mutation` runs the tests from copies elsewhere and names it.
SHARED_DIR = Path(os.environ.get("HFPREF_SHARED_DIR") or Path(__file__).resolve().parents[1].parent / "shared")
FENSE_DIR = SHARED_DIR / "data" / "fense"


@pytest.fixture(scope="session")
def fense_dir() -> Path:
    """The real FENSE human judgments in ../shared; tests that need them skip without it."""
    if not (FENSE_DIR / "audiocaps_eval.json").is_file():
        pytest.skip(f"FENSE data not found at {FENSE_DIR} (../shared is absent)")
    return FENSE_DIR


@pytest.fixture(scope="session")
def tiny_clap_dir(tmp_path_factory) -> Path:
    """A tiny random CLAP (16 kHz, 32-d embeddings) whose tokenizer knows the synthetic world, saved to disk."""
    from hfpref.data.synthetic.audio_world import make_world
    from hfpref.encoders.clap import build_tiny_clap

    world = make_world(48, seed=99, clip_seconds=1.0)
    model, processor = build_tiny_clap([c for refs in world["references"] for c in refs], seed=0)
    path = tmp_path_factory.mktemp("tiny-clap")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture
def one_thread():
    """Tiny models decoding token by token: one torch thread avoids oversubscription on a busy 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
