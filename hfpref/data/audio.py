"""Audio I/O that never goes through `datasets` decoding.

`datasets` decodes audio with torchcodec, which needs FFmpeg (and, in recent wheels, CUDA libraries). hfpref keeps
every audio column as `datasets.Audio(decode=False)`, whose values are `{"bytes": ..., "path": ...}` dicts, and
decodes them here with soundfile (libsndfile: WAV, FLAC, OGG/Vorbis, OGG/Opus, MP3 and more), downmixes to mono and
resamples with soxr.

Where libsndfile would silently return less (or more) than a file holds, the container is checked here first: a WAV or
AIFF whose data chunk is shorter than declared, an Ogg file cut inside or between pages, an MP3 cut mid-frame or whose
length libsndfile can only estimate too short, and a header declaring more than `max_seconds` (600 s by default) or a
sampling rate below 1000 Hz are refused with an error naming the file, before anything is decoded.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import soundfile as sf
import soxr
from datasets import Audio, Dataset, Value


logger = logging.getLogger(__name__)

IN_MEMORY = "<in-memory bytes>"
# How many undecodable files a warning names before summarising the rest as a count.
_MAX_NAMED_BAD_FILES = 5
_ROWS_PER_ARROW_BATCH = 256


class AudioDecodeError(ValueError):
    """
    An audio value that cannot be turned into a finite, non-empty waveform.

    The message always names the file (its path, or `"<in-memory bytes>"` when the value carries bytes without a
    path), the dataset row and column when known, and the reason.

    Args:
        reason (`str`):
            Why decoding failed, e.g. `"corrupt or unreadable format (Format not recognised.)"`.
        file (`str`):
            The file's path, or `"<in-memory bytes>"`.
        row (`int`, *optional*):
            Index of the dataset row the value came from.
        column (`str`, *optional*):
            Name of the dataset column the value came from; only shown together with `row`.
    """

    def __init__(self, reason: str, *, file: str, row: int | None = None, column: str | None = None):
        self.reason = reason
        self.file = file
        self.row = row
        self.column = column
        where = ""
        if row is not None:
            where = f" (row {row}, column {column!r})" if column is not None else f" (row {row})"
        super().__init__(f"cannot decode audio file {file!r}{where}: {reason}")

    def __reduce__(self):
        # Keyword-only arguments break the default exception pickling that multiprocessing relies on.
        return _rebuild_audio_decode_error, (self.reason, self.file, self.row, self.column)


def _rebuild_audio_decode_error(reason: str, file: str, row: int | None, column: str | None) -> AudioDecodeError:
    return AudioDecodeError(reason, file=file, row=row, column=column)


def _describe_file(value: Any) -> str:
    """The name an error message uses for `value`."""
    if isinstance(value, dict):
        if value.get("path") is not None:
            return str(value["path"])
        if "array" in value:
            return "<in-memory array>"
        return IN_MEMORY
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    return IN_MEMORY


# Containers whose header states the size of the audio data chunk: (magic, form types, byte order, data chunk, name).
_SIZED_CONTAINERS = (
    (b"RIFF", (b"WAVE",), "little", b"data", "WAV"),
    (b"RIFX", (b"WAVE",), "big", b"data", "WAV"),
    (b"FORM", (b"AIFF", b"AIFC"), "big", b"SSND", "AIFF"),
)
# Writers that cannot seek back to patch the header (they write to a pipe) leave a placeholder as the data size:
# ffmpeg writes 0xFFFFFFFF, espeak-ng 0x7FFFF000, others 0x7FFFFFFF. Any size from 0x7FFFF000 up is taken as "not
# stated": a real chunk that large would hold over 3 h of 48 kHz stereo, beyond any `max_seconds` anyway.
_PLACEHOLDER_DATA_SIZE = 0x7FFFF000
# Default cap on a clip's duration, in seconds, checked from the header before anything is decoded.
MAX_SECONDS = 600.0
# Lowest sampling rate accepted: a rate below it is a broken header, and resampling from it would expand a tiny file
# (a 16 KB WAV declaring 1 Hz holds 8000 s) into gigabytes.
MIN_SAMPLING_RATE = 1000
# libsndfile's frame count when the header does not state one (SF_COUNT_MAX).
_UNKNOWN_FRAMES = 2**63 - 1
_BLOCK_FRAMES = 1 << 16


@contextlib.contextmanager
def _rewound(source: str | io.BytesIO):
    """`(handle, size)` of a path or an in-memory file, read from its start; afterwards a path's handle is closed and
    an in-memory file's position restored."""
    handle = open(source, "rb") if isinstance(source, str) else source
    start = handle.tell()
    try:
        handle.seek(0, io.SEEK_END)
        size = handle.tell()
        handle.seek(0)
        yield handle, size
    finally:
        if isinstance(source, str):
            handle.close()
        else:
            handle.seek(start)


