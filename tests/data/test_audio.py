import io
import logging
import pickle

import numpy as np
import pytest
import soundfile as sf
from datasets import Audio, Dataset, Features, Value

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

    # CSV and JSON files load their path columns as large_string (and bytes as large_binary): cast too.
    for value, dtype in ((path, "large_string"), (wav, "large_binary")):
        large = Dataset.from_dict({"audio": [value]}, features=Features({"audio": Value(dtype)}))
        ds = ensure_audio_column(large, sampling_rate=16000)
        assert ds.features["audio"] == Audio(sampling_rate=16000, decode=False)
        assert len(decode_audio(ds[0]["audio"], 16000)) == 1600


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


def streamed_wav(samples_int16: np.ndarray, rate: int, data_size: int, riff_size: int) -> bytes:
    """A 16-bit mono WAV written as a pipe writer does: sizes in the header are placeholders, not the real ones."""
    fmt = (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + rate.to_bytes(4, "little")
    fmt += (2 * rate).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    header = b"RIFF" + riff_size.to_bytes(4, "little") + b"WAVE" + b"fmt " + (16).to_bytes(4, "little") + fmt
    return header + b"data" + data_size.to_bytes(4, "little") + samples_int16.astype("<i2").tobytes()


@pytest.mark.parametrize(
    ("writer", "data_size", "riff_size"),
    [("espeak-ng", 0x7FFFF000, 0x7FFFF024), ("ffmpeg", 0xFFFFFFFF, 0xFFFFFFFF), ("other", 0x7FFFFFFF, 0x7FFFFFFF)],
)
def test_streamed_wav_placeholder_sizes_decode_to_the_end_of_the_data(writer, data_size, riff_size):
    pcm = (sine(440, 0.7, 22050) * 32767).astype(np.int16)
    waveform = decode_audio({"bytes": streamed_wav(pcm, 22050, data_size, riff_size), "path": f"{writer}.wav"}, 22050)
    np.testing.assert_array_equal(waveform, pcm / 32768.0)  # every frame, exactly; 15435 = 0.7 s x 22050 Hz
    # A real size the file falls short of is still truncation, even with a placeholder RIFF size.
    cut = streamed_wav(pcm, 22050, 2 * len(pcm) + 2000, riff_size)
    with pytest.raises(AudioDecodeError, match=f"truncated file: the WAV header declares {2 * len(pcm) + 2000} bytes"):
        decode_audio({"bytes": cut, "path": "cut.wav"}, 22050)


def test_espeak_ng_wav_through_a_pipe_decodes_to_its_true_length(tmp_path):
    import shutil
    import subprocess

    assert shutil.which("espeak-ng"), (
        "espeak-ng is not installed (Debian: apt-get install espeak-ng); `make test` installs it"
    )
    path = tmp_path / "piped.wav"
    text = "the train leaves at seven tonight and I put the letters on your desk before we moved to a new house"
    subprocess.run(f"espeak-ng -s 95 --stdout '{text}' | cat > {path}", shell=True, check=True, timeout=60)
    raw = path.read_bytes()
    assert raw[36:40] == b"data" and int.from_bytes(raw[40:44], "little") >= 0x7FFFF000  # a pipe's placeholder
    rate = int.from_bytes(raw[24:28], "little")
    pcm = np.frombuffer(raw[44 : 44 + (len(raw) - 44) // 2 * 2], "<i2")
    assert 8 < len(pcm) / rate < 13  # about ten seconds of speech (10.08 s with espeak-ng 1.51)

    np.testing.assert_array_equal(decode_audio(str(path), rate), pcm / 32768.0)
    assert abs(len(decode_audio(str(path), 16000)) - len(pcm) * 16000 / rate) <= 1


_MP3_KBPS = {1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)}


def mpeg1_frames(data: bytes) -> list[tuple[int, int]]:
    """`(offset, kbit/s)` of every MPEG-1 Layer III frame, from the frame headers (ISO 11172-3)."""
    frames, offset = [], 0
    while offset < len(data):
        header = int.from_bytes(data[offset : offset + 4], "big")
        assert header >> 21 == 0x7FF and (header >> 19) & 3 == 3 and (header >> 17) & 3 == 1, offset
        kbps = _MP3_KBPS[1][(header >> 12) & 15]
        rate = (44100, 48000, 32000)[(header >> 10) & 3]
        frames.append((offset, kbps))
        offset += 144 * 1000 * kbps // rate + ((header >> 9) & 1)
    assert offset == len(data)
    return frames


def lame_mp3(seconds: float, rate: int, bitrate_mode: str) -> bytes:
    buffer = io.BytesIO()
    options = {"bitrate_mode": bitrate_mode, "compression_level": 0.5}
    with sf.SoundFile(buffer, "w", rate, 1, format="MP3", subtype="MPEG_LAYER_III", **options) as handle:
        handle.write(sine(440, seconds, rate))
    return buffer.getvalue()


def test_cbr_mp3_without_xing_header_decodes_to_its_true_length():
    whole = lame_mp3(3.0, 44100, "CONSTANT")
    frames = mpeg1_frames(whole)
    assert len({kbps for _, kbps in frames}) == 1 and whole[frames[0][0] : frames[1][0]].find(b"Info") > 0
    bare = whole[frames[1][0] :]  # without the Info frame: libsndfile must estimate the length
    with sf.SoundFile(io.BytesIO(bare)) as handle:
        assert handle.frames > 1152 * (len(frames) - 1)  # the estimate overshoots (padded 417/418-byte frames)

    waveform = decode_audio({"bytes": bare, "path": "bare.mp3"}, 44100)

    assert len(waveform) == 1152 * (len(frames) - 1)  # every frame decoded, no gapless trimming without the tag
    start = 2 * 1152  # past the encoder delay
    assert peak_frequency(waveform[start : start + 44100], 44100) == pytest.approx(440, abs=2)
    # With its Info header the count is exact, so a cut file is still refused.
    with pytest.raises(AudioDecodeError, match="truncated file: the MP3 Xing/Info header declares"):
        decode_audio({"bytes": whole[: len(whole) // 2], "path": "cut.mp3"}, 44100)
    # Without it, a cut mid-frame is refused too.
    with pytest.raises(AudioDecodeError, match=r"cut.mp3.*truncated file: the MPEG frame at byte \d+ runs past"):
        decode_audio({"bytes": bare[: len(bare) // 2 + 100], "path": "cut.mp3"}, 44100)


def test_vbr_mp3_without_xing_header_is_refused_not_cut_short():
    whole = lame_mp3(3.0, 44100, "VARIABLE")
    frames = mpeg1_frames(whole)
    bare = whole[frames[1][0] :]
    with sf.SoundFile(io.BytesIO(bare)) as handle:  # what libsndfile alone does: stop at its short estimate
        assert len(handle.read()) < 1152 * (len(frames) - 1)
    with pytest.raises(AudioDecodeError, match=f"vbr.mp3.*frames hold {1152 * (len(frames) - 1)} samples"):
        decode_audio({"bytes": bare, "path": "vbr.mp3"}, 44100)


def ogg_pages(data: bytes) -> list[int]:
    """Offsets of the Ogg pages, from their headers (RFC 3533): 27 bytes, lacing values, then the body."""
    offsets, offset = [], 0
    while offset < len(data):
        assert data[offset : offset + 4] == b"OggS"
        offsets.append(offset)
        n_segments = data[offset + 26]
        offset += 27 + n_segments + sum(data[offset + 27 : offset + 27 + n_segments])
    return offsets


@pytest.mark.parametrize(("subtype", "rate"), [("VORBIS", 16000), ("OPUS", 48000)])
def test_ogg_cut_inside_or_between_pages_is_truncated_not_short(subtype, rate):
    noise = (0.3 * np.random.default_rng(0).standard_normal(3 * rate)).astype(np.float32)  # 3 s: several pages
    buffer = io.BytesIO()
    sf.write(buffer, noise, rate, format="OGG", subtype=subtype)
    whole = buffer.getvalue()
    pages = ogg_pages(whole)
    assert len(pages) >= 4
    assert len(decode_audio(whole, rate)) == len(noise)

    for cut, reason in ((len(whole) - 50, "needs"), (pages[-2] + 40, "needs"), (pages[-1], "end-of-stream flag")):
        with sf.SoundFile(io.BytesIO(whole[:cut])) as handle:  # libsndfile alone: a shorter clip and no error
            assert 0 < len(handle.read()) < len(noise)
        with pytest.raises(AudioDecodeError, match=f"cut.ogg.*truncated file: .*{reason}"):
            decode_audio({"bytes": whole[:cut], "path": "cut.ogg"}, 16000)


def test_tiny_files_declaring_huge_lengths_are_refused_before_decoding():
    one_hz = encode_wav(np.zeros(8000, np.float32), 1)  # 16 KB holding 8000 s at 1 Hz
    assert 16000 <= len(one_hz) < 16100
    with pytest.raises(AudioDecodeError, match=r"one_hz.wav.*sampling rate 1 Hz is below the 1000 Hz minimum"):
        decode_audio({"bytes": one_hz, "path": "one_hz.wav"}, 16000)
    with pytest.raises(AudioDecodeError, match=r"sampling rate 1 Hz is below"):
        decode_audio({"array": np.zeros(8000, np.float32), "sampling_rate": 1}, 16000)

    # A FLAC whose STREAMINFO declares two hours (460 MB of float32 at 16 kHz) in a few hundred bytes: refused from
    # the header, before a buffer that size is allocated.
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(1600, np.float32), 16000, format="FLAC")
    silence = bytearray(buffer.getvalue())
    fields = int.from_bytes(silence[18:26], "big")  # rate (20 bits), channels, depth, total samples (36 bits)
    silence[18:26] = (fields & ~(2**36 - 1) | 7200 * 16000).to_bytes(8, "big")
    with sf.SoundFile(io.BytesIO(bytes(silence))) as handle:
        assert handle.frames == 7200 * 16000
    assert len(silence) < 1000
    with pytest.raises(AudioDecodeError, match=r"silence.flac.*7200.0 s\), longer than max_seconds=600"):
        decode_audio({"bytes": bytes(silence), "path": "silence.flac"}, 16000)
    # The cap is the caller's: a 1-second cap refuses a 2-second clip, None lifts it.
    clip = encode_wav(sine(440, 2.0, 16000), 16000)
    with pytest.raises(AudioDecodeError, match="longer than max_seconds=1"):
        decode_audio(clip, 16000, max_seconds=1)
    assert len(decode_audio(clip, 16000, max_seconds=None)) == 32000
    with pytest.raises(AudioDecodeError, match=r"the array holds 32000 frames at 16000 Hz \(2.0 s\), longer than"):
        decode_audio({"array": sine(440, 2.0, 16000), "sampling_rate": 16000}, 8000, max_seconds=1)
    ds = dataset_of([audio_value(sine(440, 2.0, 16000), 16000, "two.wav"), audio_value(sine(440, 0.5, 16000), 16000)])
    assert decode_audio_column(ds, max_seconds=1, skip_bad_audio=True)[1] == [1]
    assert len(drop_bad_audio(ds, max_seconds=1)) == 1
