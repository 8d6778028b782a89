"""On-disk cache of embedding vectors, keyed by content under a model fingerprint.

Frozen encoders give the same vector for the same clip or caption every time, so reward
models and RL rewards compute each distinct input once (RLHF captioning paper,
https://huggingface.co/papers/2402.17813) and read it back afterwards. Layout:

```
<cache_dir>/<fingerprint>/fingerprint.json          what produced these vectors
<cache_dir>/<fingerprint>/<kind>/<key[:2]>/<key>.vec  one float32 vector per entry
```

A model with another fingerprint lives in another directory, so it never sees these vectors. Each entry is `.npy`
bytes followed by a SHA-256 of them, so a flipped bit is caught and the entry recomputed rather than trusted (entries
of the older layout, `<key>.npy` without a checksum, are removed once and recomputed).
"""

import hashlib
import io
import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.records import TMP_SUFFIX, atomic_write_bytes


logger = logging.getLogger(__name__)

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_KEY_PATTERN = re.compile(r"^[0-9a-f]{16,128}$")
_TMP_SUFFIX = TMP_SUFFIX
ENTRY_SUFFIX = ".vec"
_LEGACY_SUFFIX = ".npy"
# Trailer after the .npy bytes of every entry: a marker, then the SHA-256 of those bytes.
_CHECKSUM_MARKER = b"hfpref-sha256:"
_CHECKSUM_SIZE = len(_CHECKSUM_MARKER) + 32
# A temporary file this old was left by a process that died mid-write; younger ones may belong to a live writer.
STALE_TMP_SECONDS = 3600.0
_SWEPT_ROOTS: set[str] = set()


def _check_name(what: str, value: str) -> str:
    # Fingerprints and kinds become directory names: no separators, no "..", no hidden names.
    if not isinstance(value, str) or not _NAME_PATTERN.match(value) or ".." in value:
        raise ValueError(f"{what}={value!r} must match {_NAME_PATTERN.pattern} (it names a cache directory)")
    return value


