"""The one stop signal: every wait ends when it is set, with no thread polling it."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from pipeline.api.limiter import RateLimiter
from pipeline.errors import Cancelled
from pipeline.stop import StopSignal, stop_on_signals
from tests.fakes import plain_limiter


def test_wakers_run_on_set_and_at_once_when_already_set() -> None:
    stop = StopSignal()
    calls: list[str] = []
    stop.on_set(lambda: calls.append("a"))
    assert calls == []
    stop.set()
    assert calls == ["a"] and stop.is_set()
    stop.on_set(lambda: calls.append("b"))
    assert calls == ["a", "b"]


@pytest.mark.timeout(30)
def test_a_plain_event_still_ends_a_cooldown_wait_at_once() -> None:
    """Timed waits are ``stop.wait(t)``: any Event works, not only a StopSignal."""
    stop = threading.Event()
    limiter = RateLimiter(plain_limiter(rate_per_window=100, max_retry_after_s=600), stop=stop)
    limiter.on_response("tracks", 429, 300.0)
    outcome: list[BaseException] = []

    def ask() -> None:
        try:
            limiter.acquire("tracks")
        except BaseException as exc:  # asserted below
            outcome.append(exc)

    worker = threading.Thread(target=ask, daemon=True)
    worker.start()
    time.sleep(0.1)
    stop.set()
    worker.join(2.0)
    assert not worker.is_alive()
    assert isinstance(outcome[0], Cancelled)


def test_signal_sets_the_stop_and_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as stop:
        assert not stop.is_set()
        signal.raise_signal(signal.SIGTERM)
        assert stop.is_set()
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_drain_ends_waits_without_aborting_and_a_later_stop_aborts() -> None:
    from pipeline.stop import aborts, drain

    stop = StopSignal()
    woken: list[str] = []
    stop.on_set(lambda: woken.append("w"))
    drain(stop)
    assert stop.is_set() and stop.wait(0) and not aborts(stop)  # waits end, wire finishes
    stop.set()  # a signal after the time budget's end
    assert aborts(stop) and woken == ["w", "w"]
    plain = threading.Event()
    drain(plain)
    assert aborts(plain)  # a plain Event has no drain: it can only stop
