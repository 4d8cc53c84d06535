"""The state directory: one lock, atomic files, and self-healing reads.

Why this module exists (design.md section 4): a nightly job gets killed, and two runs can
overlap. So every file in the state dir is written as temp + fsync + rename (+ fsync of the
directory), a ``filelock`` on ``<state>/.lock`` keeps a second run out, and a file that does
not read back (truncated by a disk-full, edited by hand, written by an older schema) is moved
aside to ``<name>.corrupt-<UTC timestamp>`` and rebuilt instead of failing the run: every
state file is a cache, so losing one costs API calls, never correctness.

Parquet and JSON only: pickle/joblib on disk would be code execution on load.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import filelock
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import StateError, StateLockedError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
LEARNED_RATE_NAME = "learned_rate.json"


# -- the lock ------------------------------------------------------------------------------


class StateDir:
    """Context manager owning ``path`` for one run: creates it and holds ``<path>/.lock``.

    ``lock_wait_s`` = 0 fails at once when another run holds the lock (the scheduler retries
    later); a positive value waits that long first (useful when runs may just touch).
    """

    def __init__(self, path: Path | str, lock_wait_s: float = 0.0) -> None:
        self.path = Path(path)
        self.lock_wait_s = max(0.0, float(lock_wait_s))
        self.lock_path = self.path / LOCK_NAME
        self._lock: filelock.BaseFileLock | None = None

    def __enter__(self) -> StateDir:
        _ensure_writable_dir(self.path)
        lock = filelock.FileLock(str(self.lock_path), timeout=self.lock_wait_s)
        try:
            lock.acquire()
        except filelock.Timeout:
            waited = f"waited {self.lock_wait_s:g}s; " if self.lock_wait_s else ""
            raise StateLockedError(
                f"another run holds {self.lock_path}; {waited}wait for it to finish "
                "(or raise lock_wait_s). If no run is active the lock is released "
                "automatically when its process exits."
            ) from None
        except OSError as exc:
            raise StateError(f"cannot take the state lock {self.lock_path}: {exc}") from exc
        self._lock = lock
        _remove_stale_temp_files(self.path)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @property
    def locked(self) -> bool:
        """True while this instance holds the lock."""
        return self._lock is not None and self._lock.is_locked

    def __truediv__(self, name: str) -> Path:
        return self.path / name


def _ensure_writable_dir(path: Path) -> None:
    """Create ``path`` or raise a ``StateError`` that says why it is unusable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(
            f"cannot create state dir {path}: {exc.strerror or exc} "
            "(is the path, or one of its parents, a file or on a read-only filesystem?)"
        ) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise StateError(f"state dir {path} is not writable by this user")


def _remove_stale_temp_files(path: Path) -> None:
    """Delete temp files of ``atomic_write`` that a killed run left in the state dir.

    Called with the lock held, so no live run of this state dir is writing one: any
    ``.<name>.<random>.tmp`` is a torn write that was never published (the real file is the
    old one, intact). Without this a run killed mid-checkpoint leaves litter forever.
    """
    for tmp in [*path.glob(".*.tmp"), *path.glob("*.journal/.*.tmp")]:
        try:
            if tmp.is_file():
                tmp.unlink()
                log.info("removed %s, left by a run killed while writing", tmp.name)
        except OSError as exc:
            log.warning("cannot remove stale temp file %s: %s", tmp, exc)


# -- atomic writes -------------------------------------------------------------------------


