"""Test doubles shared by the test suite (owner: limiter tests; reuse freely)."""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.api.limiter import RateLimiter
from pipeline.config import LimiterConfig

#: A plain limiter for unit tests: one global sliding window and a concurrency cap, nothing
#: else (no gaps, no per-endpoint limits, not adaptive), so each test turns on what it checks.
#: Deliberately not the product defaults (those live in Settings): tests name their values.
PLAIN_LIMITER = LimiterConfig(
    rate_per_window=60.0,
    window_s=60.0,
    min_interval_s=0.0,
    max_concurrency=6,
    endpoint_limits={},
    adaptive=False,
    decrease=0.5,
    increase_per_window=6.0,
    quiet_s=30.0,
    min_rate_per_window=1.0,
    max_retry_after_s=300.0,
    backoff_base_s=1.0,
    backoff_max_s=60.0,
    margin_s=0.0,
    probe_429_budget=0.01,
    adaptive_concurrency=False,
    told_rate=False,
    gap_from_told_rate=False,
)


def plain_limiter(**overrides: Any) -> LimiterConfig:
    """``PLAIN_LIMITER`` with ``overrides`` (the old ``RateLimiter(**kwargs)`` names)."""
    return dataclasses.replace(PLAIN_LIMITER, **overrides)


_RUNTIME = ("initial_rate", "rng", "stop", "backend")


def make_limiter(clock: FakeClock, **kw: Any) -> RateLimiter:
    """A limiter on the fake clock: config fields and runtime arguments in one call."""
    kw.setdefault("max_concurrency", 8)
    runtime = {k: kw.pop(k) for k in _RUNTIME if k in kw}
    return RateLimiter(plain_limiter(**kw), clock=clock, sleep=clock.sleep, **runtime)


class FakeClock:
    """A thread-safe fake monotonic clock; ``sleep(dt)`` advances it and returns at once.

    Pass ``clock=fake`` (it is callable) and ``sleep=fake.sleep``. With several threads,
    each ``sleep(dt)`` lasts until the calling thread's last reading of the clock plus
    ``dt``, and the clock moves to the latest such deadline: concurrent sleepers overlap as
    they would in real time instead of adding up, and a thread that computed "wait dt from
    now" is not penalised because another thread moved the clock in between. A thread that
    never read the clock sleeps from the current time.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self._seen = threading.local()
        self.sleep_calls = 0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now()

    def now(self) -> float:
        with self._lock:
            self._seen.t = self._now
            return self._now

    def sleep(self, dt: float) -> None:
        if dt < 0:
            raise ValueError(f"negative sleep {dt}")
        with self._lock:
            base = getattr(self._seen, "t", self._now)
            self._now = max(self._now, base + dt)
            self._seen.t = self._now
            self.sleep_calls += 1
            self.slept += dt

    def advance(self, dt: float) -> None:
        """Move time forward by ``dt`` (a test's main thread 'doing nothing' for dt)."""
        with self._lock:
            self._now += dt
            self._seen.t = self._now


class FixedRandom(random.Random):
    """A ``random.Random`` whose ``uniform(a, b)`` returns a fixed point of the interval."""

    def __init__(self, fraction: float = 1.0) -> None:
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction

    def random(self) -> float:
        return min(self.fraction, 0.999999)


def run_threads(
    n_threads: int, total: int, body: Callable[[int], Any], *, join_timeout: float = 20.0
) -> list[Any]:
    """Run ``body(i)`` for i in 0..total-1 spread over ``n_threads`` threads; results by i.

    Re-raises the first exception a worker hit, and fails (instead of hanging) if a worker
    is still alive after ``join_timeout`` seconds.
    """
    results: list[Any] = [None] * total
    errors: list[BaseException] = []
    counter = iter(range(total))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                results[i] = body(i)
            except BaseException as exc:  # reported to the test thread
                errors.append(exc)
                return

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(join_timeout)
    alive = [t.name for t in threads if t.is_alive()]
    if errors:
        raise errors[0]
    assert not alive, f"workers still running (deadlock?): {alive}"
    return results


def max_in_any_window(starts: Sequence[float], window: float) -> int:
    """Most starts in any half-open window [t, t + window): the sliding-window measure."""
    times = sorted(starts)
    best = 0
    j = 0
    for i, t in enumerate(times):
        j = max(j, i)
        while j < len(times) and times[j] < t + window:
            j += 1
        best = max(best, j - i)
    return best


def strict_server_rejections(starts: Sequence[float], limit: int, window: float) -> int:
    """429s a strict sliding-window server (``limit`` accepted per ``window``) would send.

    A request is accepted if fewer than ``limit`` accepted requests started in
    (t - window, t]; rejected requests do not count against the budget.
    """
    accepted: list[float] = []
    rejected = 0
    lo = 0
    for t in sorted(starts):
        while lo < len(accepted) and accepted[lo] + window <= t:
            lo += 1
        if len(accepted) - lo < limit:
            accepted.append(t)
        else:
            rejected += 1
    return rejected