def _data_chunk_shortfall(source: str | io.BytesIO) -> tuple[str, int, int] | None:
    """`(format, declared, present)` bytes of a WAV's or AIFF's audio chunk when the file holds less than declared.

    libsndfile clamps the frame count of a truncated WAV or AIFF to what the file holds and decodes it as if complete,
    so the header's claim is compared with the file size here. `None` for complete files, other formats, RF64 and
    streamed WAVs whose header leaves the size open (0, or a placeholder from 0x7FFFF000 up to 0xFFFFFFFF: these
    decode to the end of the file).
    """
    with _rewound(source) as (handle, size):
        header = handle.read(12)
        container = next((c for c in _SIZED_CONTAINERS if header[:4] == c[0] and header[8:12] in c[1]), None)
        if len(header) < 12 or container is None:
            return None
        _, _, byteorder, data_id, name = container
        offset = 12
        while offset + 8 <= size:
            handle.seek(offset)
            chunk = handle.read(8)
            chunk_size = int.from_bytes(chunk[4:8], byteorder)
            if chunk[:4] == data_id:
                present = size - offset - 8
                if chunk_size == 0 or chunk_size >= _PLACEHOLDER_DATA_SIZE or chunk_size <= present:
                    return None
                return name, chunk_size, present
            offset += 8 + chunk_size + (chunk_size & 1)
        return None


def _ogg_truncation(source: str | io.BytesIO) -> str | None:
    """Why an Ogg file (Vorbis, Opus, FLAC) is cut short, or `None` when it is complete or not an Ogg file.

    libsndfile decodes an Ogg file cut mid-page up to its last whole page without any error, so the page headers are
    walked here: the file must end on a page boundary, and every logical stream begun (beginning-of-stream flag) must
    have ended (end-of-stream flag on its last page), which a file cut between two pages lacks.
    """
    with _rewound(source) as (handle, size):
        if handle.read(4) != b"OggS":
            return None
        offset, open_streams = 0, set()
        while offset < size:
            handle.seek(offset)
            header = handle.read(27)
            if header[:4] != b"OggS":
                if len(header) < 4 or b"OggS".startswith(header[:4]):  # a page capture pattern cut off
                    return f"the file ends inside an Ogg page header at byte {offset} of {size}"
                break  # trailing bytes after the last page; whether every stream ended is checked below
            if len(header) < 27:
                return f"the file ends inside an Ogg page header at byte {offset} of {size}"
            flags, serial, n_segments = header[5], header[14:18], header[26]
            lacing = handle.read(n_segments)
            end = offset + 27 + n_segments + sum(lacing)
            if len(lacing) < n_segments or end > size:
                return f"the last Ogg page (at byte {offset}) needs {end - offset} bytes but the file ends at {size}"
            if flags & 0x02:  # beginning of stream
                open_streams.add(serial)
            if flags & 0x04:  # end of stream
                open_streams.discard(serial)
            offset = end
        if open_streams:
            return "the last Ogg page lacks the end-of-stream flag (the file stops between two pages)"
        return None


