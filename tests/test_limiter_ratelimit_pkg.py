"""Why we do not use ``ratelimit`` 2.2.1 at runtime (docs/decisions.md, first section).

``@sleep_and_retry @limits(calls=N, period=P)`` is a fixed-window counter: the window opens
at the first call after the previous one expired and its counter resets wholesale. Calls
late in one window plus a full burst at the start of the next put almost 2N starts into one
sliding window of P, which a strict server answers with 429s. The same demand through our
``RateLimiter`` never has more than N starts in any window.
"""

from __future__ import annotations

import threading
import time
import types
from collections.abc import Callable

import pytest
import ratelimit.decorators
from ratelimit import limits, sleep_and_retry

from pipeline.api.limiter import RateLimiter
from tests.fakes import (
    FakeClock,
    max_in_any_window,
    plain_limiter,
    run_threads,
    strict_server_rejections,
)

N, PERIOD = 10, 1.0


def _through_ratelimit(clock: Callable[[], float]) -> Callable[[], float]:
    @sleep_and_retry
    @limits(calls=N, period=PERIOD, clock=clock)
    def start() -> float:
        return clock()  # the request starts when the decorated function runs

    return start


def _through_ours(limiter: RateLimiter) -> Callable[[], float]:
    def start() -> float:
        permit = limiter.acquire("tracks")
        permit.release()
        return permit.started_at

    return start


def _boundary_demand(start: Callable[[], float], clock: FakeClock) -> list[float]:
    """One call, a lull, then demand piling up at the end of the first window and after."""
    starts = [start()]
    clock.advance(0.9 * PERIOD)
    starts += [start() for _ in range(N - 1)]
    clock.advance(0.1 * PERIOD)
    starts += [start() for _ in range(N)]
    return starts


def test_fixed_window_lets_2n_minus_1_through_on_a_fake_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    # sleep_and_retry calls time.sleep directly; give it the fake one (its clock is a param).
    monkeypatch.setattr(ratelimit.decorators, "time", types.SimpleNamespace(sleep=clock.sleep))
    theirs = _boundary_demand(_through_ratelimit(clock), clock)
    assert max_in_any_window(theirs, PERIOD) == 2 * N - 1  # the defect: 19 in one second
    assert strict_server_rejections(theirs, N, PERIOD) == N - 1

    clock = FakeClock()
    limiter = RateLimiter(
        plain_limiter(rate_per_window=N, window_s=PERIOD, max_concurrency=8),
        clock=clock,
        sleep=clock.sleep,
    )
    ours = _boundary_demand(_through_ours(limiter), clock)
    assert max_in_any_window(ours, PERIOD) == N
    assert strict_server_rejections(ours, N, PERIOD) == 0


def _latency(i: int) -> float:
    return 0.05 + (i * 37 % 100) / 100 * 0.45  # 0.05..0.5 s, deterministic per request


@pytest.mark.timeout(60)
def test_fixed_window_exceeds_n_with_8_real_threads() -> None:
    """Real time (about 3.5 s): a fake clock cannot make fake sleeps overlap across threads,
    and overlapping requests are what spread a window's starts towards its end."""
    theirs_start = _through_ratelimit(time.monotonic)
    ours_start = _through_ours(
        RateLimiter(plain_limiter(rate_per_window=N, window_s=PERIOD, max_concurrency=8))
    )
    results: dict[str, list[float]] = {}

    def measure(name: str, start: Callable[[], float]) -> None:
        def request(i: int) -> float:
            t = start()
            time.sleep(_latency(i))  # the HTTP call
            return t

        results[name] = run_threads(8, 35, request, join_timeout=30)

    both = [
        threading.Thread(target=measure, args=("ratelimit", theirs_start)),
        threading.Thread(target=measure, args=("ours", ours_start)),
    ]
    for t in both:
        t.start()
    for t in both:
        t.join(45)
    assert set(results) == {"ratelimit", "ours"}

    theirs, ours = results["ratelimit"], results["ours"]
    print(
        f"ratelimit: max {max_in_any_window(theirs, PERIOD)} per {PERIOD}s window, "
        f"{strict_server_rejections(theirs, N, PERIOD)} strict-server 429s; "
        f"ours: max {max_in_any_window(ours, PERIOD)}, "
        f"{strict_server_rejections(ours, N, PERIOD)} 429s"
    )
    assert max_in_any_window(theirs, PERIOD) > N
    assert strict_server_rejections(theirs, N, PERIOD) > 0
    assert max_in_any_window(ours, PERIOD) <= N
    assert strict_server_rejections(ours, N, PERIOD) == 0
    # Same demand, same budget: ours is not slower (starts end within one period of theirs).
    assert max(ours) - min(ours) <= max(theirs) - min(theirs) + PERIOD
