"""``tests/benchmarks/replay.py``: a run report's answers, fed again to a fresh in-flight
controller, must give the run's limit changes; else it cannot tell why a run moved."""

from __future__ import annotations

import pytest

from pipeline.api.limiter import RateLimiter
from pipeline.config import limiter_config
from pipeline.settings import Settings
from tests.benchmarks import controller_model, replay
from tests.fakes import FakeClock


def test_a_run_is_replayed_from_its_report_timeline_alone() -> None:
    """The replay rebuilds each request's in-flight count at send from the attempts' starts
    and latencies and feeds the answers in the order they came back: on the controller
    model's runs (which record a report-shaped timeline) it gives their limit changes, 429s
    included. Counting an answer that ended at a start's instant as still under way (the
    start it let go) parts from them."""
    for latency, k, reject in ((2.0, 4, None), (0.5, 2, None), (1.0, 64, 4), (5.0, 16, None)):
        for seed in range(5):
            run = controller_model.run(latency, k, seed=seed, reject_above=reject)
            found = replay.answers([list(e) for e in run.timeline])
            assert len(found) == len(run.timeline)
            steps = replay.replay(found, rate_per_s=5.0, cap=16)
            assert len(steps) >= 1
            assert [s.after for s in steps] == [n for _, n in run.limits[1:]], (latency, k, seed)


@pytest.mark.parametrize(
    "settings",
    [Settings(rate_limit=300), Settings(rate_limit=30), Settings()],
    ids=["told 300/min: the spacing", "told 30/min: the rate", "untold: seeds and the gap"],
)
def test_the_rate_replayed_is_the_one_the_limiter_fed_the_controller(settings: Settings) -> None:
    """The controller's need is the rate x latency; the replay reads that rate off the report
    (the rate in force or the spacing, not the endpoints' own limits nor the in-flight bound)."""
    clock = FakeClock()
    limiter = RateLimiter(limiter_config(settings), clock=clock, sleep=clock.sleep)
    report = limiter.stats()
    assert replay.fed_rate_per_s(report) == pytest.approx(limiter._rate_per_s(), rel=1e-3)
