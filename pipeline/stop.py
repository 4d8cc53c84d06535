"""The run's one stop signal, and the one helper that turns SIGTERM/SIGINT into it.

Why a subclass of ``threading.Event``: every wait in the pipeline is ``stop.wait(timeout)``,
so a set event ends it at once. The limiter also has threads parked on its condition
variable (waiting for a free slot or for their turn in the FIFO); an ``Event`` cannot wake
those, and polling it is what we removed. ``StopSignal.set()`` therefore also calls the
wakers registered with ``on_set`` (the limiter's ``notify_all``). A plain ``threading.Event``
still works wherever a stop is accepted: timed waits end at once, and threads parked on the
limiter notice it at the next release (at most one request latency later).

Two ways to set it. ``set()`` is a stop (SIGINT/SIGTERM, a lost shared budget): every wait
ends and the requests on the wire are abandoned (``api/inflight.py`` shuts their sockets).
``drain()`` is a time budget's end: every wait ends, nothing new starts, but the requests on
the wire finish and their answers are kept, since each was already charged to the API's
limit (measured: at a 0.3 s budget against 1 s answers, 4 answered requests were thrown away
and their IDs left pending). A ``set()`` after a ``drain()`` turns it into a stop.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)


class StopSignal(threading.Event):
    """A ``threading.Event`` whose ``set()`` also runs the registered wakers (once each)."""

    def __init__(self) -> None:
        super().__init__()
        self._wakers: list[Callable[[], None]] = []
        # Re-entrant: ``set()`` runs in a signal handler on the main thread, which may be
        # inside ``on_set`` or ``set()`` itself when the signal lands (a plain Lock deadlocked).
        self._wakers_lock = threading.RLock()
        self.draining = False  # set by ``drain``: waits end, requests on the wire finish

    def on_set(self, waker: Callable[[], None]) -> None:
        """Run ``waker`` when the signal is set (at once if it already is).

        Wakers must be quick and must not block on a lock the setter may hold: ``set()`` can
        run inside a signal handler on the main thread.
        """
        with self._wakers_lock:
            self._wakers.append(waker)
        if self.is_set():
            waker()

    def set(self) -> None:
        self.draining = False
        self._set_and_wake()

    def drain(self) -> None:
        """End every wait and start nothing new, but let the requests on the wire finish."""
        if not self.is_set():
            self.draining = True
        self._set_and_wake()

    def _set_and_wake(self) -> None:
        super().set()
        with self._wakers_lock:
            wakers = list(self._wakers)
        for waker in wakers:
            waker()


def drain(stop: threading.Event) -> None:
    """``StopSignal.drain``; a plain ``threading.Event`` can only be set."""
    if isinstance(stop, StopSignal):
        stop.drain()
    else:
        stop.set()


def aborts(stop: threading.Event) -> bool:
    """Is the run stopped (requests on the wire abandoned), not only draining?"""
    return stop.is_set() and not (isinstance(stop, StopSignal) and stop.draining)


@contextmanager
def stop_on_signals(
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
) -> Iterator[StopSignal]:
    """SIGTERM/SIGINT set the yielded ``StopSignal`` instead of killing the process mid-write.

    The job then checkpoints its caches and exits 130, so the next run resumes from there.
    Off the main thread (where Python cannot install handlers) the signal is only settable
    by the caller. The previous handlers are restored on exit.
    """
    stop = StopSignal()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signum: int, _frame: FrameType | None) -> None:
        log.warning("received %s: stopping after a checkpoint", signal.Signals(signum).name)
        stop.set()

    old = {sig: signal.signal(sig, handle) for sig in signals}
    try:
        yield stop
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
