"""SingleFlight: one call per key among overlapping callers; results and errors shared."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipeline.api.singleflight import SingleFlight

N = 10


def _run_concurrently(flight: SingleFlight, key, fn, n: int = N) -> list:
    """Start ``n`` callers; ``fn`` itself must wait until they all joined the flight."""
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(flight.do, key, fn) for _ in range(n)]
        return [f.exception(timeout=10) or f.result() for f in futures]


def _gated_flight(n: int) -> tuple[SingleFlight, threading.Event]:
    """A flight plus an event set once ``n - 1`` callers have joined the leader's call."""
    joined = threading.Event()
    seen = [0]
    lock = threading.Lock()

    def on_shared(_key: object) -> None:
        with lock:
            seen[0] += 1
            if seen[0] == n - 1:
                joined.set()

    return SingleFlight(on_shared=on_shared), joined


def test_concurrent_identical_calls_make_one_call() -> None:
    flight, joined = _gated_flight(N)
    calls = []

    def fn() -> tuple[int, ...]:
        calls.append(1)
        assert joined.wait(5), "followers never joined"
        return (1, 2, 3)

    results = _run_concurrently(flight, ("tracks", ("a", "b")), fn)
    assert len(calls) == 1
    assert results == [(1, 2, 3)] * N
    assert flight.hits == N - 1
    assert len(flight) == 0  # entry removed when done


def test_exception_is_shared() -> None:
    flight, joined = _gated_flight(N)
    calls = []

    def fn() -> int:
        calls.append(1)
        assert joined.wait(5)
        raise RuntimeError("boom")

    results = _run_concurrently(flight, "k", fn)
    assert len(calls) == 1
    assert all(isinstance(r, RuntimeError) for r in results)
    assert len(flight) == 0


def test_sequential_calls_are_not_cached() -> None:
    flight: SingleFlight[int] = SingleFlight()
    counter = iter(range(10))
    assert flight.do("k", lambda: next(counter)) == 0
    assert flight.do("k", lambda: next(counter)) == 1
    with pytest.raises(ZeroDivisionError):
        flight.do("k", lambda: 1 // 0)
    assert flight.do("k", lambda: next(counter)) == 2  # a past failure is not inherited
    assert flight.hits == 0


def test_different_keys_run_in_parallel() -> None:
    """The lock is not held during the call: a slow key never blocks another key."""
    flight: SingleFlight[str] = SingleFlight()
    slow_started = threading.Event()
    release = threading.Event()

    def slow() -> str:
        slow_started.set()
        assert release.wait(5)
        return "slow"

    with ThreadPoolExecutor(2) as pool:
        slow_future = pool.submit(flight.do, "slow", slow)
        assert slow_started.wait(5)
        assert len(flight) == 1
        # Runs to completion while "slow" is still in flight.
        assert flight.do("fast", lambda: "fast") == "fast"
        release.set()
        assert slow_future.result(5) == "slow"
