"""A procedural audio world that stands in for real data and human judges.

No weights or datasets can be downloaded here, so the quickstart and the tests run on
clips synthesized from twelve sound events (beeps, chirps, sirens, static, clicking,
hum, knocking, bells, whistles, engines, rain, buzzers). Each event kind has its own
spectrum and temporal pattern, a set of caption keywords that no other kind shares, and
a handful of caption phrases. [`make_world`] mixes one to three events per clip in time
order and writes the true caption, five true paraphrases and the event list beside the
audio. [`caption_for`] writes a caption of given events in the world's vocabulary,
[`parse_events`] reads the events a caption names, and [`make_caption_variants`] writes the
kinds of wrong caption a captioner makes. The world's oracle, which knows a clip's true
events and grades any caption against them in place of a human annotator, is a judge:
[`~hfpref.judges.oracle.OracleJudge`].
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import datasets
import numpy as np
from scipy import signal

from ..audio import audio_value, ensure_audio_column


EventGenerator = Callable[[np.random.Generator, float, int], np.ndarray]


def _time(duration_s: float, sampling_rate: int) -> np.ndarray:
    return np.arange(max(1, int(round(duration_s * sampling_rate)))) / sampling_rate


def _max_freq(sampling_rate: int) -> float:
    # Every tone and filter edge stays below this so that low sampling rates do not alias.
    return 0.42 * sampling_rate


def _filter(x: np.ndarray, sampling_rate: int, btype: str, cutoff, order: int = 2) -> np.ndarray:
    nyquist = sampling_rate / 2
    cutoff = np.clip(np.atleast_1d(np.asarray(cutoff, dtype=np.float64)), 1.0, _max_freq(sampling_rate))
    wn = cutoff / nyquist
    sos = signal.butter(order, wn if len(wn) > 1 else wn[0], btype=btype, output="sos")
    return signal.sosfilt(sos, x)


def _place(impulse_times: np.ndarray, amplitudes: np.ndarray, kernel: np.ndarray, n: int, sr: int) -> np.ndarray:
    """Adds `kernel` into a length-`n` signal at each impulse time (seconds), scaled by its amplitude."""
    impulses = np.zeros(n)
    idx = np.round(impulse_times * sr).astype(np.int64)
    keep = (idx >= 0) & (idx < n)
    np.add.at(impulses, idx[keep], amplitudes[keep])
    return signal.fftconvolve(impulses, kernel)[:n]


def _waveform(generate: Callable[..., np.ndarray]) -> EventGenerator:
    """Makes a generator's output float32, so that every event kind returns the same dtype."""

    @functools.wraps(generate)
    def wrapped(rng: np.random.Generator, duration_s: float, sampling_rate: int) -> np.ndarray:
        return np.asarray(generate(rng, duration_s, sampling_rate), dtype=np.float32)

    return wrapped


def _phase(freq: np.ndarray, sampling_rate: int) -> np.ndarray:
    return 2 * np.pi * np.cumsum(freq) / sampling_rate


@_waveform
def beep(rng: np.random.Generator, duration_s: float, sampling_rate: int) -> np.ndarray:
    """Pure sine beeps switching on and off a few times a second."""
    t = _time(duration_s, sampling_rate)
    freq = min(rng.uniform(600, 1400), _max_freq(sampling_rate))
    rate, duty = rng.uniform(2.0, 5.0), rng.uniform(0.4, 0.65)
    gate = ((t * rate) % 1.0 < duty).astype(np.float64)
    ramp = np.hanning(max(3, int(0.008 * sampling_rate)))
    gate = np.convolve(gate, ramp / ramp.sum(), mode="same")
    return gate * np.sin(2 * np.pi * freq * t)


@_waveform
def chirp(rng: np.random.Generator, duration_s: float, sampling_rate: int) -> np.ndarray:
    """One or two exponential sweeps rising from a few hundred hertz to several kilohertz."""
    t = _time(duration_s, sampling_rate)
    n_sweeps = int(rng.integers(1, 3))
    period = t[-1] / n_sweeps + 1.0 / sampling_rate
    f0 = rng.uniform(250, 500)
    f1 = min(rng.uniform(2500, 5000), _max_freq(sampling_rate))
    u = (t % period) / period
    freq = f0 * (f1 / f0) ** u
    envelope = np.minimum(1.0, np.minimum(u, 1 - u) * period / 0.02)
    return envelope * np.sin(_phase(freq, sampling_rate))


