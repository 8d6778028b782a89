"""
A speech world for offline speech-emotion captioning: spoken clips whose prosody is known, captioned with it.

Each clip draws an emotion, a voice (male or female) and a pitch register (low or high); the emotion fixes the
speaking rate, loudness and intonation (angry: fast, loud, falling; happy: fast, loud, rising; fearful: fast, soft,
rising; sad: slow, soft, falling; calm: slow, soft, flat; neutral: slow, loud, flat). Captions name those clues in
the words of [`~hfpref.prompts.clue_vocabulary`], so the acoustic-prompt parser, the clue-overlap judge and the
clue-overlap metric all read them, and KD and PO-regularization (AlignCap) can be run and tested with no data.

Two voices speak it:

- `"espeak"`: the `espeak-ng` program (Debian package `espeak-ng`) reads a short sentence with the clip's rate
  (`-s`), pitch (`-p`), voice variant (`en+m3` / `en+f3`) and final punctuation (`?` rises, `.` falls, none stays
  flat);
- `"procedural"`: a voiced signal synthesized here, no program needed: a glottal-like sawtooth source at the clip's
  fundamental frequency (male ~115 Hz, female ~210 Hz, x0.8 or x1.3 for the register) following a rising, falling or
  flat contour, shaped by two vowel formants that change every syllable, gated into syllables at the speaking rate.

`backend="auto"` uses espeak-ng when it is on the PATH and the procedural voice otherwise, and says which in the
`backend` column. Both scale each clip to a fixed peak (0.8 loud, 0.12 soft) so loudness is a property of the audio.
"""

from __future__ import annotations

import shutil
import subprocess

import datasets
import numpy as np
from scipy import signal

from ..audio import audio_value, decode_audio, ensure_audio_column


EMOTION_PROSODY = {
    "angry": {"rhythm": "fast", "volume": "loud", "intonation": "falling"},
    "happy": {"rhythm": "fast", "volume": "loud", "intonation": "rising"},
    "fearful": {"rhythm": "fast", "volume": "soft", "intonation": "rising"},
    "sad": {"rhythm": "slow", "volume": "soft", "intonation": "falling"},
    "calm": {"rhythm": "slow", "volume": "soft", "intonation": "flat"},
    "neutral": {"rhythm": "slow", "volume": "loud", "intonation": "flat"},
}
EMOTIONS = tuple(EMOTION_PROSODY)
VOICES = ("male", "female")
PITCHES = ("low-pitched", "high-pitched")
BACKENDS = ("auto", "espeak", "procedural")

SENTENCES = (
    "the train leaves at seven tonight",
    "I put the letters on your desk",
    "we are moving to a new house",
    "she called me twice this morning",
    "the results came back today",
    "you forgot to lock the door",
    "they changed the plan again",
    "my brother is coming home",
)

_SYLLABLES_PER_SECOND = {"slow": 2.6, "fast": 6.0}
_PEAK = {"loud": 0.8, "soft": 0.12}
_F0 = {"male": 115.0, "female": 210.0}
_PITCH_FACTOR = {"low-pitched": 0.8, "high-pitched": 1.3}
_CONTOUR = {"rising": (0.85, 1.3), "falling": (1.25, 0.8), "flat": (1.0, 1.0)}
# (F1, F2) of a few vowels, in Hz.
_VOWELS = ((730, 1090), (270, 2290), (300, 870), (530, 1840), (640, 1190), (490, 1350))
_ESPEAK_RATE = {"slow": 100, "fast": 230}  # words per minute
_ESPEAK_PITCH = {"low-pitched": 20, "high-pitched": 80}  # 0..99
_ESPEAK_PUNCTUATION = {"rising": "?", "falling": ".", "flat": ""}

_ADVERB = {"fast": "quickly", "slow": "slowly", "loud": "loudly", "soft": "softly"}
_PERSON = {"male": "man", "female": "woman"}
_PRONOUN = {"male": "he", "female": "she"}
_TEMPLATES = (
    "A {person} speaks {rhythm_adv} in a {volume}, {pitch} voice with a {intonation} intonation, sounding {emotion}.",
    "The {voice} speaker sounds {emotion}, talking {rhythm_adv} and {volume_adv} with a {pitch} voice and {intonation} intonation.",
    "In a {pitch} voice, a {person} talks {volume_adv} and {rhythm_adv}; the intonation is {intonation} and {pronoun} seems {emotion}.",
    "A {emotion} {voice} voice, {pitch} and {volume}, speaking {rhythm_adv} with a {intonation} intonation.",
    "{Pronoun} sounds {emotion}: the speech is {rhythm} and {volume}, the voice {pitch}, the intonation {intonation}.",
    "A {person} with a {pitch} voice says something {rhythm_adv} and {volume_adv}, {intonation} in intonation and {emotion} in mood.",
)


