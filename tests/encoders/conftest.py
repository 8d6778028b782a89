import numpy as np
import pytest

from hfpref.encoders import build_tiny_clap


SAMPLING_RATE = 16_000
CAPTIONS = [
    "a dog barks twice",
    "a siren wails in the distance",
    "birds chirp while a car passes by",
    "rain falls on a tin roof",
    "a man speaks and a door slams",
    "rapid clicking followed by a low hum",
]


def synth_clips(count: int, sampling_rate: int = SAMPLING_RATE, seed: int = 0) -> list[np.ndarray]:
    """Tones, chirps and noise bursts of 0.5 to 3 s, all distinct."""
    rng = np.random.default_rng(seed)
    clips = []
    for index in range(count):
        seconds = 0.5 + 2.5 * rng.random()
        t = np.arange(int(seconds * sampling_rate)) / sampling_rate
        if index % 3 == 0:
            wave = np.sin(2 * np.pi * rng.uniform(200, 2000) * t)
        elif index % 3 == 1:
            wave = np.sin(2 * np.pi * (rng.uniform(100, 500) + rng.uniform(200, 1500) * t) * t)
        else:
            wave = rng.standard_normal(t.size) * (t < seconds / 2)
        clips.append((0.3 * wave).astype(np.float32))
    return clips


@pytest.fixture(scope="session")
def tiny_clap():
    """A randomly initialised tiny CLAP (16 kHz, 5 s windows, 32-d embeddings); do not modify it in tests."""
    return build_tiny_clap(CAPTIONS * 4, seed=0, sampling_rate=SAMPLING_RATE)


@pytest.fixture(scope="session")
def make_clips():
    """`make_clips(count, sampling_rate=16000, seed=0)` -> distinct synthesized clips."""
    return synth_clips


@pytest.fixture(scope="session")
def clips() -> list[np.ndarray]:
    return synth_clips(6)


@pytest.fixture
def captions() -> list[str]:
    return list(CAPTIONS)