# MPEG audio Layer III: kbit/s by bitrate index (MPEG-1, MPEG-2/2.5), Hz by version bits and rate index.
_MP3_KBPS = {
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_MP3_TRAILERS = (b"TAG", b"APETAGEX", b"LYRICS")


def _mp3_frames(data: bytes) -> tuple[bool, int, int | None] | None:
    """`(has_length_tag, samples, cut_frame_offset)` of an MP3 (Layer III) stream, by walking its frame headers.

    `has_length_tag` is whether the first frame is a Xing/Info/VBRI frame (whose frame count libsndfile trusts),
    `samples` what the whole frames hold, `cut_frame_offset` the offset of a last frame that the file cuts short
    (`None` when the file ends on a frame boundary or a tag). `None` when the walk cannot follow the stream (free
    bitrate, another layer, bytes that are not a frame), which claims nothing.
    """
    offset = 0
    if data[:3] == b"ID3" and len(data) >= 10:  # ID3v2: 10-byte header, syncsafe size, optional 10-byte footer
        offset = (
            10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(data[6:10])) + (10 if data[5] & 0x10 else 0)
        )
    samples, first, has_tag = 0, True, False
    while offset + 4 <= len(data):
        if data.startswith(_MP3_TRAILERS, offset):
            return has_tag, samples, None
        header = int.from_bytes(data[offset : offset + 4], "big")
        version, layer, bitrate, rate, padding = (
            (header >> 19) & 3,
            (header >> 17) & 3,
            (header >> 12) & 15,
            (header >> 10) & 3,
            (header >> 9) & 1,
        )
        if header >> 21 != 0x7FF or version == 1 or layer != 1 or bitrate in (0, 15) or rate == 3:
            return None
        mpeg1 = version == 3
        size = (144 if mpeg1 else 72) * 1000 * _MP3_KBPS[1 if mpeg1 else 2][bitrate] // _MP3_RATES[version][rate]
        size += padding
        if offset + size > len(data):
            return has_tag, samples, offset
        if first:
            has_tag = any(tag in data[offset : offset + size] for tag in (b"Xing", b"Info", b"VBRI"))
            first = False
        samples += 1152 if mpeg1 else 576
        offset += size
    return has_tag, samples, None


def _check_rate_and_length(rate: int, frames: int, max_seconds: float | None, fail, holder: str) -> None:
    """Refuses a sampling rate below [`MIN_SAMPLING_RATE`] and a clip longer than `max_seconds`, before decoding.

    `holder` names what states `frames` in the error: `"the header declares"` or `"the array holds"`.
    """
    if rate < MIN_SAMPLING_RATE:
        raise fail(
            f"sampling rate {rate} Hz is below the {MIN_SAMPLING_RATE} Hz minimum (a broken header; decoding and "
            "resampling it would blow it up)"
        )
    if max_seconds is not None and frames > max_seconds * rate:
        raise fail(
            f"{holder} {frames} frames at {rate} Hz ({frames / rate:.1f} s), longer than "
            f"max_seconds={max_seconds:g}; cut the clip or raise max_seconds"
        )


def _read_soundfile(source: str | io.BytesIO, fail, max_seconds: float | None) -> tuple[np.ndarray, int]:
    shortfall = _data_chunk_shortfall(source)
    if shortfall is not None:
        name, declared, present = shortfall
        raise fail(
            f"truncated file: the {name} header declares {declared} bytes of audio data but the file holds {present} "
            f"({100 * present / declared:.1f} %); re-export or re-download it"
        )
    cut = _ogg_truncation(source)
    if cut is not None:
        raise fail(f"truncated file: {cut}; re-export or re-download it")
    try:
        with sf.SoundFile(source) as handle:
            declared, rate, channels, major = handle.frames, handle.samplerate, handle.channels, handle.format
            if declared >= _UNKNOWN_FRAMES:
                raise fail(f"the {major} header does not state the number of frames; re-export the file")
            _check_rate_and_length(rate, declared, max_seconds, fail, "the header declares")
            # Read in blocks and downmix each, so that a many-channel file never sits in memory whole.
            mono = np.empty(declared, dtype=np.float32)
            read = 0
            while read < declared:
                block = handle.read(min(_BLOCK_FRAMES, declared - read), dtype="float32", always_2d=True)
                # soundfile's layout is known to be (frames, channels), so downmix here rather than guess in _to_mono.
                mono[read : read + len(block)] = block.mean(axis=1) if channels > 1 else block[:, 0]
                read += len(block)
                if len(block) == 0:
                    break
    except AudioDecodeError:
        raise
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError, EOFError) as err:
        detail = getattr(err, "error_string", None) or str(err)
        raise fail(f"corrupt or unreadable format ({detail})") from err
    if major == "MP3":
        _check_mp3(source, declared, read, fail)
    # FLAC and others state their length and libsndfile stops where the data ends; an MP3's length is an estimate.
    elif 0 < read < declared:
        raise fail(f"truncated file: the header declares {declared} frames but only {read} could be read")
    return mono[:read], rate