def espeak_available() -> bool:
    """Whether the `espeak-ng` program is on the PATH."""
    return shutil.which("espeak-ng") is not None


def speech_caption(clip: dict, template: int = 0) -> str:
    """
    One caption of a clip's prosody, from template `template` (0..5).

    Example:
    ```python
    >>> clip = {"emotion": "sad", "voice": "female", "pitch": "low-pitched", **EMOTION_PROSODY["sad"]}
    >>> speech_caption(clip)
    'A woman speaks slowly in a soft, low-pitched voice with a falling intonation, sounding sad.'

    ```
    """
    fields = {
        "person": _PERSON[clip["voice"]],
        "voice": clip["voice"],
        "pronoun": _PRONOUN[clip["voice"]],
        "Pronoun": _PRONOUN[clip["voice"]].capitalize(),
        "emotion": clip["emotion"],
        "pitch": clip["pitch"],
        "rhythm": clip["rhythm"],
        "rhythm_adv": _ADVERB[clip["rhythm"]],
        "volume": clip["volume"],
        "volume_adv": _ADVERB[clip["volume"]],
        "intonation": clip["intonation"],
    }
    return _TEMPLATES[template % len(_TEMPLATES)].format(**fields)


CLUE_FIELDS = {"emotion": EMOTIONS, "voice": VOICES, "pitch": PITCHES}


def caption_alternatives(clip: dict, caption: str, field: str) -> tuple[list[str], int]:
    """
    The same caption with `field` set to each of its values, and the index of the clip's own: the candidates of a
    forced choice that only the audio can settle (the template, the other clues and the transcript are unchanged, so
    the caption prior alone cannot tell them apart beyond the values' base rates). Changing the emotion changes the
    rhythm, volume and intonation it fixes as well, so no candidate contradicts itself.

    Args:
        clip (`dict`): a row of [`make_speech_world`] (`emotion`, `voice`, `pitch`, `rhythm`, `volume`, `intonation`).
        caption (`str`): one of the clip's captions.
        field (`str`): `"emotion"`, `"voice"` or `"pitch"`.

    Example:
    ```python
    >>> clip = {"emotion": "sad", "voice": "female", "pitch": "low-pitched", **EMOTION_PROSODY["sad"]}
    >>> captions, answer = caption_alternatives(clip, speech_caption(clip, 4), "voice")
    >>> captions, answer
    (['He sounds sad: the speech is slow and soft, the voice low-pitched, the intonation falling.', 'She sounds sad: the speech is slow and soft, the voice low-pitched, the intonation falling.'], 1)

    ```
    """
    if field not in CLUE_FIELDS:
        raise ValueError(f"field={field!r} is not one of {list(CLUE_FIELDS)}")
    template = next((k for k in range(len(_TEMPLATES)) if speech_caption(clip, k) == caption), None)
    if template is None:
        raise ValueError(f"{caption!r} is not a speech-world caption of the clip {speech_clues(clip)}")
    values = CLUE_FIELDS[field]
    captions = []
    for value in values:
        alternative = {**clip, field: value, **(EMOTION_PROSODY[value] if field == "emotion" else {})}
        captions.append(speech_caption(alternative, template))
    return captions, values.index(clip[field])


def speech_clues(clip: dict) -> list[str]:
    """The canonical emotional clues of a clip: emotion, pitch, rhythm, volume, intonation."""
    return [clip["emotion"], clip["pitch"], clip["rhythm"], clip["volume"], clip["intonation"]]


