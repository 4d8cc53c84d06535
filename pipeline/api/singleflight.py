"""Single-flight: concurrent identical requests share one upstream call.

Why: chunks of different playlists often overlap, and every duplicate HTTP call costs a
slot of a scarce rate budget. The system this replaces held one global lock *during* the
upstream call, so every other cache miss stalled behind a 60-second request. Here the lock
only guards the dict lookup/registration of a ``concurrent.futures.Future``; the call itself
runs unlocked in the first caller's thread, and the others block on the future alone.
Entries are removed as soon as the call ends, so this is not a cache: a later identical
request makes a fresh call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """``do(key, fn)``: run ``fn`` once per key among callers that overlap in time."""

    def __init__(self, on_shared: Callable[[Hashable], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, Future[T]] = {}
        self._on_shared = on_shared
        self._hits = 0

    def do(self, key: Hashable, fn: Callable[[], T]) -> T:
        """Return ``fn()``'s result, or the result/exception of an identical call in flight.

        Callers that join an in-flight call receive the *same* object (or exception), so
        ``fn`` should return something immutable.
        """
        with self._lock:
            future = self._calls.get(key)
            leader = future is None
            if future is None:
                future = self._calls[key] = Future()
                future.set_running_or_notify_cancel()
            else:
                self._hits += 1
        if not leader:
            if self._on_shared is not None:
                self._on_shared(key)
            return future.result()
        return self._lead(key, future, fn)

    def _lead(self, key: Hashable, future: Future[T], fn: Callable[[], T]) -> T:
        try:
            result = fn()
        except BaseException as exc:
            # Deregister before publishing so a caller arriving later starts a fresh call
            # instead of inheriting a finished failure.
            self._forget(key, future)
            future.set_exception(exc)
            raise
        self._forget(key, future)
        future.set_result(result)
        return result

    def _forget(self, key: Hashable, future: Future[T]) -> None:
        with self._lock:
            if self._calls.get(key) is future:
                del self._calls[key]

    @property
    def hits(self) -> int:
        """How many calls joined an in-flight call instead of making their own."""
        with self._lock:
            return self._hits

    def __len__(self) -> int:
        """Calls in flight now."""
        with self._lock:
            return len(self._calls)
