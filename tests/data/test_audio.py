import io
import logging
import pickle

import numpy as np
import pytest
import soundfile as sf
from datasets import Audio, Dataset

from hfpref.data.audio import (
    AudioDecodeError,
    audio_value,
    decode_audio,
    decode_audio_column,
    drop_bad_audio,
    encode_wav,
    ensure_audio_column,
)


def sine(frequency: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * frequency * np.arange(round(seconds * rate)) / rate)).astype(np.float32)


def peak_frequency(waveform: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform))))
    return float(np.fft.rfftfreq(len(waveform), 1 / rate)[np.argmax(spectrum)])


def write(path, samples, rate, subtype=None):
    sf.write(path, samples, rate, subtype=subtype)
    return str(path)


def dataset_of(values, **columns) -> Dataset:
    """An Audio(decode=False) dataset built without torchcodec (from_dict with Audio features would need it)."""
    return Dataset.from_dict({"audio": values, **columns}).cast_column("audio", Audio(decode=False))


@pytest.mark.parametrize(("suffix", "subtype"), [("wav", "PCM_16"), ("flac", "PCM_16"), ("ogg", "VORBIS")])
def test_round_trip_formats(tmp_path, suffix, subtype):
    clip = sine(440, 0.5, 16000)
    path = write(tmp_path / f"clip.{suffix}", clip, 16000, subtype)

    from_path = decode_audio(path, 16000)
    with open(path, "rb") as f:
        from_bytes = decode_audio({"bytes": f.read(), "path": None}, 16000)

    assert from_path.dtype == np.float32 and from_path.ndim == 1
    np.testing.assert_array_equal(from_path, from_bytes)
    if suffix == "ogg":  # lossy: same tone, not the same samples
        assert abs(len(from_path) - len(clip)) <= 1
        assert peak_frequency(from_path, 16000) == pytest.approx(440, abs=2)
    else:
        np.testing.assert_allclose(from_path, clip, atol=1e-4)


@pytest.mark.parametrize("source_rate", [8000, 22050, 44100, 48000, 96000])
@pytest.mark.parametrize("target_rate", [16000, 48000])
def test_resampling_keeps_length_and_pitch(tmp_path, source_rate, target_rate):
    path = write(tmp_path / "tone.wav", sine(440, 0.5, source_rate), source_rate, "FLOAT")

    waveform = decode_audio(path, target_rate)

    assert waveform.dtype == np.float32
    assert abs(len(waveform) - 0.5 * target_rate) <= 1
    assert peak_frequency(waveform, target_rate) == pytest.approx(440, abs=2)


def test_same_rate_is_not_resampled(tmp_path):
    clip = sine(440, 0.1, 22050)
    path = write(tmp_path / "tone.wav", clip, 22050, "FLOAT")
    np.testing.assert_array_equal(decode_audio(path, 22050), clip)


def test_stereo_and_multichannel_are_averaged(tmp_path):
    left = sine(440, 0.1, 16000)
    stereo = write(tmp_path / "stereo.wav", np.stack([left, np.zeros_like(left)], axis=1), 16000, "FLOAT")
    np.testing.assert_allclose(decode_audio(stereo, 16000), left / 2, atol=1e-7)

    quad = np.stack([left, -left, left, left], axis=1)
    path = write(tmp_path / "quad.flac", quad, 16000, "PCM_24")
    np.testing.assert_allclose(decode_audio(path, 16000), left / 2, atol=1e-5)


def test_decoded_array_dicts_are_downmixed_resampled_and_scaled():
    clip = sine(440, 0.5, 32000)
    channels_first = {"array": np.stack([clip, clip]), "sampling_rate": 32000}
    channels_last = {"array": np.stack([clip, clip], axis=1), "sampling_rate": 32000}
    expected = decode_audio({"array": clip, "sampling_rate": 32000}, 16000)

    assert len(expected) == 8000
    np.testing.assert_allclose(decode_audio(channels_first, 16000), expected, atol=1e-6)
    np.testing.assert_allclose(decode_audio(channels_last, 16000), expected, atol=1e-6)

    int16 = {"array": (clip * 32768).astype(np.int16), "sampling_rate": 32000}
    np.testing.assert_allclose(decode_audio(int16, 32000), clip, atol=1e-4)


def test_shortest_and_longest_clips(tmp_path):
    short = write(tmp_path / "short.wav", sine(440, 0.02, 8000), 8000)
    assert len(decode_audio(short, 16000)) == 320

    minutes = write(tmp_path / "long.wav", sine(440, 180, 44100, amplitude=0.1), 44100)
    waveform = decode_audio(minutes, 16000)
    assert abs(len(waveform) - 180 * 16000) <= 1
    assert peak_frequency(waveform[:16000], 16000) == pytest.approx(440, abs=1)