@_waveform
def siren(rng: np.random.Generator, duration_s: float, sampling_rate: int) -> np.ndarray:
    """A harmonic tone whose pitch wails slowly up and down (frequency modulation)."""
    t = _time(duration_s, sampling_rate)
    center = rng.uniform(650, 1000)
    depth, rate = rng.uniform(0.25, 0.4) * center, rng.uniform(0.6, 1.8)
    freq = center + depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    phase = _phase(freq, sampling_rate)
    out = np.sin(phase) + 0.35 * np.sin(2 * phase)
    if 3 * (center + depth) < _max_freq(sampling_rate):
        out += 0.15 * np.sin(3 * phase)
    return out


@_waveform
def static(rng: np.random.Generator, duration_s: float, sampling_rate: int) -> np.ndarray:
    """Steady broadband hiss with emphasised high frequencies."""
    noise = rng.standard_normal(len(_time(duration_s, sampling_rate)))
    bright = _filter(noise, sampling_rate, "highpass", rng.uniform(1500, 3500))
    return rng.uniform(0.2, 0.5) * noise + bright


@_waveform
def clicking(rng: np.random.Generator, duration_s: float, sampling_rate: int) -> np.ndarray:
    """A fast, regular train of sharp high-passed clicks."""
    n = len(_time(duration_s, sampling_rate))
    rate = rng.uniform(6, 18)
    times = np.arange(rng.uniform(0, min(1 / rate, duration_s / 2)), duration_s, 1 / rate)
    times = times + rng.normal(0, 0.04 / rate, len(times))
    k = max(4, int(0.003 * sampling_rate))
    kernel = rng.standard_normal(k) * np.exp(-np.arange(k) / (0.25 * k))
    clicks = _place(times, rng.uniform(0.7, 1.0, len(times)), kernel, n, sampling_rate)
    return _filter(clicks, sampling_rate, "highpass", rng.uniform(1000, 2000))


@_waveform
def hum(rng: np.random.Generator, duration_s: float, sampling_rate: int) -> np.ndarray:
    """Low electrical hum: 50 or 60 Hz mains and its first harmonics, perfectly steady."""
    t = _time(duration_s, sampling_rate)
    f0 = rng.choice([50.0, 60.0]) * rng.uniform(0.99, 1.01)
    weights = np.array([1.0, 0.7, 0.5, 0.35, 0.2, 0.12]) * rng.uniform(0.6, 1.0, 6)
    out = sum(w * np.sin(2 * np.pi * f0 * (h + 1) * t + rng.uniform(0, 2 * np.pi)) for h, w in enumerate(weights))
    return out + 0.01 * rng.standard_normal(len(t))


@_waveform
def knocking(rng: np.random.Generator, duration_s: float, sampling_rate: int) -> np.ndarray:
    """Groups of two to four dull, quickly decaying low thuds."""
    n = len(_time(duration_s, sampling_rate))
    interval, pause = rng.uniform(0.15, 0.3), rng.uniform(0.3, 0.6)
    times, t = [], rng.uniform(0.0, min(0.05, duration_s / 2))
    while not times or t < duration_s - 0.1:
        for _ in range(int(rng.integers(2, 5))):
            if times and t >= duration_s - 0.1:
                break
            times.append(t)
            t += interval * rng.uniform(0.9, 1.1)
        t += pause
    tk = _time(0.25, sampling_rate)
    body = np.sin(2 * np.pi * rng.uniform(70, 160) * tk) * np.exp(-tk / rng.uniform(0.02, 0.05))
    transient = _filter(rng.standard_normal(len(tk)), sampling_rate, "lowpass", 900) * np.exp(-tk / 0.004)
    kernel = body + 0.6 * transient
    times = np.asarray(times)
    return _place(times, rng.uniform(0.6, 1.0, len(times)), kernel, n, sampling_rate)