def procedural_speech(
    clip: dict, rng: np.random.Generator, sampling_rate: int = 16000, seconds: float = 2.0
) -> np.ndarray:
    """
    A voiced, syllabic signal with the clip's prosody (see the module docstring), float32, peak 1.

    Args:
        clip (`dict`): `voice`, `pitch`, `rhythm`, `intonation` of the clip.
        rng (`np.random.Generator`): jitter of the rate, the fundamental and the vowels.
        sampling_rate (`int`, *optional*, defaults to `16000`): output rate.
        seconds (`float`, *optional*, defaults to `2.0`): output length.
    """
    n = int(round(seconds * sampling_rate))
    t = np.arange(n) / sampling_rate
    start, end = _CONTOUR[clip["intonation"]]
    f0 = _F0[clip["voice"]] * _PITCH_FACTOR[clip["pitch"]] * rng.uniform(0.93, 1.07)
    contour = f0 * np.geomspace(start, end, n) * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
    phase = 2 * np.pi * np.cumsum(contour) / sampling_rate
    source = signal.sawtooth(phase) + 0.05 * rng.standard_normal(n)

    rate = _SYLLABLES_PER_SECOND[clip["rhythm"]] * rng.uniform(0.9, 1.1)
    syllable = max(1, int(sampling_rate / rate))
    voiced = int(0.7 * syllable)
    out = np.zeros(n)
    for onset in range(int(rng.uniform(0.02, 0.1) * sampling_rate), n, syllable):
        stop = min(n, onset + voiced)
        if stop - onset < 16:
            break
        f1, f2 = _VOWELS[int(rng.integers(len(_VOWELS)))]
        segment = source[onset:stop]
        shaped = sum(
            gain
            * signal.sosfilt(signal.butter(2, [0.8 * f, 1.2 * f], "bandpass", fs=sampling_rate, output="sos"), segment)
            for f, gain in ((f1, 1.0), (f2, 0.6))
        )
        out[onset:stop] += np.hanning(stop - onset) * shaped
    out /= np.abs(out).max() + 1e-12
    return out.astype(np.float32)


