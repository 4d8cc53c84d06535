"""Atomic file writes on a local filesystem: the one implementation the package uses.

Why: a nightly job gets killed (OOM, pod eviction, ``kill -9``), and a reader (the next
run, a pandas user) must then find the old file or the new one, never half a file. So
every file is written into a hidden temp file in the same directory, flushed and fsynced,
renamed over the target (``os.replace``: atomic on one filesystem), and the directory is
fsynced so the rename itself survives a power cut. The state layer (journal, checkpoints,
learned rate) and the output layer (rejects, run reports, partition dirs) both use it.

Errors are plain ``OSError``: this layer does not decide what a failed write means (the
state layer turns it into ``StateError``; an output write failing is the caller's to say).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO, Any

#: Temp files are ``.<name>.<random>.tmp``: hidden from pyarrow/pandas discovery (leading
#: dot) and recognisable, so a sweep can remove what a killed writer left.
TEMP_SUFFIX = ".tmp"


def _process_umask() -> int:
    """The umask, read once at import (``os.umask`` can only be read by setting it, which is
    process-wide: doing it per write would race with other threads creating files)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: The mode an ``open()`` would give a new file. ``mkstemp`` creates 0600, and ``os.replace``
#: keeps it: run reports and rejects were readable by their owner only, unlike the
#: partitions pyarrow writes, and an analyst sharing the output dir could not read them.
_FILE_MODE = 0o666 & ~_process_umask()


def atomic_write(path: Path | str, write: Callable[[IO[bytes]], object]) -> None:
    """Run ``write(f)`` into a temp file next to ``path``, then publish it atomically.

    On any error (including ``KeyboardInterrupt``) the temp file is removed and the old
    file, if any, stays in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _FILE_MODE)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(data: bytes, path: Path | str) -> None:
    """Atomically replace ``path`` with ``data``."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(obj: Any, path: Path | str) -> None:
    """Atomically write ``obj`` as pretty JSON (datetimes as ISO 8601)."""
    atomic_write_bytes(json_bytes(obj), path)


def json_bytes(obj: Any) -> bytes:
    """``obj`` as the pretty, sorted JSON every state and report file uses."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=False)
    return (text + "\n").encode("utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def fsync_path(path: Path | str) -> None:
    """fsync a file or directory by path (raises ``OSError``)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: Path | str) -> None:
    """Persist renames in ``directory`` (its entries); a no-op where directories cannot be
    opened or fsynced (some platforms and filesystems), because the data itself is synced."""
    with contextlib.suppress(OSError):
        fsync_path(directory)
