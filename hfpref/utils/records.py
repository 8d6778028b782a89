"""
Crash-safe bookkeeping for runs that record what they finished (the quickstart's `stages/*.json`).

A record is written atomically (a temporary file in the same folder, flushed and fsync'ed, then `os.replace`), so a
kill leaves either the old record or the new one, never half of one. A record that still cannot be read (written by
an older version, or damaged on disk) means "not done": [`read_json_record`] warns, naming the file, and the caller
runs the step again. [`OutputLock`] keeps a second run out of a folder while one is writing to it.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any


logger = logging.getLogger(__name__)

LOCK_NAME = ".hfpref.lock"
TMP_SUFFIX = ".tmp"


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> Path:
    """
    Write `data` to `path` so that a crash at any point leaves the old file or the new one, never a part.

    The bytes go to a hidden temporary file next to `path` (`.<name>.<random>.tmp`, a name no real file has), then
    `os.replace` moves it into place, an atomic rename on POSIX and Windows alike. A failure removes the temporary
    file; a hard kill may leave it behind, and readers never look at it.

    Args:
        path (`str` or `os.PathLike`):
            The file to write; its folder must exist.
        data (`bytes`):
            The whole content.
        durable (`bool`, *optional*, defaults to `True`):
            Also fsync the file before the rename and the folder after it (where the platform allows), so the new
            file survives a power loss. High-volume writers whose readers verify what they read (the embedding cache)
            skip it.

    Returns:
        `Path`: `path`.
    """
    path = Path(path)
    tmp_path = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
    try:
        with open(tmp_path, "xb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except OSError:
            pass
        raise
    if not durable:
        return path
    try:
        directory = os.open(path.parent, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder; its rename is durable enough
        return path
    try:
        os.fsync(directory)
    except OSError:
        pass
    finally:
        os.close(directory)
    return path


def atomic_write_json(path: str | os.PathLike, value: Any, *, indent: int | None = 2) -> Path:
    """
    Write `value` as JSON to `path` with [`atomic_write_bytes`] (fsync'ed), creating missing parent folders.

    Args:
        path (`str` or `os.PathLike`):
            The file to write.
        value (`Any`):
            A JSON-serializable value; it is serialized before anything touches the disk, so a value that is not
            serializable leaves the old file in place.
        indent (`int` or `None`, *optional*, defaults to `2`):
            Passed to `json.dumps`.

    Returns:
        `Path`: `path`.

    Example:

    ```python
    >>> import tempfile, pathlib
    >>> path = atomic_write_json(pathlib.Path(tempfile.mkdtemp()) / "stages" / "world.json", {"seconds": 1.5})
    >>> read_json_record(path)
    {'seconds': 1.5}

    ```
    """
    path = Path(path)
    text = json.dumps(value, indent=indent)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, text.encode("utf-8"))


def read_json_record(path: str | os.PathLike) -> Any | None:
    """
    Read a JSON record written by [`atomic_write_json`]; `None` when it is missing or unreadable.

    An unreadable record (truncated, invalid JSON, invalid UTF-8, not a JSON object) is treated as "this step is not
    done": a warning names the file and the reason, and the caller runs the step again and overwrites it.

    Args:
        path (`str` or `os.PathLike`):
            The record.

    Returns:
        `dict` or `None`: the record, or `None` when it is absent or unreadable.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        logger.warning("Ignoring unreadable record %s (%s); its step will run again.", path, error)
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        logger.warning("Ignoring unreadable record %s (invalid JSON: %s); its step will run again.", path, error)
        return None
    if not isinstance(value, dict):
        logger.warning(
            "Ignoring record %s: it holds a JSON %s, not an object; its step will run again.",
            path,
            type(value).__name__,
        )
        return None
    return value


class OutputLockedError(RuntimeError):
    """Another process holds the lock on an output folder."""


class OutputLock:
    """
    An exclusive lock on an output folder, so two runs cannot interleave their records and outputs.

    The lock is an OS file lock (`fcntl.flock`) on `<folder>/.hfpref.lock`, which also holds the owner's pid for the
    error message. The operating system drops the lock when its process ends, however it ends, so a killed run never
    leaves a folder locked; a stale `.hfpref.lock` file is harmless. On platforms without `fcntl` (Windows) the folder
    is not locked and a warning says so.

    Args:
        folder (`str` or `os.PathLike`):
            The output folder; created when missing.

    Raises:
        [`OutputLockedError`]: on `acquire` (or entering the `with` block), when another process holds the lock;
            the message names the folder and the holder's pid.

    Example:

    ```python
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with OutputLock(folder):
    ...     try:
    ...         OutputLock(folder).acquire()
    ...     except OutputLockedError as error:
    ...         print("in use by another hfpref run" in str(error))
    True

    ```
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._handle = None

    def acquire(self) -> OutputLock:
        if self._handle is not None:
            return self
        try:
            import fcntl
        except ImportError:
            logger.warning("Cannot lock %s on this platform: make sure no other run writes to it.", self.folder)
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise OutputLockedError(
                f"{self.folder} is in use by another hfpref run (pid {holder}, lock file {self.path}). Wait for it to "
                "finish, stop it, or choose another output folder."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is None:
            return
        import fcntl

        try:
            self._handle.seek(0)
            self._handle.truncate()
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
        finally:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
