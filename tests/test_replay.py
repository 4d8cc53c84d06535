"""``tests/benchmarks/replay.py``: a run report's answers, fed again to a fresh in-flight
controller, must give the run's limit changes; else it cannot tell why a run moved."""

from __future__ import annotations

import pytest

from pipeline.api.limiter import RateLimiter
from pipeline.config import limiter_config
from pipeline.settings import Settings
from tests.benchmarks import controller_model, replay
from tests.fakes import FakeClock


def test_in_flight_at_send_is_rebuilt_from_starts_and_latencies() -> None:
    """Each answer's count: attempts started at or before it and not yet ended, itself
    included. An answer ending at the instant of a start is not counted by it (the start it
    let go); an attempt without a status (a transport error) is in flight but no answer."""
    timeline = [
        [0.0, "tracks", 200, 2.0],  # 1 in flight
        [0.5, "tracks", None, 1.0],  # a timeout: 2 in flight, then gone
        [1.0, "tracks", 429, 0.01],  # 3: the first two are under way
        [2.0, "tracks", 200, 1.0],  # starts as the first ends (not counted) ...
        [2.0, "audio_features", 200, 0.5],  # ... with another: a tie counts both, 2 each
    ]
    found = replay.answers(timeline)
    assert [(a.end_s, a.in_flight, a.status) for a in found] == [
        (1.01, 3, 429),
        (2.0, 1, 200),
        (2.5, 2, 200),
        (3.0, 2, 200),
    ]


def test_a_run_is_replayed_from_its_report_timeline_alone() -> None:
    """The replay feeds the answers in the order they came back: on the controller model's
    runs (which record a report-shaped timeline) it goes through their limits, cuts and 429s
    included. Counting an answer that ended at a start's instant as still under way (the
    start it let go) parts from them."""
    cuts = blamed = 0
    for latency, k, reject in ((2.0, 4, None), (0.5, 2, None), (1.0, 64, 4), (5.0, 16, None)):
        for seed in range(5):
            run = controller_model.run(latency, k, seed=seed, reject_above=reject)
            steps = replay.replay(
                replay.answers([list(e) for e in run.timeline]), rate_per_s=5.0, cap=16
            )
            assert [s.after for s in steps] == [n for _, n in run.limits[1:]], (latency, k, seed)
            cuts += sum(s.after < s.before for s in steps)
            blamed += sum(s.verdict.startswith("429") for s in steps)
    assert cuts >= 10 and blamed >= 5  # the runs exercise both


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
    for _ in range(8):  # slow answers: the in-flight bound is now the tightest in the report
        with limiter.acquire("tracks") as permit:
            clock.advance(30.0)
            limiter.on_response("tracks", 200, latency_s=30.0, in_flight=permit.in_flight)
    report = limiter.stats()
    assert report["binding_limit"].endswith("in flight x 30 s latency")
    assert replay.fed_rate_per_s(report) == pytest.approx(limiter._rate_per_s(), rel=1e-3)
