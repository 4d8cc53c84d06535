"""The simulated server's capacity: how many requests it works on at once, and how many it holds.

A rate limit is not the only way a real API pushes back. Production calls that take 20-140 s
(design notes) mean the server, not the limiter, is what saturates, and a client that floods it
only makes every answer slower. Two knobs model that, both on the requests the rate limiter
admitted:

* ``parallelism`` K -- at most K requests are worked on at once; the others wait in arrival
  order (FIFO) for a free worker. Their time in the queue is the *queue wait*; their time with a
  worker is the *service time* (the injected latency). Loaded latency = wait + service.
* ``max_concurrent`` M -- a request that arrives while M admitted requests are already in the
  server (queued or worked on) is answered 429 at once: the concurrency-based limit some APIs
  use instead of, or on top of, a rate.

0 disables either. Waiting never polls: a queued request blocks on its own ``Event``, set when
a worker is handed to it or when the server closes (``close``), so stopping is immediate.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


class _Turn:
    """A queued request's place in line; ``handed`` tells a worker from a wake-up by close()."""

    __slots__ = ("event", "handed")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.handed = False


@dataclass(frozen=True, slots=True)
class Service:
    """How one admitted request was served: seconds queued, seconds worked on."""

    queue_wait_s: float
    service_s: float

    @property
    def latency_s(self) -> float:
        return self.queue_wait_s + self.service_s


class ServerCapacity:
    """Thread-safe worker slots (FIFO queue) and the concurrency cap; see the module docstring."""

    def __init__(
        self,
        parallelism: int = 0,
        max_concurrent: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if parallelism < 0 or max_concurrent < 0:
            raise ValueError("parallelism and max_concurrent must be >= 0 (0 = unlimited)")
        self.parallelism = parallelism
        self.max_concurrent = max_concurrent
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting: deque[_Turn] = deque()
        self._closed = False
        self._present = 0  # admitted and not yet answered (queued + worked on)
        self._working = 0
        self.reset()

    def reset(self) -> None:
        """Forget the peaks (requests still in the server keep their slots)."""
        with self._lock:
            self._peak_present = self._present
            self._peak_working = self._working
            self._peak_queued = len(self._waiting)

    # ------------------------------------------------------------------ admission
    def try_enter(self) -> bool:
        """Admit one request into the server, or False: ``max_concurrent`` are already in."""
        with self._lock:
            if self.max_concurrent and self._present >= self.max_concurrent:
                return False
            self._present += 1
            self._peak_present = max(self._peak_present, self._present)
            return True

    def leave(self) -> None:
        """The request admitted by ``try_enter`` has been answered."""
        with self._lock:
            self._present -= 1

    # ------------------------------------------------------------------ service
    def serve(self, service_s: float, stop: threading.Event) -> Service:
        """Queue for a worker, hold it for ``service_s`` (interrupted by ``stop``), release it."""
        t0 = self._clock()
        if not self._acquire():
            return Service(self._clock() - t0, 0.0)  # closed while queued
        t1 = self._clock()
        try:
            if service_s > 0:
                stop.wait(service_s)
        finally:
            self._release()
        return Service(t1 - t0, self._clock() - t1)

    def _acquire(self) -> bool:
        with self._lock:
            if self._closed:
                return False
            if not self.parallelism or (self._working < self.parallelism and not self._waiting):
                self._working += 1
                self._peak_working = max(self._peak_working, self._working)
                return True
            turn = _Turn()
            self._waiting.append(turn)
            self._peak_queued = max(self._peak_queued, len(self._waiting))
        turn.event.wait()  # set by _release (the worker is handed over) or by close()
        return turn.handed

    def _release(self) -> None:
        with self._lock:
            if self._waiting:
                turn = self._waiting.popleft()
                turn.handed = True  # the worker passes on: _working is unchanged
                turn.event.set()
            else:
                self._working -= 1

    def close(self) -> None:
        """Wake every queued request (they leave without service): the server is stopping."""
        with self._lock:
            self._closed = True
            waiting, self._waiting = list(self._waiting), deque()
        for turn in waiting:
            turn.event.set()

    def reopen(self) -> None:
        """Accept requests again after ``close`` (a stopped server started anew)."""
        with self._lock:
            self._closed = False

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {
                "parallelism": self.parallelism,
                "max_concurrent": self.max_concurrent,
                "working": self._working,
                "queued": len(self._waiting),
                "peak_working": self._peak_working,
                "peak_queued": self._peak_queued,
                "peak_present": self._peak_present,
            }