def atomic_write(path: Path | str, write: Callable[[IO[bytes]], None]) -> None:
    """Run ``write(f)`` into a temp file next to ``path``, then publish it atomically.

    The temp file lives in the same directory so ``os.replace`` is a rename on one
    filesystem: readers see the old file or the new one, never a half-written one, even if
    the process is killed. On any error the temp file is removed and the old file stays.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise StateError(f"cannot write {path}: {exc}") from exc
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (the directory entry), not only the file's bytes."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(data: bytes, path: Path | str) -> None:
    """Atomically replace ``path`` with ``data``."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_parquet(
    table_or_df: pa.Table | pd.DataFrame, path: Path | str, schema: pa.Schema | None = None
) -> int:
    """Atomically write a Parquet file; returns the number of rows written.

    A DataFrame is converted with ``schema`` (its index is never written), so the file's
    types are the declared ones, not whatever pandas inferred.
    """
    if isinstance(table_or_df, pd.DataFrame):
        table = pa.Table.from_pandas(table_or_df, schema=schema, preserve_index=False)
    else:
        table = table_or_df if schema is None else table_or_df.select(schema.names).cast(schema)
    if schema is not None:
        table = table.replace_schema_metadata(None)  # no pandas metadata: plain Arrow types
    atomic_write(path, lambda f: pq.write_table(table, f, compression="zstd"))
    return table.num_rows


def atomic_write_json(obj: Any, path: Path | str) -> None:
    """Atomically write ``obj`` as pretty JSON (datetimes as ISO 8601)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=False)
    atomic_write_bytes((text + "\n").encode("utf-8"), path)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# -- safe reads ----------------------------------------------------------------------------


def read_parquet_safely(path: Path | str, schema: pa.Schema) -> pa.Table:
    """Read ``path`` conformed to ``schema``; a missing file is an empty table.

    A file that cannot be read, or lacks a column of ``schema``, or has a column that does
    not cast to the declared type, is quarantined and an empty table returned, so the run
    rebuilds the cache instead of failing. Extra columns are dropped.
    """
    path = Path(path)
    if not path.exists():
        return schema.empty_table()
    try:
        table = pq.read_table(path)
        missing = [name for name in schema.names if name not in table.column_names]
        if missing:
            raise ValueError(f"missing column(s) {missing}")
        return table.select(schema.names).cast(schema).replace_schema_metadata(None)
    except (OSError, ValueError, TypeError, pa.ArrowException) as exc:
        quarantine(path, reason=str(exc))
        return schema.empty_table()


def read_json_safely(path: Path | str, default: Any) -> Any:
    """Parsed JSON at ``path``; ``default`` (a copy) if missing, or if corrupt (quarantined)."""
    path = Path(path)
    if not path.exists():
        return copy.deepcopy(default)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are both
        quarantine(path, reason=str(exc))
        return copy.deepcopy(default)


def quarantine(path: Path | str, reason: str = "") -> Path:
    """Move ``path`` aside to ``<name>.corrupt-<UTC timestamp>`` and warn; returns the new path.

    Kept rather than deleted so a human can look at what went wrong.
    """
    path = Path(path)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        os.replace(path, target)
    except OSError as exc:
        raise StateError(
            f"{path} is unreadable ({reason}) and cannot be moved aside: {exc}"
        ) from exc
    _fsync_dir(path.parent)
    log.warning(
        "state file %s is unreadable (%s); quarantined to %s, it will be rebuilt",
        path,
        reason or "corrupt",
        target.name,
    )
    return target


# -- learned rate --------------------------------------------------------------------------


def load_learned_rate(state_dir: Path | str) -> float | None:
    """The limiter rate the last run settled at, so a run starts there instead of probing.

    ``None`` when there is none or it is not a positive finite number.
    """
    data = read_json_safely(Path(state_dir) / LEARNED_RATE_NAME, default=None)
    if not isinstance(data, dict):
        return None
    rate = data.get("rate_per_window")
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        return None
    if not math.isfinite(rate) or rate <= 0:
        return None
    return float(rate)


def save_learned_rate(state_dir: Path | str, rate: float, when: datetime) -> None:
    """Persist the limiter's effective rate (requests per window) at ``when``."""
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"learned rate must be a positive finite number, got {rate!r}")
    if when.tzinfo is None:
        raise ValueError("when must be timezone-aware")
    payload = {"rate_per_window": float(rate), "saved_at": when.astimezone(UTC).isoformat()}
    atomic_write_json(payload, Path(state_dir) / LEARNED_RATE_NAME)