def test_bytes_win_over_path(tmp_path):
    wav = encode_wav(sine(440, 0.1, 16000), 16000)
    decoy = write(tmp_path / "decoy.wav", np.zeros(10, np.float32), 16000)

    waveform = decode_audio({"bytes": wav, "path": decoy}, 16000)

    np.testing.assert_allclose(waveform, sine(440, 0.1, 16000), atol=1e-4)
    np.testing.assert_array_equal(decode_audio(wav, 16000), waveform)


def test_path_like_and_dict_path(tmp_path):
    path = tmp_path / "clip.wav"
    write(path, sine(440, 0.1, 16000), 16000)
    np.testing.assert_array_equal(decode_audio(path, 16000), decode_audio({"bytes": None, "path": str(path)}, 16000))


def test_remote_paths_go_through_fsspec():
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/hfpref-test/remote.wav", encode_wav(sine(440, 0.1, 16000), 16000))
    try:
        assert len(decode_audio({"bytes": None, "path": "memory://hfpref-test/remote.wav"}, 8000)) == 800
    finally:
        fs.rm("/hfpref-test", recursive=True)


def test_decoding_audio_column_never_decodes_through_datasets(tmp_path):
    paths = [write(tmp_path / f"{i}.wav", sine(440, 0.1 * (i + 1), 8000), 8000) for i in range(3)]
    ds = Dataset.from_dict({"audio": paths}).cast_column("audio", Audio(sampling_rate=8000))
    assert ds.features["audio"].decode

    waveforms, kept = decode_audio_column(ds, sampling_rate=16000)
    assert kept == [0, 1, 2]
    assert [len(w) for w in waveforms] == [1600, 3200, 4800]

    raw = ensure_audio_column(ds)
    assert raw.features["audio"] == Audio(sampling_rate=8000, decode=False)
    assert raw[0]["audio"] == {"bytes": None, "path": paths[0]}


def test_ensure_audio_column_casts_paths_bytes_and_structs(tmp_path):
    path = write(tmp_path / "clip.wav", sine(440, 0.1, 16000), 16000)
    wav = encode_wav(sine(440, 0.1, 16000), 16000)

    for values in ([path], [wav], [audio_value(sine(440, 0.1, 16000), 16000, "clip.wav")]):
        ds = ensure_audio_column(Dataset.from_dict({"audio": values}), sampling_rate=16000)
        assert ds.features["audio"] == Audio(sampling_rate=16000, decode=False)
        assert len(decode_audio(ds[0]["audio"], 16000)) == 1600

    already = dataset_of([path])
    assert ensure_audio_column(already) is already


def test_missing_column_lists_present_columns():
    ds = Dataset.from_dict({"speech": ["a.wav"], "caption": ["a dog barks"]})
    for call in (ensure_audio_column, decode_audio_column, drop_bad_audio):
        with pytest.raises(ValueError, match=r"'audio' not found.*\['speech', 'caption'\]"):
            call(ds)


def test_unsupported_column_type():
    with pytest.raises(ValueError, match="expected datasets.Audio"):
        ensure_audio_column(Dataset.from_dict({"audio": [1, 2]}))


