"""``LeaseLock``: one run at a time on a state prefix in object storage.

Why a lease: object stores have no file locks, and the process holding a lock may be a pod
that is evicted or ``kill -9``-ed, after which nothing releases it. So the lock is an
object, ``<state>/.lock``, holding its owner and an expiry time:

* taking it is a conditional create (``If-None-Match: *``): of two runs racing, exactly
  one create succeeds;
* a lock whose expiry has passed belongs to a dead run: it is taken over with a
  conditional replace (``If-Match: <etag it was read with>``), so of two runs taking over
  the same stale lock exactly one wins;
* while the run lives, a heartbeat thread renews the expiry every ``lease_s / 3`` (again
  with ``If-Match``), so a live run never looks dead; if the lock was taken over anyway (the
  run was paused for longer than its lease), the heartbeat records the loss and leaving the
  lock raises ``StateError``;
* on exit the lock is deleted if it is still ours.

Expiry compares wall clocks of different hosts: they must agree to well within
``lease_s`` (NTP gives milliseconds; the default lease is 5 minutes).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from pipeline.clock import Clock, utc_now
from pipeline.errors import Cancelled, StateError, StateLockedError
from pipeline.io.atomic import json_bytes
from pipeline.io.object_store import ObjectStorage

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"

#: How often a waiting run asks again whether the lock is free.
POLL_S = 1.0


class LeaseLock:
    """Context manager holding ``<store>/.lock`` as an expiring lease for one run.

    ``lock_wait_s`` = 0 fails at once with ``StateLockedError`` when a live run holds the
    lock; a positive value waits up to that long (polling every ``POLL_S``, ended early by
    ``stop``). ``clock`` is injected so tests expire leases without sleeping.
    """

    def __init__(
        self,
        store: ObjectStorage,
        *,
        lock_wait_s: float = 0.0,
        lease_s: float = 300.0,
        clock: Clock = utc_now,
        stop: threading.Event | None = None,
        heartbeat: bool = True,
    ) -> None:
        self.store = store
        self.lock_wait_s = max(0.0, float(lock_wait_s))
        self.lease = timedelta(seconds=lease_s)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._clock = clock
        self._stop = stop or threading.Event()
        self._heartbeat = heartbeat
        self._done = threading.Event()
        self._lost: str | None = None
        self._etag_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.locked = False
        self.took_over: dict[str, Any] | None = None

    # -- context manager -------------------------------------------------------------------

    def __enter__(self) -> LeaseLock:
        deadline = time.monotonic() + self.lock_wait_s
        while True:
            holder = self._try_acquire()
            if holder is None:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StateLockedError(self._locked_message(holder))
            if self._stop.wait(min(POLL_S, remaining)):
                raise Cancelled("stop requested while waiting for the state lock")
        self.locked = True
        if self._heartbeat:
            self._thread = threading.Thread(
                target=self._renew_loop, name="state-lease", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if not self.locked:
            return
        self.locked = False
        current = self._read()
        if current is not None and current[0].get("owner") == self.owner:
            self.store.delete([LOCK_NAME])
        if self._lost and exc_type is None:
            raise StateError(self._lost)

    # -- one attempt -----------------------------------------------------------------------

    def _try_acquire(self) -> dict[str, Any] | None:
        """Take the lock; ``None`` on success, else the live holder's record."""
        record = self._record()
        if self.store.create_exclusive(LOCK_NAME, json_bytes(record)):
            return None
        current = self._read()
        if current is None:  # released between our create and our read: try once more
            return None if self.store.create_exclusive(LOCK_NAME, json_bytes(record)) else {}
        holder, etag = current
        if not self._expired(holder):
            return holder
        if self.store.replace_if_match(LOCK_NAME, json_bytes(record), etag):
            self.took_over = holder
            log.warning(
                "took over the state lock %s from %s, whose lease expired at %s (a killed run)",
                self.store.uri(LOCK_NAME),
                holder.get("owner", "?"),
                holder.get("expires_at", "?"),
            )
            return None
        return self._read_holder() or {}

    def _renew_loop(self) -> None:
        interval = self.lease.total_seconds() / 3
        while not self._done.wait(interval):
            try:
                self._renew()
            except OSError as exc:  # transient: the lease outlives a few missed beats
                log.warning("cannot renew the state lock lease: %s", exc)
            if self._lost:
                return

    def _renew(self) -> None:
        current = self._read()
        if current is None or current[0].get("owner") != self.owner:
            holder = current[0].get("owner") if current else "nobody"
            self._lost = (
                f"lost the state lock {self.store.uri(LOCK_NAME)} (now held by {holder}); "
                "this run was paused longer than lock_lease_s and another run took over"
            )
            log.error(self._lost)
            return
        if not self.store.replace_if_match(LOCK_NAME, json_bytes(self._record()), current[1]):
            log.warning("state lock changed while renewing; checking again next beat")

    # -- helpers ---------------------------------------------------------------------------

    def _record(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "renewed_at": now.isoformat(),
            "expires_at": (now + self.lease).isoformat(),
        }

    def _read(self) -> tuple[dict[str, Any], str] | None:
        got = self.store.read_with_etag(LOCK_NAME)
        if got is None:
            return None
        data, etag = got
        try:
            record = json.loads(data.decode("utf-8"))
        except ValueError:
            record = {}  # unreadable: treated as expired, taken over below
        return (record if isinstance(record, dict) else {}), etag

    def _read_holder(self) -> dict[str, Any] | None:
        current = self._read()
        return current[0] if current else None

    def _expired(self, holder: dict[str, Any]) -> bool:
        try:
            expires = datetime.fromisoformat(str(holder["expires_at"]))
        except (KeyError, ValueError):
            return True  # a lock we cannot read cannot be proven alive
        return expires <= self._clock()

    def _locked_message(self, holder: dict[str, Any]) -> str:
        waited = f"waited {self.lock_wait_s:g}s; " if self.lock_wait_s else ""
        return (
            f"another run holds {self.store.uri(LOCK_NAME)} (owner {holder.get('owner', '?')}, "
            f"lease until {holder.get('expires_at', '?')}); {waited}wait for it to finish "
            "(or raise lock_wait_s). A killed run's lease expires after lock_lease_s."
        )