# Risset's additive bell: inharmonic partial ratios with their relative amplitudes.
_BELL_RATIOS = np.array([0.56, 0.92, 1.19, 1.7, 2.0, 2.74, 3.0, 3.76, 4.07])
_BELL_WEIGHTS = np.array([1.0, 0.67, 1.0, 1.8, 2.67, 1.67, 1.46, 1.33, 1.33]) / 2.67


@_waveform
def bell(rng: np.random.Generator, duration_s: float, sampling_rate: int) -> np.ndarray:
    """Struck bell: inharmonic partials, the higher ones dying away faster; struck again every second or so."""
    t = _time(duration_s, sampling_rate)
    base, ring = rng.uniform(350, 900), rng.uniform(0.4, 1.0)
    period = rng.uniform(0.8, 1.4)
    since_strike = t % period
    out = np.zeros_like(t)
    for ratio, weight in zip(_BELL_RATIOS, _BELL_WEIGHTS):
        freq = base * ratio
        if freq < _max_freq(sampling_rate):
            decay = ring / (ratio**0.7)
            out += weight * np.sin(2 * np.pi * freq * since_strike) * np.exp(-since_strike / decay)
    return out


@_waveform
def whistle(rng: np.random.Generator, duration_s: float, sampling_rate: int) -> np.ndarray:
    """A high, nearly pure tone with a slow vibrato and a little breath noise."""
    t = _time(duration_s, sampling_rate)
    center = min(rng.uniform(1800, 3000), _max_freq(sampling_rate) / 1.05)
    freq = center * (1 + rng.uniform(0.01, 0.03) * np.sin(2 * np.pi * rng.uniform(4.5, 7.0) * t))
    breath = _filter(rng.standard_normal(len(t)), sampling_rate, "bandpass", [0.8 * center, 1.2 * center])
    return np.sin(_phase(freq, sampling_rate)) + 0.3 * breath


@_waveform
def engine(rng: np.random.Generator, duration_s: float, sampling_rate: int) -> np.ndarray:
    """Low-passed rumble plus a mechanical mid band, both amplitude-modulated at the firing rate."""
    t = _time(duration_s, sampling_rate)
    firing = rng.uniform(15, 35)
    rumble = _filter(rng.standard_normal(len(t)), sampling_rate, "lowpass", rng.uniform(150, 300), order=4)
    mid = _filter(rng.standard_normal(len(t)), sampling_rate, "bandpass", [500, rng.uniform(1000, 1600)])
    modulation = 1 + 0.8 * np.sin(2 * np.pi * firing * t)
    return modulation * (rumble / (rumble.std() + 1e-8) + 0.25 * mid / (mid.std() + 1e-8))


@_waveform
def rain(rng: np.random.Generator, duration_s: float, sampling_rate: int) -> np.ndarray:
    """Random, irregular drops of widely varying loudness over a soft wash, in a mid band."""
    n = len(_time(duration_s, sampling_rate))
    n_drops = max(1, rng.poisson(rng.uniform(60, 250) * duration_s))
    times = rng.uniform(0, duration_s, n_drops)
    amplitudes = rng.lognormal(0.0, 0.8, n_drops)
    k = max(4, int(0.004 * sampling_rate))
    kernel = rng.standard_normal(k) * np.exp(-np.arange(k) / (0.3 * k))
    drops = _place(times, amplitudes, kernel, n, sampling_rate)
    drops = drops + 0.05 * drops.std() * rng.standard_normal(n)
    return _filter(drops, sampling_rate, "bandpass", [rng.uniform(600, 1000), rng.uniform(3000, 4500)])


@_waveform
def buzzer(rng: np.random.Generator, duration_s: float, sampling_rate: int) -> np.ndarray:
    """A harsh low square wave, gently low-passed to tame aliasing."""
    t = _time(duration_s, sampling_rate)
    square = np.sign(np.sin(2 * np.pi * rng.uniform(110, 260) * t) + 1e-9)
    return _filter(square, sampling_rate, "lowpass", 5000)


