"""The adaptive rate controller: pure steps on plain numbers (``RateController``), then the
same rules through the limiter on a fake clock."""

from __future__ import annotations

import itertools
import math

import pytest

from pipeline.api.adaptive import RateController, RateRules, whole_starts
from tests.fakes import FakeClock, max_in_any_window
from tests.fakes import make_limiter as make


def test_adaptive_decrease_then_additive_increase_up_to_ceiling() -> None:
    clock = FakeClock()
    limiter = make(
        clock,
        rate_per_window=63,
        adaptive=True,
        decrease=0.5,
        increase_per_window=6,
        quiet_s=30,
        min_rate_per_window=10,
        initial_rate=30,
    )
    assert limiter.effective_rate == 30  # yesterday's learned rate, below the ceiling

    rates = []
    for _ in range(400):  # one success per second for 400 s
        with limiter.acquire("tracks"):
            limiter.on_response("tracks", 200, None)
        rates.append(limiter.effective_rate)
        clock.advance(1.0)
    steps = [b - a for a, b in itertools.pairwise(rates) if b != a]
    # A learned start climbs at once (warm start, issue 11): x4 per answer, capped at 63.
    assert rates[0] == 63 and steps == []
    assert max(rates) == 63  # never above the ceiling

    with limiter.acquire("tracks") as permit:
        limiter.on_response("tracks", 429, 1.0, started_at=permit.started_at)
    assert limiter.effective_rate == 31.5
    limiter.on_response("tracks", 429, 1.0, started_at=permit.started_at)  # same burst
    assert limiter.effective_rate == 31.5  # a request sent before the decrease: no 2nd cut
    for _ in range(5):
        with limiter.acquire("tracks") as permit:
            limiter.on_response("tracks", 429, 1.0, started_at=permit.started_at)
    assert limiter.effective_rate == 10  # 15.75, then the floor
    stats = limiter.stats()
    assert stats["count_429"] == 7
    assert stats["configured_rate"] == 63


def test_adaptive_no_started_at_debounces_during_cooldown() -> None:
    clock = FakeClock()
    limiter = make(clock, rate_per_window=64, adaptive=True, decrease=0.5, min_rate_per_window=1)
    for _ in range(6):  # six in-flight requests answered 429 in the same burst
        limiter.on_response("tracks", 429, 5.0)
    assert limiter.effective_rate == 32


def test_no_increase_without_quiet_stretch_and_non_adaptive_is_fixed() -> None:
    clock = FakeClock()
    adaptive = make(clock, rate_per_window=60, adaptive=True, quiet_s=30, initial_rate=30)
    fixed = make(clock, rate_per_window=60, adaptive=False, initial_rate=30)
    assert fixed.effective_rate == 60
    for _ in range(10):
        clock.advance(20)
        adaptive.on_response("tracks", 429 if _ % 2 else 200, 0.0)
        fixed.on_response("tracks", 429, 0.0)
    assert adaptive.effective_rate < 30
    assert fixed.effective_rate == 60


def test_after_429_the_window_budget_is_not_spent_as_a_burst() -> None:
    clock = FakeClock()
    limiter = make(clock, rate_per_window=60, adaptive=True, decrease=0.5, quiet_s=1e9)
    with limiter.acquire("tracks") as permit:
        limiter.on_response("tracks", 429, 1.0, started_at=permit.started_at)
    assert limiter.effective_rate == 30
    starts = []
    for _ in range(100):
        with limiter.acquire("tracks") as p:
            starts.append(p.started_at)
            limiter.on_response("tracks", 200, None)
    assert starts[0] == pytest.approx(1.0)  # right after the cool-down
    assert max_in_any_window(starts, 60.0) <= 30  # the decreased rate, not 60
    assert len([t for t in starts if t < 1.0 + 10]) <= math.ceil(30 * 10 / 60)  # paced


def test_failed_probe_goes_back_to_the_good_rate_and_probes_less_often() -> None:
    """2x too high on a strict-spacing server: learn the rate once, then probe rarely."""
    clock = FakeClock()
    limiter = make(
        clock,
        rate_per_window=20,
        window_s=10.0,
        adaptive=True,
        decrease=0.5,
        increase_per_window=2,
        quiet_s=5,
        min_rate_per_window=1,
        probe_429_budget=None,  # probe mechanics only (the 429 budget has its own test)
    )
    with limiter.acquire("tracks") as permit:
        limiter.on_response("tracks", 429, 1.0, started_at=permit.started_at)
    assert limiter.effective_rate == 10  # the first 429: multiplicative decrease
    clock.advance(5.0)
    limiter.on_response("tracks", 200)
    assert limiter.effective_rate == 12  # quiet stretch: probe upwards
    with limiter.acquire("tracks") as permit:  # the probe fails within a window
        limiter.on_response("tracks", 429, 1.0, started_at=permit.started_at)
    assert limiter.effective_rate == 10  # back to the good rate, not 6
    clock.advance(5.0)
    limiter.on_response("tracks", 200)
    assert limiter.effective_rate == 10  # the next probe waits twice as long
    clock.advance(5.0)
    limiter.on_response("tracks", 200)
    assert limiter.effective_rate == 12
    starts = []
    for _ in range(12):  # paced at the learned rate for good, not only one window
        with limiter.acquire("tracks") as p:
            starts.append(p.started_at)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) == pytest.approx(10.0 / 12)