def bad_values(tmp_path) -> dict:
    """Undecodable values by reason, each with a file name the error must repeat."""
    write(tmp_path / "zero_frames.wav", np.zeros(0, np.float32), 16000)
    nan_clip = sine(440, 0.1, 16000)
    nan_clip[10] = np.nan
    write(tmp_path / "nan.wav", nan_clip, 16000, "FLOAT")
    (tmp_path / "empty.wav").write_bytes(b"")
    whole = encode_wav(sine(440, 0.5, 16000), 16000)
    (tmp_path / "truncated.wav").write_bytes(whole[: len(whole) // 2])  # header still claims 0.5 s
    return {
        "truncated": ({"bytes": None, "path": str(tmp_path / "truncated.wav")}, "truncated.wav", "truncated"),
        "http": ({"bytes": None, "path": "http://127.0.0.1:9/clip.wav"}, "http://127.0.0.1:9/clip.wav", "remote"),
        "corrupt": ({"bytes": b"not audio at all" * 8, "path": "corrupt.wav"}, "corrupt.wav", "corrupt"),
        "empty": ({"bytes": None, "path": str(tmp_path / "empty.wav")}, "empty.wav", "0 bytes"),
        "zero-frame": ({"bytes": None, "path": str(tmp_path / "zero_frames.wav")}, "zero_frames.wav", "0 frames"),
        "nan": ({"bytes": None, "path": str(tmp_path / "nan.wav")}, "nan.wav", "non-finite"),
        "missing": ({"bytes": None, "path": str(tmp_path / "missing.wav")}, "missing.wav", "not found"),
    }


@pytest.mark.parametrize("case", ["corrupt", "empty", "zero-frame", "nan", "missing", "truncated", "http"])
def test_bad_audio_raises_naming_file_and_row(tmp_path, case):
    value, name, reason = bad_values(tmp_path)[case]
    good = audio_value(sine(440, 0.1, 16000), 16000, "good.wav")

    with pytest.raises(AudioDecodeError, match=reason) as raised:
        decode_audio(value, 16000)
    assert name in str(raised.value)

    with pytest.raises(AudioDecodeError) as raised:
        decode_audio_column(dataset_of([good, good, value]), sampling_rate=16000)
    message = str(raised.value)
    assert name in message and "row 2" in message and "'audio'" in message and reason in message


def test_in_memory_bytes_without_path_are_named_as_such():
    with pytest.raises(AudioDecodeError, match="<in-memory bytes>.*row 7, column 'clip'"):
        decode_audio({"bytes": b"\x00" * 64, "path": None}, 16000, row=7, column="clip")


def test_too_short_to_resample():
    with pytest.raises(AudioDecodeError, match="too short to resample"):
        decode_audio({"array": np.ones(1, np.float32), "sampling_rate": 96000}, 16000)


def test_audio_decode_error_pickles():
    error = pickle.loads(pickle.dumps(AudioDecodeError("corrupt", file="x.wav", row=3, column="audio")))
    assert (error.file, error.row, error.column, str(error)) == (
        "x.wav",
        3,
        "audio",
        "cannot decode audio file 'x.wav' (row 3, column 'audio'): corrupt",
    )


def test_skip_bad_audio_drops_exactly_the_bad_rows(tmp_path, caplog):
    bad = bad_values(tmp_path)
    good = [audio_value(sine(440, 0.1 * (i + 1), 16000), 16000, f"good{i}.wav") for i in range(3)]
    values = [good[0], bad["corrupt"][0], good[1], bad["empty"][0], bad["zero-frame"][0], good[2]]
    values += [bad["nan"][0], bad["missing"][0], bad["truncated"][0], bad["http"][0]]
    ds = dataset_of(values, id=list(range(len(values))))

    with caplog.at_level(logging.WARNING, logger="hfpref.data.audio"):
        waveforms, kept = decode_audio_column(ds, sampling_rate=16000, skip_bad_audio=True)

    assert kept == [0, 2, 5]
    assert [len(w) for w in waveforms] == [1600, 3200, 4800]
    assert ds.select(kept)["id"] == [0, 2, 5]
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "Dropped 7 of 10 rows" in record.message
    for name in ("corrupt.wav", "empty.wav", "zero_frames.wav", "nan.wav", "missing.wav"):
        assert name in record.message
    assert "and 2 more" in record.message  # the warning names five files and counts the rest


def test_skip_bad_audio_names_first_files_and_counts_the_rest(caplog):
    ds = dataset_of([{"bytes": b"junk" * 16, "path": f"bad{i}.wav"} for i in range(8)])
    with caplog.at_level(logging.WARNING, logger="hfpref.data.audio"):
        assert decode_audio_column(ds, skip_bad_audio=True) == ([], [])
    assert "Dropped 8 of 8 rows" in caplog.text and "bad4.wav" in caplog.text and "and 3 more" in caplog.text
    assert "bad5.wav" not in caplog.text


def test_decode_audio_column_follows_select_indices():
    values = [audio_value(sine(440, 0.01 * (i + 1), 16000), 16000, f"{i}.wav") for i in range(4)]
    ds = dataset_of(values).select([3, 1])
    waveforms, kept = decode_audio_column(ds, sampling_rate=16000)
    assert kept == [0, 1]
    assert [len(w) for w in waveforms] == [640, 320]


def test_drop_bad_audio(tmp_path, caplog):
    bad = bad_values(tmp_path)
    good = audio_value(sine(440, 0.1, 16000), 16000, "good.wav")
    ds = dataset_of([bad["corrupt"][0], good, bad["nan"][0], good], caption=["a", "b", "c", "d"])

    with caplog.at_level(logging.WARNING, logger="hfpref.data.audio"):
        cleaned = drop_bad_audio(ds)

    assert cleaned["caption"] == ["b", "d"]
    assert cleaned.features == ds.features
    assert "Dropped 2 of 4 rows" in caplog.text

    caplog.clear()
    assert drop_bad_audio(cleaned) is cleaned
    assert not caplog.records


def test_encode_wav():
    clip = sine(440, 0.1, 16000)
    lossless, samplerate = sf.read(io.BytesIO(encode_wav(clip * 3, 16000, subtype="FLOAT")), dtype="float32")
    assert samplerate == 16000
    np.testing.assert_array_equal(lossless, clip * 3)

    clipped, _ = sf.read(io.BytesIO(encode_wav(clip * 3, 16000)), dtype="float32")
    assert sf.info(io.BytesIO(encode_wav(clip, 16000))).subtype == "PCM_16"
    assert clipped.max() <= 1.0 and clipped.min() >= -1.0

    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(decode_audio(encode_wav(torch.from_numpy(clip), 16000), 16000), clip, atol=1e-4)

    for bad, match in ((np.array([np.nan]), "NaN"), (np.zeros(0), "non-empty"), (np.zeros((1, 1, 1)), "non-empty")):
        with pytest.raises(ValueError, match=match):
            encode_wav(bad, 16000)
    with pytest.raises(ValueError, match="subtype='PCM_24'"):
        encode_wav(clip, 16000, subtype="PCM_24")


def test_audio_value():
    value = audio_value(sine(440, 0.1, 16000), 16000, "sample_0.wav")
    assert value["path"] == "sample_0.wav"
    assert len(decode_audio(value, 8000)) == 800


def test_truncated_wav_is_caught_where_libsndfile_would_decode_half_a_clip(tmp_path):
    whole = encode_wav(sine(440, 1.0, 16000), 16000)
    cut = whole[: len(whole) - 4000]
    with sf.SoundFile(io.BytesIO(cut)) as handle:  # what libsndfile alone makes of it: a shorter "complete" clip
        assert handle.frames < 16000
    with pytest.raises(AudioDecodeError, match=r"truncated file: the WAV header declares 32000 bytes.*holds 28000"):
        decode_audio({"bytes": cut, "path": "cut.wav"}, 16000)
    # A complete file and a streamed header (data size left open as 0xFFFFFFFF) still decode.
    assert len(decode_audio(whole, 16000)) == 16000
    streamed = bytearray(whole)
    streamed[40:44] = (0xFFFFFFFF).to_bytes(4, "little")
    assert len(decode_audio(bytes(streamed), 16000)) == 16000


def test_truncated_aiff_is_caught_too():
    buffer = io.BytesIO()
    sf.write(buffer, sine(440, 1.0, 16000), 16000, format="AIFF")
    whole = buffer.getvalue()
    assert len(decode_audio(whole, 16000)) == 16000
    with pytest.raises(AudioDecodeError, match="truncated file: the AIFF header declares"):
        decode_audio({"bytes": whole[: len(whole) // 2], "path": "cut.aiff"}, 16000)


def test_truncated_flac_is_an_error_naming_the_file(tmp_path):
    buffer = io.BytesIO()
    sf.write(buffer, sine(440, 1.0, 16000), 16000, format="FLAC")
    path = tmp_path / "cut.flac"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(AudioDecodeError, match="cut.flac.*row 4"):
        decode_audio(str(path), 16000, row=4)


def test_array_edge_cases():
    # float64 beyond float32's range must not become inf.
    with pytest.raises(AudioDecodeError, match="beyond the float32 range"):
        decode_audio({"array": np.array([0.0, 1e39, -0.5]), "sampling_rate": 16000}, 16000)
    # 8-bit PCM is unsigned: 128 is silence.
    uint8 = {"array": np.array([128, 128, 255, 0], np.uint8), "sampling_rate": 16000}
    np.testing.assert_allclose(decode_audio(uint8, 16000), [0.0, 0.0, 127 / 128, -1.0])
    # A single stereo frame (frames, channels) = (1, 2) is one frame.
    np.testing.assert_allclose(decode_audio({"array": np.array([[0.2, 0.4]]), "sampling_rate": 16000}, 16000), [0.3])
    # Channels-first mono (1, n) still reads as n frames.
    assert decode_audio({"array": np.zeros((1, 50)), "sampling_rate": 16000}, 16000).shape == (50,)
    # A fractional sampling rate is an error, not silently truncated.
    for rate in (16000.5, float("nan"), "16000"):
        with pytest.raises(AudioDecodeError, match="sampling_rate=.* number of Hz"):
            decode_audio({"array": np.zeros(10), "sampling_rate": rate}, 16000)
    assert len(decode_audio({"array": np.zeros(10), "sampling_rate": 16000.0}, 16000)) == 10
