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
  with ``If-Match``), so a live run never looks dead;
* a lease is lost when it was taken over anyway (the run was paused for longer than its
  lease) or when renewals failed until the next beat would come after it expires. The run
  must not go on writing a state another run may now own: the heartbeat runs the
  ``on_lost`` callbacks (the caches stop rewriting), sets the run's stop event (every wait
  ends, nothing new starts) and leaving the lock raises ``StateLockLostError`` (exit 9);
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
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from pipeline.clock import Clock, utc_now
from pipeline.errors import Cancelled, StateLockedError, StateLockLostError
from pipeline.io.atomic import json_bytes
from pipeline.io.object_store import ObjectStorage

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"

#: How often a waiting run asks again whether the lock is free.
POLL_S = 1.0

#: What a user sets to wait for a held lock (the flag and the variable of ``lock_wait_s``).
LOCK_WAIT_HINT = "raise --lock-wait or RECCOBEATS_LOCK_WAIT_S"


class LeaseLock:
    """Context manager holding ``<store>/.lock`` as an expiring lease for one run.

    ``lock_wait_s`` = 0 fails at once with ``StateLockedError`` when a live run holds the
    lock; a positive value waits up to that long (polling every ``POLL_S``, ended early by
    ``stop``). ``clock`` is injected so tests expire leases and time the wait without
    sleeping. ``stop`` is the run's stop event: a lost lease sets it.
    """

    def __init__(
        self,
        store: ObjectStorage,
        *,
        lock_wait_s: float,
        lease_s: float,
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
        self._interval_s = lease_s / 3
        self._done = threading.Event()
        self._lost: StateLockLostError | None = None
        self._lost_lock = threading.Lock()  # the heartbeat loses, the run thread subscribes
        self._on_lost: list[Callable[[], None]] = []
        self._expires_at: datetime | None = None  # of the last record we wrote
        self._etag_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.locked = False
        self.took_over: dict[str, Any] | None = None

    # -- context manager -------------------------------------------------------------------

    def __enter__(self) -> LeaseLock:
        deadline = self._clock() + timedelta(seconds=self.lock_wait_s)
        while True:
            now = self._clock()
            holder = self._try_acquire(now)
            if holder is None:
                self._expires_at = now + self.lease
                break
            remaining = (deadline - self._clock()).total_seconds()
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
        try:
            current = self._read()
            if current is not None and current[0].get("owner") == self.owner:
                self.store.delete([LOCK_NAME])
        except OSError as err:
            if self._lost is None:
                raise
            # A lease that could not be renewed usually means the store is down: releasing
            # fails too, and that error must not hide the loss (exit 9 became exit 1).
            log.warning("cannot release the lost state lock: %s", err)
        # A plain Cancelled is the stop the loss set off; another error keeps its own exit
        # code (the loss is logged).
        if self._lost is not None and (exc is None or type(exc) is Cancelled):
            raise self._lost from exc

    @property
    def lost(self) -> StateLockLostError | None:
        """The loss of the lease, once the heartbeat has seen one (else ``None``)."""
        return self._lost

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the lease is lost (at once if it is), before the stop is set.

        Why before: the stop makes the run checkpoint its caches, and a checkpoint after the
        loss would rewrite the new owner's files; the callback fences them first.
        """
        with self._lost_lock:
            self._on_lost.append(callback)
            lost = self._lost is not None
        if lost:
            callback()

    # -- one attempt -----------------------------------------------------------------------

    def _try_acquire(self, now: datetime) -> dict[str, Any] | None:
        """Take the lock; ``None`` on success, else the live holder's record."""
        record = self._record(now)
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
        while self._lost is None and not self._done.wait(self._interval_s):
            self._beat()

    def _beat(self) -> None:
        """One heartbeat: renew, or give the lease up once it would expire before the next.

        Why not wait for the expiry itself: from then on another run may take the lock over
        while this one still writes. A missed beat (the store is slow) is ridden out; at a
        beat every ``lease_s / 3``, the second in a row gives the lease up.
        """
        why = "the lock changed while renewing"
        try:
            if self._renew() or self._lost is not None:
                return
        except OSError as exc:
            why = f"{type(exc).__name__}: {exc}"
            log.warning("cannot renew the state lock lease: %s", why)
        assert self._expires_at is not None  # set when the lock was taken
        if self._clock() + timedelta(seconds=self._interval_s) >= self._expires_at:
            self._lose(
                f"lost the state lock {self.store.uri(LOCK_NAME)}: its lease could not be "
                f"renewed before it expires at {self._expires_at.isoformat()} (last: {why}); "
                "another run may take it over, so this run stops"
            )

    def _renew(self) -> bool:
        """Extend the lease; False when it was not extended (changed meanwhile, or lost)."""
        current = self._read()
        if current is None or current[0].get("owner") != self.owner:
            holder = current[0].get("owner") if current else "nobody"
            self._lose(
                f"lost the state lock {self.store.uri(LOCK_NAME)} (now held by {holder}); "
                "this run was paused longer than its lease (lock_lease_s) and another run "
                "took over"
            )
            return False
        now = self._clock()
        if not self.store.replace_if_match(LOCK_NAME, json_bytes(self._record(now)), current[1]):
            log.warning("state lock changed while renewing; checking again next beat")
            return False
        self._expires_at = now + self.lease
        return True

    def _lose(self, message: str) -> None:
        """Record the loss (once), fence the callers' saves, then stop the run."""
        with self._lost_lock:
            if self._lost is not None:
                return
            self._lost = StateLockLostError(message)
            callbacks = list(self._on_lost)
        log.error("%s", message)
        for callback in callbacks:
            callback()
        self._stop.set()

    # -- helpers ---------------------------------------------------------------------------

    def _record(self, now: datetime) -> dict[str, Any]:
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
            f"(or {LOCK_WAIT_HINT}). A killed run's lease expires after lock_lease_s "
            "(RECCOBEATS_LOCK_LEASE_S)."
        )