def _check_mp3(source: str | io.BytesIO, declared: int, read: int, fail) -> None:
    """Refuses an MP3 that libsndfile decoded only part of.

    With a Xing/Info/VBRI frame, libsndfile's frame count is exact, so a shorter read is a truncated file. Without one
    the count is an estimate from the first frame's bitrate: a CBR file's estimate may overshoot (it decodes to its
    real end, which is fine), and a cut last frame or a VBR file whose estimate falls short (libsndfile stops
    reading there) is refused.
    """
    if isinstance(source, str):
        with open(source, "rb") as handle:
            data = handle.read()
    else:
        data = source.getvalue()
    walked = _mp3_frames(data)
    if walked is None:
        return
    has_tag, samples, cut_at = walked
    if has_tag and 0 < read < declared:
        raise fail(
            f"truncated file: the MP3 Xing/Info header declares {declared} frames but only {read} could be read"
        )
    if cut_at is not None:
        raise fail(
            f"truncated file: the MPEG frame at byte {cut_at} runs past the end of the file ({len(data)} bytes)"
        )
    if not has_tag and read < samples:
        raise fail(
            f"the MP3 has no Xing/Info header and a variable bitrate: its frames hold {samples} samples but libsndfile "
            f"decodes only the {read} its length estimate allows; re-encode it (e.g. with LAME, which writes the header)"
        )