def espeak_speech(
    clip: dict, text: str, sampling_rate: int = 16000, seconds: float = 2.0, timeout: float = 30.0
) -> np.ndarray:
    """
    The clip's sentence read by espeak-ng with its prosody, resampled to `sampling_rate`, cut or zero-padded to
    `seconds`, peak 1.

    Raises:
        `RuntimeError`: when espeak-ng is missing, fails or times out (its stderr is included).
    """
    if not espeak_available():
        raise RuntimeError("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    variant = "en+m3" if clip["voice"] == "male" else "en+f3"
    command = [
        "espeak-ng", "-v", variant, "-s", str(_ESPEAK_RATE[clip["rhythm"]]), "-p", str(_ESPEAK_PITCH[clip["pitch"]]),
        "-a", "150", "--stdout", text + _ESPEAK_PUNCTUATION[clip["intonation"]],
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"espeak-ng timed out after {timeout} s on {text!r}") from error
    if done.returncode != 0 or not done.stdout:
        raise RuntimeError(f"espeak-ng failed ({done.returncode}) on {text!r}: {done.stderr.decode(errors='replace')}")
    # espeak-ng writes to a pipe, so its WAV header carries a placeholder data size (0x7FFFF000) that decode_audio
    # reads as "until the end of the data".
    waveform = decode_audio({"bytes": done.stdout, "path": f"espeak-ng output for {text!r}"}, sampling_rate)
    waveform = waveform.astype(np.float64)
    n = int(round(seconds * sampling_rate))
    waveform = np.pad(waveform[:n], (0, max(0, n - waveform.size)))
    waveform /= np.abs(waveform).max() + 1e-12
    return waveform.astype(np.float32)


def make_speech_world(
    n_clips: int,
    seed: int = 0,
    *,
    backend: str = "auto",
    sampling_rate: int = 16000,
    clip_seconds: float = 2.0,
    n_references: int = 3,
) -> datasets.Dataset:
    """
    Synthesize a speech-emotion captioning dataset whose prosody is known. Clip `i` depends only on `(seed, i)`.

    Args:
        n_clips (`int`): number of clips.
        seed (`int`, *optional*, defaults to `0`): seed of the world.
        backend (`str`, *optional*, defaults to `"auto"`):
            `"espeak"` (espeak-ng must be installed), `"procedural"`, or `"auto"` (espeak-ng when installed).
        sampling_rate (`int`, *optional*, defaults to `16000`): audio rate (SpeechTokenizer's is 16 kHz).
        clip_seconds (`float`, *optional*, defaults to `2.0`): clip length.
        n_references (`int`, *optional*, defaults to `3`): captions per clip (distinct templates), 1..6.

    Returns:
        `datasets.Dataset` with `clip_id`, `audio` (`datasets.Audio(decode=False)`), `caption` (the first
        reference), `references`, `clues` (canonical clues), `emotion`, `voice`, `pitch`, `rhythm`, `volume`,
        `intonation`, `transcript` and `backend` (`"espeak"` or `"procedural"`).

    Example:
    ```python
    >>> world = make_speech_world(2, backend="procedural", clip_seconds=0.5)
    >>> world[0]["clues"] == [world[0][k] for k in ("emotion", "pitch", "rhythm", "volume", "intonation")]
    True

    ```
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {list(BACKENDS)}")
    if backend == "espeak" and not espeak_available():
        raise RuntimeError("backend='espeak' but espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    if not 1 <= n_references <= len(_TEMPLATES):
        raise ValueError(f"n_references={n_references} must be between 1 and {len(_TEMPLATES)}")
    if n_clips < 0 or clip_seconds <= 0:
        raise ValueError(f"n_clips={n_clips} must be >= 0 and clip_seconds={clip_seconds} > 0")
    voice_backend = ("espeak" if espeak_available() else "procedural") if backend == "auto" else backend
    rows: dict[str, list] = {
        k: []
        for k in ("clip_id", "audio", "caption", "references", "clues", "emotion", "voice", "pitch", "rhythm",
                  "volume", "intonation", "transcript", "backend")
    }  # fmt: skip
    for i in range(n_clips):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i]))
        emotion = EMOTIONS[int(rng.integers(len(EMOTIONS)))]
        clip = {
            "emotion": emotion,
            "voice": VOICES[int(rng.integers(len(VOICES)))],
            "pitch": PITCHES[int(rng.integers(len(PITCHES)))],
            **EMOTION_PROSODY[emotion],
        }
        transcript = SENTENCES[int(rng.integers(len(SENTENCES)))]
        if voice_backend == "espeak":
            waveform = espeak_speech(clip, transcript, sampling_rate, clip_seconds)
        else:
            waveform = procedural_speech(clip, rng, sampling_rate, clip_seconds)
        waveform = waveform * _PEAK[clip["volume"]] + 1e-3 * rng.standard_normal(waveform.size).astype(np.float32)
        templates = rng.permutation(len(_TEMPLATES))[:n_references]
        references = [speech_caption(clip, int(k)) for k in templates]
        clip_id = f"speech-{i:06d}"
        for key, value in clip.items():
            rows[key].append(value)
        rows["clip_id"].append(clip_id)
        rows["audio"].append(audio_value(waveform, sampling_rate, path=f"{clip_id}.wav"))
        rows["caption"].append(references[0])
        rows["references"].append(references)
        rows["clues"].append(speech_clues(clip))
        rows["transcript"].append(transcript)
        rows["backend"].append(voice_backend)
    string, strings = datasets.Value("string"), datasets.Sequence(datasets.Value("string"))
    features = datasets.Features(
        {
            **{k: string for k in rows},
            "audio": {"bytes": datasets.Value("binary"), "path": string},
            "references": strings,
            "clues": strings,
        }
    )
    world = datasets.Dataset.from_dict(rows, features=datasets.Features({k: features[k] for k in rows}))
    return ensure_audio_column(world, "audio", sampling_rate=sampling_rate)


def speech_emotion_splits(script_args, seed: int = 0) -> datasets.DatasetDict:
    """
    The `train` / `test` splits of a speech-emotion recipe
    ([`~hfpref.scripts.utils.AlignCapScriptArguments`]): `dataset_name` loaded with
    [`~hfpref.data.loading.load_any_dataset`], or the speech world when it is `None`. A `references` column is added
    (the caption alone) when the dataset has none.
    """
    from ..loading import load_any_dataset  # noqa: PLC0415

    if script_args.dataset_name is None:
        world = make_speech_world(
            script_args.speech_world_clips,
            seed,
            backend=script_args.speech_world_backend,
            clip_seconds=script_args.speech_world_seconds,
        )
        n_train = script_args.speech_world_clips - script_args.speech_world_test_clips
        splits = datasets.DatasetDict(
            {"train": world.select(range(n_train)), "test": world.select(range(n_train, len(world)))}
        )
    else:
        splits = datasets.DatasetDict(
            {
                "train": load_any_dataset(script_args.dataset_name, split=script_args.dataset_train_split),
                "test": load_any_dataset(script_args.dataset_name, split=script_args.dataset_test_split),
            }
        )
    for name, split in splits.items():
        for column in (script_args.audio_column, script_args.caption_column):
            if column not in split.column_names:
                raise ValueError(f"split {name!r} has no column {column!r}; it has {split.column_names}")
        if "references" not in split.column_names:
            splits[name] = split.add_column("references", [[c] for c in split[script_args.caption_column]])
    return splits
