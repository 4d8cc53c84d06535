"""Every HTTP exchange ends by itself: a total deadline per attempt, and abort-all on stop.

Why (issue 11, class 2): requests' timeouts are per socket operation. A server that
trickles its body (or its headers) one byte per second, each within the read timeout,
kept a worker in ``recv`` forever, and a worker stuck in ``recv`` cannot see a stop signal,
so SIGTERM did not end the run either. Python cannot interrupt a thread blocked in a system
call, but it can shut down the socket under it: ``recv`` then returns at once and urllib3
raises, which the transport maps to a timeout (deadline) or ``Cancelled`` (stop).

How: the session mounts ``AbortableAdapter``, whose connection classes register the
connection with the calling thread's current exchange when a request starts on it (a
pooled connection is re-registered on every reuse, so a connection is only ever shut down
for the exchange that owns it). ``InFlight.exchange(deadline_s)`` brackets one attempt; one
monitor thread sleeps (``Event.wait(timeout)``) until the earliest deadline or a stop, and
shuts down the sockets of expired or (on stop) all exchanges. Nothing here polls.

Hand-written because neither requests nor urllib3 offers a total deadline or an abort
(urllib3's ``Timeout(total=)`` still bounds each read separately; measured in
docs/decisions.md). ~10 µs per attempt of bookkeeping; one thread per client.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection

from pipeline.stop import aborts

_current = threading.local()  # the calling thread's Exchange while it sends a request


class Exchange:
    """One attempt in flight: its deadline, its connection once it has one, and why it ended."""

    __slots__ = ("aborted", "conn", "deadline", "expired")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.conn: HTTPConnection | None = None
        self.expired = False  # the total deadline passed: shut down by the monitor
        self.aborted = False  # the run was stopped: shut down by the monitor


def _attach(conn: HTTPConnection) -> None:
    exchange = getattr(_current, "exchange", None)
    registry = getattr(_current, "registry", None)
    if exchange is not None and registry is not None:
        registry.attach(exchange, conn)


class _AbortableHTTPConnection(HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self)
        super().request(*args, **kwargs)


class _AbortableHTTPSConnection(HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self)
        super().request(*args, **kwargs)


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _AbortableHTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _AbortableHTTPSConnection


class AbortableAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections ``InFlight`` can shut down (TLS unchanged)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def _shutdown(conn: HTTPConnection | None) -> bool:
    sock = getattr(conn, "sock", None)
    if sock is None:
        return False  # not connected yet: the connect timeout bounds it; retried next wake
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the fd, not SSLSocket's override
    return True


class InFlight:
    """The client's exchanges in flight, their deadlines and the stop that aborts them."""

    #: How often the monitor re-checks an aborted exchange still connecting (no socket yet).
    RECHECK_S = 0.05

    def __init__(
        self,
        stop: threading.Event,
        deadline_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stop = stop
        self.deadline_s = deadline_s
        self._clock = clock
        self._lock = threading.Lock()
        self._live: set[Exchange] = set()
        self._owner: dict[int, Exchange] = {}  # id(conn) -> the exchange using it now
        self._wake = threading.Event()
        self._closed = False
        self._monitor: threading.Thread | None = None
        on_set = getattr(stop, "on_set", None)
        if callable(on_set):
            on_set(self._wake.set)  # quick and lock-free: safe inside a signal handler

    @contextlib.contextmanager
    def exchange(self) -> Iterator[Exchange]:
        """Bracket one attempt on this thread; the attempt is shut down at its deadline."""
        ex = Exchange(self._clock() + self.deadline_s)
        with self._lock:
            self._live.add(ex)
            if self._monitor is None and not self._closed:
                self._monitor = threading.Thread(
                    target=self._run, name="http-deadlines", daemon=True
                )
                self._monitor.start()
        _current.exchange, _current.registry = ex, self
        try:
            yield ex
        finally:
            _current.exchange = _current.registry = None
            with self._lock:
                self._live.discard(ex)
                if ex.conn is not None and self._owner.get(id(ex.conn)) is ex:
                    del self._owner[id(ex.conn)]

    def attach(self, ex: Exchange, conn: HTTPConnection) -> None:
        with self._lock:
            if ex.conn is not None and self._owner.get(id(ex.conn)) is ex:
                del self._owner[id(ex.conn)]
            ex.conn = conn
            self._owner[id(conn)] = ex

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            timeout = self._sweep()
            self._wake.wait(timeout)
            self._wake.clear()

    def _sweep(self) -> float:
        """Shut down what is expired (or everything, once stopped); the next wait."""
        now = self._clock()
        stopping = aborts(self.stop)  # a drain (time budget) lets them finish
        wait = self.deadline_s
        with self._lock:
            for ex in self._live:
                if stopping:
                    ex.aborted = True
                elif ex.deadline <= now:
                    ex.expired = True
                if ex.aborted or ex.expired:
                    owned = ex.conn is not None and self._owner.get(id(ex.conn)) is ex
                    if not (owned and _shutdown(ex.conn)):
                        wait = min(wait, self.RECHECK_S)  # still connecting: look again soon
                else:
                    wait = min(wait, ex.deadline - now)
        return max(wait, 0.001)