def _load(value: Any, fail, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """Reads `value` into `(samples, rate)`: 1-D from a file, 1-D or 2-D (channels on either axis) from an array."""
    if isinstance(value, dict) and "array" in value:
        if value.get("sampling_rate") is None:
            raise fail("decoded audio dict has an 'array' but no 'sampling_rate'")
        rate = value["sampling_rate"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
            raise fail(f"sampling_rate={rate!r} is not a number of Hz")
        if not float(rate).is_integer():
            raise fail(f"sampling_rate={rate!r} is not a whole number of Hz")
        samples = np.asarray(value["array"])
        if np.issubdtype(samples.dtype, np.unsignedinteger):
            # Unsigned PCM (8-bit WAV's format) is offset binary: silence sits at the middle of the range.
            half = float(np.iinfo(samples.dtype).max // 2 + 1)
            samples = (samples.astype(np.float64) - half) / half
        elif np.issubdtype(samples.dtype, np.integer):
            samples = samples / float(np.iinfo(samples.dtype).max + 1)
        elif not np.issubdtype(samples.dtype, np.floating):
            raise fail(f"decoded audio array has dtype {samples.dtype}, expected integer or floating samples")
        return samples, int(rate)

    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data is None and path is None:
            raise fail("the value has neither 'bytes' nor 'path'")
    elif isinstance(value, (str, os.PathLike)):
        data, path = None, os.fspath(value)
    elif isinstance(value, (bytes, bytearray)):
        data, path = bytes(value), None
    else:
        raise fail(
            f"unsupported audio value of type {type(value).__name__}; expected a {{'bytes', 'path'}} dict, a path, "
            "bytes, or an {'array', 'sampling_rate'} dict"
        )

    if data is None and "://" in str(path):
        import fsspec  # a `datasets` dependency; remote paths are how streamed Hub datasets point at audio

        try:
            with fsspec.open(path, "rb") as f:
                data = f.read()
        except ImportError as err:  # e.g. http(s) needs aiohttp, s3 needs s3fs
            raise fail(f"cannot read remote file: its protocol needs a package that is not installed ({err})") from err
        except Exception as err:  # every fsspec backend raises its own errors (aiohttp, botocore, ...)
            raise fail(f"cannot read remote file ({type(err).__name__}: {err})") from err

    if data is not None:
        if len(data) == 0:
            raise fail("empty file (0 bytes)")
        return _read_soundfile(io.BytesIO(data), fail, max_seconds)

    if not os.path.isfile(path):
        raise fail("file not found" if not os.path.exists(path) else "not a regular file")
    if os.path.getsize(path) == 0:
        raise fail("empty file (0 bytes)")
    return _read_soundfile(path, fail, max_seconds)


def _to_mono(samples: np.ndarray, fail) -> np.ndarray:
    if samples.ndim == 1:
        return samples
    if samples.ndim != 2:
        raise fail(f"audio array has {samples.ndim} dimensions, expected 1 (mono) or 2 (channels and samples)")
    # Decoded arrays come as (channels, frames) from datasets/torchcodec and librosa, or (frames, channels) from
    # soundfile. Channels are the shorter axis for anything longer than a handful of samples; a last axis of 2 or fewer
    # is channels too (soundfile's layout), so a single stereo frame (1, 2) is one frame, not two.
    channel_axis = 1 if samples.shape[1] <= max(samples.shape[0], 2) else 0
    return samples.mean(axis=channel_axis) if samples.shape[channel_axis] > 1 else samples.reshape(-1)


def decode_audio(
    value: Any,
    sampling_rate: int,
    *,
    row: int | None = None,
    column: str = "audio",
    max_seconds: float | None = MAX_SECONDS,
) -> np.ndarray:
    """
    Decodes one audio value to a mono float32 waveform at `sampling_rate`.

    Stereo and multichannel audio is averaged to mono; resampling uses soxr and is skipped when the rates match.

    Args:
        value (`dict`, `str`, `os.PathLike` or `bytes`):
            One of:

            - a `datasets.Audio(decode=False)` value `{"bytes": bytes | None, "path": str | None}`; bytes win when
              they are not `None`, otherwise the path is read (relative paths resolve against the working directory,
              `scheme://` paths through fsspec);
            - a path to an audio file, or the file's bytes;
            - an already decoded `{"array": ..., "sampling_rate": int}` dict (1-D, or 2-D with channels first or
              last, where a last axis of at most 2 is channels; signed integer samples are scaled to [-1, 1),
              unsigned ones centred first).
        sampling_rate (`int`):
            Sampling rate of the returned waveform, in Hz.
        row (`int`, *optional*):
            Dataset row the value came from, named in errors.
        column (`str`, *optional*, defaults to `"audio"`):
            Dataset column the value came from, named in errors together with `row`.
        max_seconds (`float` or `None`, *optional*, defaults to `600.0`):
            Longest clip accepted, checked from the file's header before anything is decoded, so that a tiny file
            declaring hours of silence is refused instead of expanding to gigabytes. `None` for no cap.

    Returns:
        `np.ndarray`: float32, 1-D, at `sampling_rate`.

    Raises:
        [`AudioDecodeError`]: when the value is corrupt, in an unreadable format, missing, empty (0 bytes),
            truncated (a WAV or AIFF whose header declares more data than the file holds, an Ogg file cut inside or
            between pages, or a file that stops before the frame count its header states), has zero frames, holds
            NaN/inf samples or samples beyond the float32 range, has a fractional sampling rate or one below
            [`MIN_SAMPLING_RATE`] (1000 Hz), lasts longer than `max_seconds`, or is a remote path that cannot be
            read. A WAV streamed through a pipe (data size left as a placeholder such as 0xFFFFFFFF or 0x7FFFF000)
            and an MP3 without a Xing/Info header (whose length libsndfile estimates) decode to their real end.

    Example:

    ```python
    >>> import numpy as np
    >>> from hfpref.data.audio import decode_audio, encode_wav
    >>> sine = np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)
    >>> waveform = decode_audio({"bytes": encode_wav(sine, 8000), "path": "sine.wav"}, 16000)
    >>> waveform.dtype, waveform.shape
    (dtype('float32'), (16000,))

    ```
    """
    if sampling_rate <= 0:
        raise ValueError(f"sampling_rate={sampling_rate} must be a positive number of Hz")
    file = _describe_file(value)

    def fail(reason: str) -> AudioDecodeError:
        return AudioDecodeError(reason, file=file, row=row, column=column)

    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds={max_seconds} must be a positive number of seconds or None")
    samples, rate = _load(value, fail, max_seconds)
    if rate <= 0:
        raise fail(f"invalid source sampling rate {rate}")
    waveform = _to_mono(samples, fail)
    if isinstance(value, dict) and "array" in value:  # files were checked from their header, before decoding
        _check_rate_and_length(rate, waveform.size, max_seconds, fail, "the array holds")
    if waveform.size == 0:
        raise fail("zero-length audio (0 frames)")
    if not np.isfinite(waveform).all():
        raise fail("non-finite samples (NaN or inf)")
    peak = float(np.abs(waveform).max())
    if peak > float(np.finfo(np.float32).max):
        raise fail(f"samples beyond the float32 range (peak {peak:.3g}); audio samples belong in [-1, 1]")
    waveform = np.ascontiguousarray(waveform, dtype=np.float32)
    if rate != sampling_rate:
        frames = waveform.size
        waveform = soxr.resample(waveform, rate, sampling_rate)
        if waveform.size == 0:
            raise fail(f"{frames} frames at {rate} Hz are too short to resample to {sampling_rate} Hz")
    return waveform


def resample(waveform: Any, sampling_rate: int, target_rate: int, *, name: str = "waveform") -> np.ndarray:
    """
    Resample a mono waveform from `sampling_rate` to `target_rate` Hz with soxr (as [`decode_audio`] does); a float32
    copy-free pass-through when the rates match.

    Args:
        waveform (`array-like` of shape `(samples,)`): the mono waveform.
        sampling_rate (`int`): its sampling rate in Hz.
        target_rate (`int`): the rate wanted, in Hz.
        name (`str`, *optional*, defaults to `"waveform"`): how errors name the waveform (e.g. `"arrays[3]"`).

    Example:

    ```python
    >>> sine = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)  # 1 s at 16 kHz
    >>> resample(sine, 16000, 48000).shape  # still 1 s, now at 48 kHz
    (48000,)

    ```
    """
    for label, rate in (("sampling_rate", sampling_rate), ("target_rate", target_rate)):
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
            raise ValueError(f"{name}: {label}={rate!r} must be a positive integer number of Hz")
    waveform = np.ascontiguousarray(waveform, dtype=np.float32)
    if sampling_rate == target_rate:
        return waveform
    out = soxr.resample(waveform, int(sampling_rate), int(target_rate))
    if out.size == 0:
        raise ValueError(
            f"{name}: {waveform.size} samples at {sampling_rate} Hz are too short to resample to {target_rate} Hz"
        )
    return np.ascontiguousarray(out, dtype=np.float32)


def ensure_audio_column(ds: Dataset, column: str = "audio", sampling_rate: int | None = None) -> Dataset:
    """
    Makes `column` an `Audio(decode=False)` column, so that reading it never decodes through `datasets`.

    Casting only rewrites the feature (an Arrow metadata change); no audio is read.

    Args:
        ds ([`~datasets.Dataset`]):
            Dataset holding the column.
        column (`str`, *optional*, defaults to `"audio"`):
            Audio column: an `Audio` feature (decoding or not), a string column of file paths, a binary column of
            file bytes, or `{"bytes", "path"}` structs such as `Dataset.from_dict` makes of [`audio_value`] dicts
            (building the dataset with `features=Features({"audio": Audio()})` instead needs torchcodec).
        sampling_rate (`int`, *optional*):
            Sampling rate recorded on the feature. Defaults to the rate the column's `Audio` feature already declares.
            It is metadata only: [`decode_audio`] takes the rate to decode at.

    Returns:
        [`~datasets.Dataset`]: `ds` itself when the column is already `Audio(decode=False)` (with the requested rate),
        otherwise a cast copy.

    Raises:
        `ValueError`: when the column is missing or of none of these types.
    """
    if column not in ds.column_names:
        raise ValueError(f"audio column {column!r} not found; the dataset has columns {ds.column_names}")
    feature = ds.features[column]
    if isinstance(feature, Audio):
        rate = feature.sampling_rate if sampling_rate is None else sampling_rate
        if not feature.decode and feature.sampling_rate == rate:
            return ds
        return ds.cast_column(column, Audio(sampling_rate=rate, decode=False))
    is_paths = isinstance(feature, Value) and feature.dtype in ("string", "large_string")
    is_bytes = isinstance(feature, Value) and feature.dtype in ("binary", "large_binary")
    # What Dataset.from_dict makes of audio_value() dicts.
    is_struct = isinstance(feature, dict) and 0 < len(feature) and set(feature) <= {"bytes", "path"}
    if is_paths or is_bytes or is_struct:
        if feature in (Value("large_string"), Value("large_binary")):  # what datasets makes of CSV/JSON paths
            ds = ds.cast_column(column, Value(feature.dtype.removeprefix("large_")))
        return ds.cast_column(column, Audio(sampling_rate=sampling_rate, decode=False))
    raise ValueError(
        f"column {column!r} has feature {feature}; expected datasets.Audio, a string column of audio file paths, "
        "a binary column of audio file bytes, or {'bytes', 'path'} structs"
    )


def _iter_decoded(
    ds: Dataset, column: str, sampling_rate: int, max_seconds: float | None
) -> Iterator[tuple[int, np.ndarray | None, AudioDecodeError | None]]:
    """Yields `(row, waveform, None)` or `(row, None, error)` for every row, reading the raw Arrow values."""
    if column not in ds.column_names:
        raise ValueError(f"audio column {column!r} not found; the dataset has columns {ds.column_names}")
    # The Arrow view skips every feature's decode_example (torchcodec) and still honours select/shuffle indices.
    raw = ds.select_columns([column]).with_format("arrow")
    row = 0
    for batch in raw.iter(batch_size=_ROWS_PER_ARROW_BATCH):
        for value in batch.column(column).to_pylist():
            try:
                yield row, decode_audio(value, sampling_rate, row=row, column=column, max_seconds=max_seconds), None
            except AudioDecodeError as err:
                yield row, None, err
            row += 1


def _warn_dropped(errors: list[AudioDecodeError], total: int, column: str) -> None:
    named = "; ".join(f"{err.file!r} (row {err.row}): {err.reason}" for err in errors[:_MAX_NAMED_BAD_FILES])
    more = f"; and {len(errors) - _MAX_NAMED_BAD_FILES} more" if len(errors) > _MAX_NAMED_BAD_FILES else ""
    logger.warning(f"Dropped {len(errors)} of {total} rows whose {column!r} audio could not be decoded: {named}{more}")


def decode_audio_column(
    ds: Dataset,
    column: str = "audio",
    sampling_rate: int = 16000,
    *,
    skip_bad_audio: bool = False,
    max_seconds: float | None = MAX_SECONDS,
) -> tuple[list[np.ndarray], list[int]]:
    """
    Decodes every row of an audio column with [`decode_audio`], without decoding through `datasets`.

    Args:
        ds ([`~datasets.Dataset`]):
            Dataset holding the column. Any column type works: `Audio` (decoding or not), string paths, or
            `{"array", "sampling_rate"}` structs.
        column (`str`, *optional*, defaults to `"audio"`):
            Audio column.
        sampling_rate (`int`, *optional*, defaults to `16000`):
            Sampling rate of the returned waveforms, in Hz.
        skip_bad_audio (`bool`, *optional*, defaults to `False`):
            If `False`, the first undecodable row raises. If `True`, undecodable rows are left out and a warning names
            how many and which files.
        max_seconds (`float` or `None`, *optional*, defaults to `600.0`):
            Longest clip accepted (see [`decode_audio`]); a longer one is undecodable.

    Returns:
        `tuple[list[np.ndarray], list[int]]`: The float32 mono waveforms and the indices of the rows they came from,
        so that callers can align other columns (`ds.select(kept)`).

    Raises:
        [`AudioDecodeError`]: with `skip_bad_audio=False`, for the first undecodable row, naming its file and row.
        `ValueError`: when the column is missing.
    """
    waveforms, kept, errors = [], [], []
    for row, waveform, error in _iter_decoded(ds, column, sampling_rate, max_seconds):
        if error is not None:
            if not skip_bad_audio:
                raise error
            errors.append(error)
        else:
            waveforms.append(waveform)
            kept.append(row)
    if errors:
        _warn_dropped(errors, len(ds), column)
    return waveforms, kept


def drop_bad_audio(
    ds: Dataset, column: str = "audio", sampling_rate: int = 16000, *, max_seconds: float | None = MAX_SECONDS
) -> Dataset:
    """
    Removes the rows whose audio [`decode_audio`] cannot decode at `sampling_rate`, logging a warning that names them.

    Every row is decoded once to check it; the waveforms are not kept.

    Args:
        ds ([`~datasets.Dataset`]):
            Dataset holding the column.
        column (`str`, *optional*, defaults to `"audio"`):
            Audio column.
        sampling_rate (`int`, *optional*, defaults to `16000`):
            Rate the audio will be decoded at later; a clip too short to resample to it counts as bad.
        max_seconds (`float` or `None`, *optional*, defaults to `600.0`):
            Longest clip accepted (see [`decode_audio`]); a longer one counts as bad.

    Returns:
        [`~datasets.Dataset`]: `ds` itself when every row decodes, otherwise the decodable rows.
    """
    kept, errors = [], []
    for row, _, error in _iter_decoded(ds, column, sampling_rate, max_seconds):
        if error is None:
            kept.append(row)
        else:
            errors.append(error)
    if not errors:
        return ds
    _warn_dropped(errors, len(ds), column)
    return ds.select(kept)


def encode_wav(array: Any, sampling_rate: int, subtype: str = "PCM_16") -> bytes:
    """
    Encodes a waveform as WAV bytes with soundfile.

    Args:
        array (`np.ndarray` or `torch.Tensor`):
            1-D mono samples, or 2-D `(frames, channels)`, in [-1, 1].
        sampling_rate (`int`):
            Sampling rate of `array`, in Hz.
        subtype (`str`, *optional*, defaults to `"PCM_16"`):
            `"PCM_16"` (compact; samples outside [-1, 1] are clipped) or `"FLOAT"` (lossless 32-bit float).

    Returns:
        `bytes`: A complete WAV file.
    """
    if subtype not in ("PCM_16", "FLOAT"):
        raise ValueError(f"subtype={subtype!r} is not one of ['PCM_16', 'FLOAT']")
    if hasattr(array, "detach"):
        array = array.detach().float().cpu().numpy()
    samples = np.asarray(array, dtype=np.float32)
    if samples.ndim not in (1, 2) or samples.shape[0] == 0:
        raise ValueError(f"expected a non-empty 1-D or (frames, channels) array, got shape {samples.shape}")
    if not np.isfinite(samples).all():
        raise ValueError("cannot encode audio with NaN or inf samples")
    if subtype == "PCM_16":
        samples = np.clip(samples, -1.0, 1.0)
    buffer = io.BytesIO()
    sf.write(buffer, samples, int(sampling_rate), format="WAV", subtype=subtype)
    return buffer.getvalue()


def audio_value(array: Any, sampling_rate: int, path: str | None = None, subtype: str = "PCM_16") -> dict:
    """
    Builds a `datasets.Audio(decode=False)` value from a waveform.

    Args:
        array (`np.ndarray` or `torch.Tensor`):
            1-D mono samples, or 2-D `(frames, channels)`, in [-1, 1].
        sampling_rate (`int`):
            Sampling rate of `array`, in Hz.
        path (`str`, *optional*):
            File name stored beside the bytes, e.g. `"sample_0.wav"`; it names the clip in errors and on the Hub.
        subtype (`str`, *optional*, defaults to `"PCM_16"`):
            WAV subtype, see [`encode_wav`].

    Returns:
        `dict`: `{"bytes": <WAV bytes>, "path": path}`.
    """
    return {"bytes": encode_wav(array, sampling_rate, subtype=subtype), "path": path}