@dataclass(frozen=True)
class SoundEvent:
    """One kind of sound in the synthetic world.

    Args:
        name (`str`):
            Event kind name, as stored in the `events` column.
        generate (`Callable[[np.random.Generator, float, int], np.ndarray]`):
            Makes one randomised instance from `(rng, duration_s, sampling_rate)`.
        keywords (`frozenset[str]`):
            Word tokens that name this kind in a caption; no two kinds share one.
        noun_phrases (`tuple[str, ...]`):
            Phrases that read as a noun phrase ("rapid clicking"), usable after "followed by".
        clauses (`tuple[str, ...]`):
            Phrases that read as a clause ("a siren wails").
    """

    name: str
    generate: EventGenerator
    keywords: frozenset[str]
    noun_phrases: tuple[str, ...]
    clauses: tuple[str, ...]

    @property
    def phrases(self) -> tuple[str, ...]:
        return self.noun_phrases + self.clauses


def _event(name, generate, keywords, noun_phrases, clauses) -> SoundEvent:
    return SoundEvent(name, generate, frozenset(keywords), tuple(noun_phrases), tuple(clauses))


EVENTS: dict[str, SoundEvent] = {
    e.name: e
    for e in (
        _event(
            "beep",
            beep,
            {"beep", "beeps", "beeping", "bleep", "bleeps"},
            ["a steady beeping", "a series of beeps", "electronic beeping", "repeated beeps"],
            ["something beeps repeatedly", "a device beeps", "a machine beeps steadily"],
        ),
        _event(
            "chirp",
            chirp,
            {"chirp", "chirps", "chirping", "sweep", "sweeps"},
            ["a rising chirp", "an upward sweep", "a rising electronic chirp", "a high chirping sweep"],
            ["a tone sweeps upward", "a chirp rises in pitch", "something chirps upward"],
        ),
        _event(
            "siren",
            siren,
            {"siren", "sirens"},
            ["a wailing siren", "a loud siren", "an emergency siren"],
            ["a siren wails", "a siren blares", "a siren sounds", "an emergency siren wails"],
        ),
        _event(
            "static",
            static,
            {"static", "hiss", "hisses", "hissing"},
            ["a burst of static", "loud static", "a steady hiss", "hissing static"],
            ["static hisses", "something hisses loudly", "white noise hisses steadily"],
        ),
        _event(
            "clicking",
            clicking,
            {"click", "clicks", "clicking", "clicked", "ticking", "ticks"},
            ["rapid clicking", "a series of clicks", "fast ticking", "mechanical clicking"],
            ["something clicks rapidly", "a mechanism ticks quickly", "a device clicks repeatedly"],
        ),
        _event(
            "hum",
            hum,
            {"hum", "hums", "humming", "hummed"},
            ["a low electrical hum", "a low hum", "mains humming", "a steady electric hum"],
            ["a transformer hums", "an appliance hums quietly", "electrical equipment hums"],
        ),
        _event(
            "knocking",
            knocking,
            {"knock", "knocks", "knocking", "knocked", "thud", "thuds", "thudding"},
            ["knocking on a door", "a few loud knocks", "dull thuds", "someone knocking"],
            ["someone knocks on a door", "a person knocks several times", "something thuds repeatedly"],
        ),
        _event(
            "bell",
            bell,
            {"bell", "bells", "chime", "chimes", "chiming"},
            ["a ringing bell", "a bell ringing", "a bright chime", "bells chiming"],
            ["a bell rings", "a bell chimes", "a small bell rings out"],
        ),
        _event(
            "whistle",
            whistle,
            {"whistle", "whistles", "whistling", "whistled"},
            ["a high whistle", "a shrill whistle", "someone whistling"],
            ["someone whistles", "a person whistles a steady note", "a whistle blows"],
        ),
        _event(
            "engine",
            engine,
            {"engine", "engines", "motor", "motors", "rumble", "rumbles", "rumbling"},
            ["an engine idling", "a rumbling engine", "a low engine rumble", "a motor running"],
            ["an engine rumbles", "an engine idles", "a motor runs"],
        ),
        _event(
            "rain",
            rain,
            {"rain", "raindrops", "crackle", "crackles", "crackling", "patter", "pattering"},
            ["rain falling", "light rain", "raindrops pattering", "a soft crackling"],
            ["rain falls", "rain patters down", "something crackles softly"],
        ),
        _event(
            "buzzer",
            buzzer,
            {"buzzer", "buzzers", "buzz", "buzzes", "buzzing"},
            ["a loud buzzer", "a harsh buzzing", "a buzzer sounding"],
            ["a buzzer sounds", "a buzzer goes off", "something buzzes harshly"],
        ),
    )
}
EVENT_KINDS: tuple[str, ...] = tuple(EVENTS)
KEYWORD_TO_EVENT: dict[str, str] = {word: e.name for e in EVENTS.values() for word in e.keywords}