class EmbeddingCache:
    r"""
    On-disk cache of float32 embedding vectors, keyed by content hash under a model fingerprint.

    Entries are written atomically: each vector goes to a hidden temporary file in the entry's directory
    (`.<key>.<random>.tmp`, a name no entry can have), then `os.replace` moves it into place. A crash mid-write
    leaves at most a stray temporary file, which reading ignores; the first cache opened on a folder in a process
    deletes the ones older than an hour (`STALE_TMP_SECONDS`). Every entry carries a SHA-256 of its bytes. An entry
    that cannot be trusted (truncated, flipped bytes, wrong shape or dtype, NaN or inf values, or a symbolic link
    that leads out of the cache) is treated as a miss: it is deleted (a link is removed, never its target) and a
    warning naming it is logged, so the caller recomputes it. Storing a NaN or inf vector is refused. Writes are not
    fsync'ed; after a power loss the checksum catches an empty or partial entry.

    Args:
        cache_dir (`str` or `os.PathLike`):
            Root directory of the cache; `~` is expanded. Created when missing.
        fingerprint (`str`):
            Identity of the model that produced the vectors (see [`~hfpref.encoders.model_fingerprint`]). Each
            fingerprint gets its own sub-directory.
        metadata (`dict`, *optional*):
            JSON-serializable description of the model, written once to `<cache_dir>/<fingerprint>/fingerprint.json`
            for humans; never read back to decide anything.

    Example:

    ```python
    >>> import tempfile
    >>> import numpy as np
    >>> from hfpref.encoders import EmbeddingCache

    >>> cache = EmbeddingCache(tempfile.mkdtemp(), "my-model")
    >>> key = cache.key_for_text("a dog barks")
    >>> cache.get("text", key) is None
    True
    >>> cache.put("text", key, np.array([0.6, 0.8], dtype=np.float32))
    >>> cache.get("text", key)
    array([0.6, 0.8], dtype=float32)
    >>> cache.stats
    {'hits': 1, 'misses': 1, 'writes': 1, 'corrupt': 0}

    ```
    """

    def __init__(self, cache_dir: str | os.PathLike, fingerprint: str, *, metadata: Mapping[str, Any] | None = None):
        self.cache_dir = Path(cache_dir).expanduser()
        self.fingerprint = _check_name("fingerprint", fingerprint)
        self.root = self.cache_dir / fingerprint
        self.root.mkdir(parents=True, exist_ok=True)
        self._real_root = os.path.realpath(self.root)
        self._counts = {"hits": 0, "misses": 0, "writes": 0, "corrupt": 0}
        if self._real_root not in _SWEPT_ROOTS:
            _SWEPT_ROOTS.add(self._real_root)
            self.remove_stale_temporary_files()
        description_path = self.root / "fingerprint.json"
        if not description_path.exists():
            description = {"fingerprint": fingerprint, **dict(metadata or {})}
            text = json.dumps(description, indent=2, sort_keys=True, default=str) + "\n"
            self._write_atomic(description_path, text.encode("utf-8"))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(cache_dir={str(self.cache_dir)!r}, fingerprint={self.fingerprint!r})"

    @staticmethod
    def key_for_text(text: str) -> str:
        r"""
        Content key of a caption: the SHA-256 of its UTF-8 bytes.

        Args:
            text (`str`):
                The caption, used verbatim (no stripping or lower-casing: the tokenizer may care).

        Returns:
            `str`: 64 hexadecimal characters.

        Example:

        ```python
        >>> from hfpref.encoders import EmbeddingCache

        >>> EmbeddingCache.key_for_text("a dog barks")[:16]
        'd291138744fc6c60'
        >>> EmbeddingCache.key_for_text("a dog barks") == EmbeddingCache.key_for_text("a dog barks ")
        False

        ```
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return hashlib.sha256(b"text\0" + text.encode("utf-8")).hexdigest()

    @staticmethod
    def key_for_audio(array: np.ndarray, sampling_rate: int) -> str:
        r"""
        Content key of a clip: the SHA-256 of its samples as float32 bytes plus its sampling rate.

        Args:
            array (`np.ndarray`):
                Mono waveform; converted to contiguous float32 before hashing, so a float64 copy of the same clip
                gets the same key when its samples are float32-exact.
            sampling_rate (`int`):
                Sampling rate of `array` in Hz.

        Returns:
            `str`: 64 hexadecimal characters.
        """
        samples = np.ascontiguousarray(array, dtype=np.float32)
        digest = hashlib.sha256(f"audio\0{int(sampling_rate)}\0{samples.shape}\0".encode())
        digest.update(memoryview(samples).cast("B"))
        return digest.hexdigest()

    @property
    def stats(self) -> dict[str, int]:
        r"""`dict[str, int]`: counts of `hits`, `misses`, `writes` and `corrupt` entries since this object was made."""
        return dict(self._counts)

    def reset_stats(self) -> None:
        r"""Set every counter of [`~EmbeddingCache.stats`] back to zero."""
        for name in self._counts:
            self._counts[name] = 0

    def path_for(self, kind: str, key: str) -> Path:
        r"""
        Path of the entry for `key` under `kind` (it may not exist).

        Args:
            kind (`str`):
                Kind of vector, e.g. `"audio"` or `"text"`; a sub-directory name.
            key (`str`):
                Content key from [`~EmbeddingCache.key_for_text`] or [`~EmbeddingCache.key_for_audio`].
        """
        _check_name("kind", kind)
        if not isinstance(key, str) or not _KEY_PATTERN.match(key):
            raise ValueError(f"key={key!r} is not a lowercase hexadecimal digest (16 to 128 characters)")
        return self.root / kind / key[:2] / f"{key}{ENTRY_SUFFIX}"

    def get(self, kind: str, key: str) -> np.ndarray | None:
        r"""
        Read one vector.

        Args:
            kind (`str`):
                Kind of vector, e.g. `"audio"` or `"text"`.
            key (`str`):
                Content key.

        Returns:
            `np.ndarray` or `None`: the 1-D float32 vector, or `None` on a miss (absent or unreadable entry).
        """
        path = self.path_for(kind, key)
        escape = self._link_out_of_cache(path)
        if escape is not None:
            self._discard(escape, f"a symbolic link to {os.path.realpath(escape)}, outside the cache")
            return None
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self._counts["misses"] += 1
            return None
        except OSError as error:
            self._discard(path, f"{type(error).__name__}: {error}")
            return None
        payload, trailer = data[:-_CHECKSUM_SIZE], data[-_CHECKSUM_SIZE:]
        if len(data) < _CHECKSUM_SIZE or not trailer.startswith(_CHECKSUM_MARKER):
            self._discard(path, "no checksum (truncated, or written by another program)")
            return None
        if hashlib.sha256(payload).digest() != trailer[len(_CHECKSUM_MARKER) :]:
            self._discard(path, "checksum mismatch (flipped or overwritten bytes)")
            return None
        try:
            vector = np.load(io.BytesIO(payload), allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            self._discard(path, f"{type(error).__name__}: {error}")
            return None
        if not isinstance(vector, np.ndarray) or vector.dtype != np.float32 or vector.ndim != 1 or vector.size == 0:
            self._discard(path, f"expected a non-empty 1-D float32 array, found {getattr(vector, 'shape', '?')}")
            return None
        if not np.isfinite(vector).all():
            self._discard(path, "NaN or inf values")
            return None
        self._counts["hits"] += 1
        return vector

    def put(self, kind: str, key: str, vector: np.ndarray) -> None:
        r"""
        Store one vector atomically, replacing any entry for the same key.

        Args:
            kind (`str`):
                Kind of vector, e.g. `"audio"` or `"text"`.
            key (`str`):
                Content key.
            vector (`np.ndarray`):
                1-D vector, stored as float32.
        """
        vector = np.ascontiguousarray(vector, dtype=np.float32)
        if vector.ndim != 1 or vector.size == 0:
            raise ValueError(f"expected a non-empty 1-D vector, got shape {vector.shape}")
        if not np.isfinite(vector).all():
            raise ValueError(
                f"refusing to cache a {kind} embedding with NaN or inf values (key {key}): the encoder produced them; "
                "check its weights and inputs"
            )
        path = self.path_for(kind, key)
        escape = self._link_out_of_cache(path)
        if escape is not None:
            self._discard(escape, f"a symbolic link to {os.path.realpath(escape)}, outside the cache")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write_atomic(path, vector)
        self._counts["writes"] += 1

    def get_many(self, kind: str, keys: Sequence[str]) -> list[np.ndarray | None]:
        r"""
        Read several vectors.

        Args:
            kind (`str`):
                Kind of vector.
            keys (`Sequence[str]`):
                Content keys.

        Returns:
            `list[np.ndarray | None]`: one entry per key, `None` for each miss.
        """
        return [self.get(kind, key) for key in keys]

    def put_many(self, kind: str, keys: Sequence[str], vectors: Sequence[np.ndarray] | np.ndarray) -> None:
        r"""
        Store several vectors.

        Args:
            kind (`str`):
                Kind of vector.
            keys (`Sequence[str]`):
                Content keys.
            vectors (`Sequence[np.ndarray]` or `np.ndarray` of shape `(len(keys), dim)`):
                One vector per key.
        """
        if len(keys) != len(vectors):
            raise ValueError(f"got {len(keys)} keys but {len(vectors)} vectors")
        for key, vector in zip(keys, vectors):
            self.put(kind, key, vector)

    def remove_stale_temporary_files(self, older_than: float = STALE_TMP_SECONDS) -> int:
        r"""
        Delete the temporary files that writers killed mid-write left behind under this fingerprint, and the entries
        of the older layout (`<key>.npy`, no checksum).

        Args:
            older_than (`float`, *optional*, defaults to `STALE_TMP_SECONDS`, one hour):
                Only files last modified this many seconds ago or earlier are deleted, so a live writer's file stays.

        Returns:
            `int`: how many files were deleted (logged when any).
        """
        now = time.time()
        removed, legacy = 0, 0
        for directory, _, files in os.walk(self.root):
            for name in files:
                path = os.path.join(directory, name)
                try:
                    if name.startswith(".") and name.endswith(_TMP_SUFFIX):
                        if now - os.lstat(path).st_mtime >= older_than:
                            os.unlink(path)
                            removed += 1
                    elif name.endswith(_LEGACY_SUFFIX) and _KEY_PATTERN.match(name[: -len(_LEGACY_SUFFIX)]):
                        os.unlink(path)  # an entry of the layout without checksums: recomputed on its next use
                        legacy += 1
                except FileNotFoundError:
                    pass
        if removed:
            logger.info("Removed %d stale temporary file(s) from the embedding cache %s.", removed, self.root)
        if legacy:
            logger.info(
                "Removed %d embedding cache entries of an older layout (no checksum) from %s; they are recomputed.",
                legacy,
                self.root,
            )
        return removed

    def _link_out_of_cache(self, path: Path) -> Path | None:
        """The first symbolic link on the way from the cache root to `path` that leads outside the cache, if any."""
        current = self.root
        for part in path.relative_to(self.root).parts:
            current = current / part
            if current.is_symlink():
                target = os.path.realpath(current)
                if target != self._real_root and not target.startswith(self._real_root + os.sep):
                    return current
        return None

    def _discard(self, path: Path, reason: str) -> None:
        logger.warning("Discarding corrupt embedding cache entry %s (%s); it will be recomputed.", path, reason)
        self._counts["corrupt"] += 1
        self._counts["misses"] += 1
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as error:
            logger.warning("Could not delete %s: %s", path, error)

    @staticmethod
    def _write_atomic(path: Path, payload: np.ndarray | bytes) -> None:
        if isinstance(payload, np.ndarray):
            buffer = io.BytesIO()
            np.save(buffer, payload, allow_pickle=False)
            data = buffer.getvalue()
            payload = data + _CHECKSUM_MARKER + hashlib.sha256(data).digest()
        atomic_write_bytes(path, payload, durable=False)
