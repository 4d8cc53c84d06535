"""``StateLock``: one run at a time per state dir; ``lock_state_dir`` picks the lock kind.

Why (design.md section 4): a nightly job gets killed and two runs can overlap (cron fires
while yesterday's run still drains its budget). Two runs writing the same registry and
journal would each replay the other's half-written night. So a run holds a ``filelock`` on
``<state>/.lock`` for its whole life; the OS releases it when the process dies, so a
``kill -9`` never leaves a lock that blocks later nights.

Taking the lock is also the moment to clean up after a killed run: temp files of
interrupted atomic writes are removed (no live writer can own them while we hold it).

A state dir on object storage has no file locks: ``lock_state_dir`` hands it a
``lease.LeaseLock`` (an expiring lock object) instead; both raise ``StateLockedError``.
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any

import filelock

from pipeline.clock import Clock, utc_now
from pipeline.errors import StateError, StateLockedError
from pipeline.io.atomic import TEMP_SUFFIX
from pipeline.io.object_store import ObjectStorage
from pipeline.io.storage import LocalStorage, Storage
from pipeline.state.lease import LOCK_NAME, LOCK_WAIT_HINT, LeaseLock

log = logging.getLogger(__name__)


def lock_state_dir(
    store: Storage,
    *,
    lock_wait_s: float,
    lease_s: float,
    clock: Clock = utc_now,
    stop: threading.Event | None = None,
) -> AbstractContextManager[Any]:
    """The lock of the state root ``store``: a file lock locally, a lease on object storage.

    ``lock_wait_s`` and ``lease_s`` come from ``StorageConfig`` (their defaults live in
    ``Settings``); ``stop`` is the run's stop event, which a lost lease sets.
    """
    if isinstance(store, LocalStorage):
        return StateLock(store.root, lock_wait_s)
    if isinstance(store, ObjectStorage):
        return LeaseLock(store, lock_wait_s=lock_wait_s, lease_s=lease_s, clock=clock, stop=stop)
    raise TypeError(f"no lock for {store!r}")


class StateLock:
    """Context manager owning ``path`` for one run: creates it and holds ``<path>/.lock``.

    ``lock_wait_s`` = 0 fails at once when another run holds the lock (the scheduler retries
    later); a positive value waits that long first (useful when runs may just touch).
    """

    def __init__(self, path: Path | str, lock_wait_s: float) -> None:
        self.path = Path(path)
        self.lock_wait_s = max(0.0, float(lock_wait_s))
        self.lock_path = self.path / LOCK_NAME
        self._lock: filelock.BaseFileLock | None = None

    def __enter__(self) -> StateLock:
        _ensure_writable_dir(self.path)
        lock = filelock.FileLock(str(self.lock_path), timeout=self.lock_wait_s)
        try:
            lock.acquire()
        except filelock.Timeout:
            waited = f"waited {self.lock_wait_s:g}s; " if self.lock_wait_s else ""
            raise StateLockedError(
                f"another run holds {self.lock_path}; {waited}wait for it to finish "
                f"(or {LOCK_WAIT_HINT}). If no run is active the lock is released "
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
    pattern = f".*{TEMP_SUFFIX}"
    for tmp in [*path.glob(pattern), *path.glob(f"*.journal/{pattern}")]:
        try:
            if tmp.is_file():
                tmp.unlink()
                log.info("removed %s, left by a run killed while writing", tmp.name)
        except OSError as exc:
            log.warning("cannot remove stale temp file %s: %s", tmp, exc)
