"""The offline speech world: prosody known, captions naming it, procedural and espeak-ng voices."""

import numpy as np
import pytest

from hfpref.data.audio import decode_audio
from hfpref.data.synthetic.speech_world import (
    EMOTION_PROSODY,
    espeak_available,
    make_speech_world,
    speech_emotion_splits,
)
from hfpref.prompts.emotion_clues import extract_emotion_clues
from hfpref.scripts.utils import AlignCapScriptArguments


def _f0(waveform, sr=16000):
    """Fundamental frequency of the loudest half-second, by autocorrelation (60-500 Hz)."""
    frame = waveform[np.argmax(np.convolve(waveform**2, np.ones(800), "same")) - 2000 :][:4000]
    ac = np.correlate(frame, frame, "full")[len(frame) - 1 :]
    lags = np.arange(sr // 500, sr // 60)
    return sr / lags[np.argmax(ac[lags])]


def _syllable_rate(waveform, sr=16000):
    """Energy-envelope peaks per second (10 ms frames, smoothed)."""
    energy = np.convolve(np.abs(waveform), np.ones(400) / 400, "same")[::160]
    smooth = np.convolve(energy, np.ones(5) / 5, "same")
    above = smooth > 0.3 * smooth.max()
    return np.sum(above[1:] & ~above[:-1]) / (len(waveform) / sr)


def test_procedural_world_is_deterministic_and_its_captions_name_its_prosody():
    world = make_speech_world(24, seed=1, backend="procedural")
    assert set(world["backend"]) == {"procedural"}  # the path that ran
    again = make_speech_world(24, seed=1, backend="procedural")
    assert world["audio"] == again["audio"] and world["references"] == again["references"]
    for row in world:
        assert row["clues"] == [row["emotion"], row["pitch"], row["rhythm"], row["volume"], row["intonation"]]
        assert {k: row[k] for k in ("rhythm", "volume", "intonation")} == EMOTION_PROSODY[row["emotion"]]
        for reference in row["references"]:  # every paraphrase names every clue, for the parser
            assert sorted(extract_emotion_clues(reference)) == sorted(row["clues"])
        assert len(set(row["references"])) == 3 and row["caption"] == row["references"][0]


def test_procedural_audio_carries_loudness_pitch_and_rate():
    world = make_speech_world(36, seed=2, backend="procedural")
    audio = [decode_audio(a, 16000) for a in world["audio"]]
    peaks = {v: [np.abs(w).max() for w, x in zip(audio, world["volume"]) if x == v] for v in ("loud", "soft")}
    assert min(peaks["loud"]) > 0.7 and max(peaks["soft"]) < 0.15
    f0 = {(r["voice"], r["pitch"]): [] for r in world}
    for w, r in zip(audio, world):
        f0[(r["voice"], r["pitch"])].append(_f0(w))
    for voice in ("male", "female"):
        if (voice, "low-pitched") in f0 and (voice, "high-pitched") in f0:
            assert np.median(f0[(voice, "high-pitched")]) > 1.3 * np.median(f0[(voice, "low-pitched")])
    rates = {
        v: np.mean([_syllable_rate(w) for w, x in zip(audio, world["rhythm"]) if x == v]) for v in ("slow", "fast")
    }
    assert rates["fast"] > 1.6 * rates["slow"]


def test_espeak_world_speaks_with_the_clip_prosody():
    # Not skipped without espeak-ng: `make test` installs it, and make_speech_world then fails naming the package.
    assert espeak_available(), (
        "espeak-ng is not installed (Debian: apt-get install espeak-ng); `make test` installs it"
    )
    world = make_speech_world(8, seed=0, backend="espeak", clip_seconds=2.0)
    assert set(world["backend"]) == {"espeak"}
    audio = [decode_audio(a, 16000) for a in world["audio"]]
    for w, r in zip(audio, world):
        assert np.abs(w).max() == pytest.approx(0.8 if r["volume"] == "loud" else 0.12, abs=0.02)
    assert make_speech_world(2, backend="auto")["backend"] == ["espeak", "espeak"]


def test_backend_choice_and_errors(monkeypatch):
    monkeypatch.setattr("hfpref.data.synthetic.speech_world.shutil.which", lambda name: None)
    assert make_speech_world(1, backend="auto", clip_seconds=0.5)["backend"] == ["procedural"]
    with pytest.raises(RuntimeError, match="espeak-ng is not installed"):
        make_speech_world(1, backend="espeak")
    with pytest.raises(ValueError, match="backend='tts'"):
        make_speech_world(1, backend="tts")
    with pytest.raises(ValueError, match="n_references=9"):
        make_speech_world(1, n_references=9)


def test_recipe_splits_from_the_world_and_from_a_saved_dataset(tmp_path):
    args = AlignCapScriptArguments(
        speech_world_clips=6, speech_world_test_clips=2, speech_world_backend="procedural", speech_world_seconds=0.5
    )
    splits = speech_emotion_splits(args)
    assert (len(splits["train"]), len(splits["test"])) == (4, 2)
    splits["train"].remove_columns("references").save_to_disk(str(tmp_path / "ds"))
    loaded = speech_emotion_splits(
        AlignCapScriptArguments(dataset_name=str(tmp_path / "ds"), dataset_test_split="train")
    )
    assert loaded["train"]["references"] == [[c] for c in loaded["train"]["caption"]]
    with pytest.raises(ValueError, match="no column 'speech'"):
        speech_emotion_splits(
            AlignCapScriptArguments(
                dataset_name=str(tmp_path / "ds"), dataset_test_split="train", audio_column="speech"
            )
        )
    with pytest.raises(ValueError, match="speech_world_test_clips=6"):
        AlignCapScriptArguments(speech_world_clips=6, speech_world_test_clips=6)