# Every connector keeps the order of mention equal to the order in time, so that the
# oracle can read order off the caption. The flag says whether a clause may follow
# ("followed by a siren wails" is not English; "followed by a wailing siren" is).
CONNECTORS: tuple[tuple[str, bool], ...] = (
    (", followed by ", False),
    (", then ", True),
    (" and then ", True),
    (" before ", True),
    (", and after that ", True),
)


def caption_for(events: Sequence[str], rng: np.random.Generator | None = None) -> str:
    """Writes a caption naming `events` in the given order, with random phrases and connectors.

    Args:
        events (`Sequence[str]`):
            Event kind names from [`EVENT_KINDS`], in the order they should be mentioned.
        rng (`np.random.Generator`, *optional*):
            Source of randomness for the phrase and connector choices; a fresh unseeded one if `None`.

    Returns:
        `str`: a lowercase caption such as `"a siren wails, followed by rapid clicking"`; `""` for no events.
    """
    rng = np.random.default_rng() if rng is None else rng
    parts = []
    for i, name in enumerate(events):
        if name not in EVENTS:
            raise ValueError(f"Unknown event kind {name!r}; known kinds are {list(EVENT_KINDS)}")
        event = EVENTS[name]
        if i == 0:
            parts.append(event.phrases[rng.integers(len(event.phrases))])
            continue
        connector, clause_ok = CONNECTORS[rng.integers(len(CONNECTORS))]
        choices = event.phrases if clause_ok else event.noun_phrases
        parts.append(connector + choices[rng.integers(len(choices))])
    return "".join(parts)


def parse_events(caption: str) -> list[str]:
    """Event kinds a caption mentions, in order of first mention (keyword match on word tokens).

    Args:
        caption (`str`):
            Any text; words outside the world's vocabulary are ignored.

    Returns:
        `list[str]`: distinct event kind names.

    Example:

    ```python
    >>> parse_events("A bell rings, then someone knocks on a door and the bell chimes again")
    ['bell', 'knocking']

    ```
    """
    mentioned = []
    for token in re.findall(r"[a-z]+", caption.lower()):
        name = KEYWORD_TO_EVENT.get(token)
        if name is not None and name not in mentioned:
            mentioned.append(name)
    return mentioned


def make_caption_variants(events: Sequence[str], rng: np.random.Generator | None = None) -> dict[str, str]:
    """Degraded captions of a clip, one per kind of mistake, for building preference pairs.

    Args:
        events (`Sequence[str]`):
            True event kinds of the clip, in temporal order.
        rng (`np.random.Generator`, *optional*):
            Source of randomness; a fresh unseeded one if `None`.

    Returns:
        `dict[str, str]`: caption per variant, only those that apply to `events`:
            - `"correct"`: a true caption (the oracle scores it 1).
            - `"hallucination"`: one absent event inserted at a random position.
            - `"omission"`: one event dropped (needs two or more events).
            - `"swap"`: two adjacent events in the wrong order (needs two or more events).
            - `"substitution"`: one event replaced by an absent one.
    """
    rng = np.random.default_rng() if rng is None else rng
    events = list(events)
    absent = [name for name in EVENT_KINDS if name not in events]
    variants = {"correct": caption_for(events, rng)}
    if absent:
        wrong = absent[rng.integers(len(absent))]
        at = int(rng.integers(len(events) + 1))
        variants["hallucination"] = caption_for(events[:at] + [wrong] + events[at:], rng)
    if len(events) >= 2:
        drop = int(rng.integers(len(events)))
        variants["omission"] = caption_for(events[:drop] + events[drop + 1 :], rng)
        i = int(rng.integers(len(events) - 1))
        swapped = events[:i] + [events[i + 1], events[i]] + events[i + 2 :]
        variants["swap"] = caption_for(swapped, rng)
    if absent and events:
        at = int(rng.integers(len(events)))
        substituted = events[:at] + [absent[rng.integers(len(absent))]] + events[at + 1 :]
        variants["substitution"] = caption_for(substituted, rng)
    return variants