def test_probes_spend_at_most_the_429_budget() -> None:
    """After a 429, a probe (which may cost another) waits until 429s fit in 1 % of calls."""
    clock = FakeClock()
    limiter = make(
        clock,
        rate_per_window=1000,
        window_s=10.0,
        adaptive=True,
        decrease=0.5,
        increase_per_window=10,
        quiet_s=1,
        probe_429_budget=0.01,
    )
    with limiter.acquire("tracks") as permit:
        limiter.on_response("tracks", 429, 0.0, started_at=permit.started_at)
    assert limiter.effective_rate == 500
    for _ in range(198):  # 199 requests so far: a second 429 would be > 1 %
        with limiter.acquire("tracks"):
            pass
    clock.advance(5.0)
    limiter.on_response("tracks", 200)
    assert limiter.effective_rate == 500  # quiet long enough, but no budget for a probe yet
    with limiter.acquire("tracks"):  # the 200th request: 2 x 429 in 200 fits 1 %
        pass
    clock.advance(5.0)
    limiter.on_response("tracks", 200)
    assert limiter.effective_rate == 510


# -- the controller alone: no clock, no threads ------------------------------------------------


def rules(**kw: object) -> RateRules:
    base: dict[str, object] = {
        "ceiling": 60.0,
        "floor": 6.0,
        "window_s": 60.0,
        "decrease": 0.5,
        "increase": 6.0,
        "quiet_s": 30.0,
        "probe_429_budget": None,
    }
    base.update(kw)
    return RateRules(**base)  # type: ignore[arg-type]


def test_controller_cuts_on_429_and_ignores_stale_ones() -> None:
    rc = RateController(rules(), now=0.0)
    assert rc.rate == 60
    assert rc.on_429(now=10.0, started_at=9.0, in_cooldown=False)
    assert rc.rate == 30
    assert not rc.on_429(now=11.0, started_at=9.5, in_cooldown=True)  # sent before the cut
    assert rc.rate == 30
    assert rc.on_429(now=12.0, started_at=11.5, in_cooldown=True)  # sent after: counts
    assert rc.rate == 15
    assert (rc.count_429, rc.decreases) == (3, 2)


def test_controller_climbs_after_quiet_and_a_failed_probe_restores() -> None:
    rc = RateController(rules(), now=0.0, initial_rate=30)
    assert not rc.on_success(now=29.0, requests_made=10)  # not quiet long enough
    assert rc.on_success(now=30.0, requests_made=11)
    assert rc.rate == 36  # additive probe
    assert rc.on_429(now=40.0, started_at=39.0, in_cooldown=False)  # within a window of it
    assert rc.rate == 30  # back to what worked, not 18
    assert not rc.on_success(now=40.0 + 59.0, requests_made=50)  # quiet stretch doubled
    assert rc.on_success(now=40.0 + 60.0, requests_made=51)
    assert rc.rate == 36


def test_controller_stays_within_floor_and_ceiling() -> None:
    rc = RateController(rules(), now=0.0, initial_rate=1e6)
    assert rc.rate == 60  # a learned rate never exceeds today's ceiling
    for k in range(10):
        rc.on_429(now=float(k), started_at=None, in_cooldown=False)
    assert rc.rate == 6
    assert not RateController(rules(), now=0.0).on_success(now=100.0, requests_made=1)  # ceiling


def test_controller_probe_budget_after_first_429() -> None:
    rc = RateController(rules(probe_429_budget=0.01), now=0.0, initial_rate=30)
    rc.on_429(now=1.0, started_at=None, in_cooldown=False)
    assert not rc.on_success(now=100.0, requests_made=150)  # 2 429s would be > 1 % of 150
    assert rc.on_success(now=100.0, requests_made=200)


def test_disabled_controller_counts_429s_but_keeps_the_ceiling() -> None:
    rc = RateController(rules(enabled=False), now=0.0, initial_rate=30)
    assert rc.rate == 60
    assert not rc.on_429(now=1.0, started_at=None, in_cooldown=False)
    assert (rc.rate, rc.count_429) == (60, 1)


def test_controller_rejects_a_decrease_outside_0_1() -> None:
    with pytest.raises(ValueError):
        RateController(rules(decrease=1.0), now=0.0)


