"""Issue 11 ("also seen"): after a 429 storm the next clean run must not crawl at the learned
(lowered) rate. The real limiter on a fake clock: a run that starts from last night's low
rate climbs to the configured rate within its first answers (warm start), and a 429 during
the climb restores the rate that worked, without a cut below it.
"""

from __future__ import annotations

from pipeline.api.limiter import RateLimiter
from pipeline.config import limiter_config
from pipeline.settings import Settings
from tests.fakes import FakeClock


def _limiter(clock: FakeClock, learned: float) -> RateLimiter:
    settings = Settings(rate_limit=75, window_s=60, adaptive=True, adaptive_min_rate=6,
                        min_interval_s=0.0, jitter_margin_s=0.0)  # fmt: skip
    return RateLimiter(limiter_config(settings), clock=clock, sleep=clock.sleep,
                       initial_rate=learned)  # fmt: skip


def test_ten_requests_after_a_storm_take_about_a_clean_runs_time() -> None:
    clock = FakeClock()
    limiter = _limiter(clock, learned=6.0)  # the storm left the floor: 6/min
    start = clock()
    for _ in range(10):
        with limiter.acquire("tracks"):
            clock.advance(0.05)  # the answer's latency
            limiter.on_response("tracks", 200, None)
    took = clock() - start
    print(f"10 requests after a storm: {took:.1f}s (a start held at 6/min: ~60 s)")
    assert limiter.effective_rate == 75
    assert took < 15.0, took


def test_a_429_during_the_climb_restores_the_rate_that_worked() -> None:
    clock = FakeClock()
    limiter = _limiter(clock, learned=6.0)
    with limiter.acquire("tracks"):
        limiter.on_response("tracks", 200, None)
    assert limiter.effective_rate == 24  # x4 after the first answer
    with limiter.acquire("tracks") as permit:
        limiter.on_response("tracks", 429, 1.0, started_at=permit.started_at)
    assert limiter.effective_rate == 6  # the probe failed: back to what worked, no cut