def _references(events: Sequence[str], rng: np.random.Generator, n: int) -> list[str]:
    references: list[str] = []
    for _ in range(50 * n):
        caption = caption_for(events, rng)
        if caption not in references:
            references.append(caption)
            if len(references) == n:
                return references
    raise RuntimeError(f"Could not write {n} distinct captions for {list(events)}")


def _layout(rng: np.random.Generator, n_events: int, clip_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Onsets and durations (seconds) of `n_events` events in time order, mostly sequential."""
    longest = min(clip_seconds / n_events, 2.5)
    durations = rng.uniform(0.55, 0.95, n_events) * longest
    gaps = rng.dirichlet(np.ones(n_events + 1)) * (clip_seconds - durations.sum())
    onsets = gaps[0] + np.concatenate([[0.0], np.cumsum(durations + gaps[1:])[:-1]])
    for i in range(1, n_events):
        # Now and then an event starts a little before the previous one ends.
        if rng.random() < 0.25:
            overlap = rng.uniform(0.0, min(0.2, 0.25 * durations[i - 1]))
            onsets[i] -= gaps[i] + overlap
    onsets = np.round(onsets, 3)
    # Rounded down so that no event runs past the end of the clip.
    durations = np.floor(np.minimum(durations, clip_seconds - onsets) * 1000) / 1000
    return onsets, durations


def _fade(x: np.ndarray, sampling_rate: int, seconds: float = 0.01) -> np.ndarray:
    k = min(len(x) // 2, int(seconds * sampling_rate))
    if k > 0:
        ramp = np.linspace(0.0, 1.0, k)
        x[:k] *= ramp
        x[-k:] *= ramp[::-1]
    return x


def synthesize_clip(
    events: Sequence[str],
    onsets: Sequence[float],
    durations: Sequence[float],
    rng: np.random.Generator,
    sampling_rate: int = 16000,
    clip_seconds: float = 4.0,
) -> np.ndarray:
    """Mixes randomised instances of `events` at the given times over faint background noise.

    Args:
        events (`Sequence[str]`):
            Event kind names.
        onsets (`Sequence[float]`):
            Start of each event, in seconds.
        durations (`Sequence[float]`):
            Length of each event, in seconds.
        rng (`np.random.Generator`):
            Source of randomness for the event parameters, loudness and background.
        sampling_rate (`int`, *optional*, defaults to `16000`):
            Output sampling rate.
        clip_seconds (`float`, *optional*, defaults to `4.0`):
            Output length, in seconds.

    Returns:
        `np.ndarray`: float32 mono waveform of `round(clip_seconds * sampling_rate)` samples, peak 0.9.
    """
    n = int(round(clip_seconds * sampling_rate))
    mix = np.zeros(n)
    for name, onset, duration in zip(events, onsets, durations):
        wave = np.asarray(EVENTS[name].generate(rng, duration, sampling_rate), dtype=np.float64)
        wave = _fade(wave / (np.abs(wave).max() + 1e-12), sampling_rate)
        start = int(round(onset * sampling_rate))
        wave = wave[: max(0, n - start)]
        mix[start : start + len(wave)] += 10 ** (rng.uniform(-9.0, 0.0) / 20) * wave
    mix += 10 ** (rng.uniform(-50.0, -38.0) / 20) * rng.standard_normal(n)
    return (0.9 * mix / (np.abs(mix).max() + 1e-12)).astype(np.float32)


def make_world(
    n_clips: int,
    seed: int = 0,
    sampling_rate: int = 16000,
    clip_seconds: float = 4.0,
    min_events: int = 1,
    max_events: int = 3,
) -> datasets.Dataset:
    """Synthesizes a captioned audio dataset: each clip holds a few distinct sound events in time order.

    Clip `i` depends only on `(seed, i)`, so the same arguments give byte-identical datasets and a
    larger `n_clips` extends a smaller one.

    Args:
        n_clips (`int`):
            Number of clips.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the world.
        sampling_rate (`int`, *optional*, defaults to `16000`):
            Sampling rate of the audio.
        clip_seconds (`float`, *optional*, defaults to `4.0`):
            Length of each clip, in seconds.
        min_events (`int`, *optional*, defaults to `1`):
            Fewest events in a clip.
        max_events (`int`, *optional*, defaults to `3`):
            Most events in a clip; events within a clip are distinct kinds.

    Returns:
        `datasets.Dataset` with columns:
            - `clip_id` (`str`): `"synth-000042"`.
            - `audio` (`datasets.Audio(decode=False)`): `{"bytes": <16-bit PCM WAV>, "path": "<clip_id>.wav"}`;
              decode with [`~hfpref.data.audio.decode_audio`], never through `datasets` (which needs torchcodec).
            - `caption` (`str`): the true caption, events named in temporal order.
            - `references` (`list[str]`): five distinct true captions, the first being `caption`.
            - `events` (`list[str]`): event kind names in temporal order.
            - `onsets`, `durations` (`list[float]`): event timing, in seconds.

    Example:

    ```python
    >>> world = make_world(2, seed=0, clip_seconds=1.0)
    >>> world.column_names
    ['clip_id', 'audio', 'caption', 'references', 'events', 'onsets', 'durations']

    ```
    """
    if n_clips < 0:
        raise ValueError(f"n_clips={n_clips} must be >= 0")
    if not 1 <= min_events <= max_events <= len(EVENT_KINDS):
        raise ValueError(
            f"min_events={min_events}, max_events={max_events} must satisfy 1 <= min_events <= max_events <= "
            f"{len(EVENT_KINDS)} (the number of event kinds)"
        )
    if clip_seconds <= 0 or sampling_rate <= 0:
        raise ValueError(f"clip_seconds={clip_seconds} and sampling_rate={sampling_rate} must be positive")
    columns: dict[str, list] = {
        name: [] for name in ("clip_id", "audio", "caption", "references", "events", "onsets", "durations")
    }
    for i in range(n_clips):
        audio_rng, text_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, i]).spawn(2))
        n_events = int(audio_rng.integers(min_events, max_events + 1))
        events = [EVENT_KINDS[k] for k in audio_rng.choice(len(EVENT_KINDS), size=n_events, replace=False)]
        onsets, durations = _layout(audio_rng, n_events, clip_seconds)
        waveform = synthesize_clip(events, onsets, durations, audio_rng, sampling_rate, clip_seconds)
        references = _references(events, text_rng, 5)
        clip_id = f"synth-{i:06d}"
        columns["clip_id"].append(clip_id)
        columns["audio"].append(audio_value(waveform, sampling_rate, path=f"{clip_id}.wav"))
        columns["caption"].append(references[0])
        columns["references"].append(references)
        columns["events"].append(events)
        columns["onsets"].append(onsets.tolist())
        columns["durations"].append(durations.tolist())
    features = datasets.Features(
        {
            "clip_id": datasets.Value("string"),
            # A plain struct, cast below: Audio.encode_example imports torchcodec even for bytes.
            "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
            "caption": datasets.Value("string"),
            "references": datasets.Sequence(datasets.Value("string")),
            "events": datasets.Sequence(datasets.Value("string")),
            "onsets": datasets.Sequence(datasets.Value("float64")),
            "durations": datasets.Sequence(datasets.Value("float64")),
        }
    )
    world = datasets.Dataset.from_dict(columns, features=features)
    return ensure_audio_column(world, "audio", sampling_rate=sampling_rate)