def test_a_reclaimed_429_is_decided_as_it_would_have_been_when_it_came() -> None:
    """A 429 noted as another cause's (too many in flight), then taken back: halved once and
    not counted again; forgiven if it was forgivable when it came; nothing after a newer 429."""
    told = RateRules(ceiling=600.0, floor=1.0, window_s=60.0, forgive_after=20)
    early = RateController(told, now=0.0)
    for i in range(10):
        early.on_success(float(i), i)
    early.note_429(10.0)  # after 10 clean answers: not jitter
    for i in range(11, 30):
        early.on_success(float(i), i)  # 29 clean answers by the time it is taken back
    assert early.reclaim_429(30.0) == "cut"
    assert (early.rate, early.count_429, early.decreases, early.last_decrease_at) == (
        300.0,
        1,
        1,
        30.0,
    )
    assert early.reclaim_429(31.0) == "kept"  # taken back once
    late = RateController(told, now=0.0)
    for i in range(25):
        late.on_success(float(i), i)
    late.note_429(25.0)
    assert late.reclaim_429(27.0) == "forgiven"
    assert (late.rate, late.count_429, late.forgiven) == (600.0, 1, 1)
    newer = RateController(told, now=0.0)
    newer.note_429(1.0)
    assert newer.on_429(2.0, 2.0, False)
    assert newer.reclaim_429(3.0) == "kept"  # the newer 429 was decided on its own
    assert newer.rate == 300.0


@pytest.mark.parametrize(("rate", "starts"), [(0.2, 1), (1.0, 1), (5.999999999999, 6), (6.5, 6)])
def test_whole_starts(rate: float, starts: int) -> None:
    assert whole_starts(rate) == starts


def test_only_a_told_rates_first_429_after_clean_answers_is_forgiven() -> None:
    told = RateRules(ceiling=300.0, floor=1.0, window_s=60.0, forgive_after=20)
    c = RateController(told, now=0.0)
    for i in range(19):
        c.on_success(float(i), i)
    assert not c.forgive_429(19.0)  # 19 clean answers: too early to call it jitter
    assert c.on_429(19.0, 19.0, False) and c.rate == 150.0
    c2 = RateController(told, now=0.0)
    for i in range(20):
        c2.on_success(float(i), i)
    assert c2.forgive_429(20.0)
    assert (c2.rate, c2.count_429, c2.forgiven, c2.decreases) == (300.0, 1, 1, 0)
    assert not c2.forgive_429(21.0)  # the next one is the rate's
    untold = RateController(RateRules(ceiling=300.0, floor=1.0, window_s=60.0), now=0.0)
    for i in range(40):
        untold.on_success(float(i), i)
    assert not untold.forgive_429(40.0)


def test_a_learned_rate_below_the_told_one_is_paced_from_the_first_request() -> None:
    """Told 600/min (a 0.1 s gap), learned 300/min last night: the first requests, before any
    answer, go out 0.2 s apart, not 0.1 s (a server allowing 300/min + 6/s answered the 7th
    of a 0.1 s burst 429, and the learned 300 was halved to 150 for the night). Once an answer
    lifts the rate (warm start), the spacing follows it; with nothing learned it is the told
    gap from the start."""
    for learned, first_gap, later_gap in ((300.0, 0.2, 0.1), (None, 0.1, 0.1)):
        clock = FakeClock()
        limiter = make(
            clock,
            rate_per_window=600,
            min_interval_s=0.1,
            told_rate=True,
            adaptive=True,
            max_concurrency=16,
            initial_rate=learned,
        )
        starts = []
        for _ in range(6):
            permit = limiter.acquire("tracks")
            starts.append(permit.started_at)
            permit.release()
        limiter.on_response("tracks", 200, latency_s=1.0, started_at=starts[0])
        for _ in range(3):
            permit = limiter.acquire("tracks")
            starts.append(permit.started_at)
            permit.release()
        gaps = [round(b - a, 6) for a, b in itertools.pairwise(starts)]
        assert gaps[:5] == [first_gap] * 5, (learned, gaps)
        assert gaps[-2:] == [later_gap] * 2, (learned, gaps)
        assert limiter.effective_rate == 600


def test_a_learned_rate_from_a_live_budget_does_not_warm_start() -> None:
    """Joining a budget other holders are using (requests in flight, or a 429 not a quiet
    stretch ago), the learned rate is tonight's: the newcomer keeps it instead of climbing x4
    and publishing the ceiling to everyone. An idle budget's learned rate is last night's."""
    from pipeline.api.limiter_backend import AdmitRule, InMemoryBackend

    def first_answer_rate(backend: InMemoryBackend, clock: FakeClock) -> float:
        limiter = make(
            clock, rate_per_window=63, adaptive=True, quiet_s=30, initial_rate=15, backend=backend
        )
        with limiter.acquire("tracks"):
            limiter.on_response("tracks", 200, None)
        return limiter.effective_rate

    clock = FakeClock(1000.0)
    assert first_answer_rate(InMemoryBackend(), clock) == 60  # idle: warm start, x4
    busy = InMemoryBackend()
    rule = AdmitRule(window_s=60.0, budget=63, interval_s=0.0, max_in_flight=8)
    assert busy.admit("tracks", clock(), rule).lease is not None  # another holder's request
    assert first_answer_rate(busy, clock) == 15
    recent = InMemoryBackend()
    recent.extend_cooldown(clock() - 10.0, "tracks", clock() - 20.0)  # ended 10 s ago
    assert first_answer_rate(recent, clock) == 15
    clock.advance(30.0)  # a quiet stretch later the budget is idle again
    assert first_answer_rate(recent, clock) == 60
