"""RateLimiter behaviour. Everything runs on a FakeClock except the cancel liveness check."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from pipeline.api.limiter import RateLimiter, parse_retry_after
from pipeline.errors import Cancelled, RateLimitedError
from pipeline.settings import EndpointLimit, Settings
from tests.fakes import FakeClock, FixedRandom, max_in_any_window, run_threads

EPS = 1e-9


def make(clock: FakeClock, **kw: object) -> RateLimiter:
    kw.setdefault("max_concurrency", 8)
    return RateLimiter(clock=clock, sleep=clock.sleep, **kw)  # type: ignore[arg-type]


# -- 1. sliding window ------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_sliding_window_never_exceeded_and_close_to_floor() -> None:
    clock = FakeClock()
    n, window, total = 50, 60.0, 1000
    limiter = make(clock, rate_per_window=n, window_s=window)

    def request(_: int) -> float:
        with limiter.acquire("tracks") as permit:
            return permit.started_at

    starts = run_threads(8, total, request)

    assert max_in_any_window(starts, window) <= n
    assert max_in_any_window(starts, window) == n  # the budget is actually used
    floor = total / n * window
    assert max(starts) <= floor * 1.05 + window
    assert limiter.stats()["acquired"] == {"tracks": total}


@pytest.mark.timeout(30)
def test_sliding_window_global_and_per_endpoint() -> None:
    clock = FakeClock()
    window = 60.0
    limits = {
        "tracks": EndpointLimit(rate_per_min=30),
        "audio_features": EndpointLimit(rate_per_min=20),
    }
    limiter = make(clock, rate_per_window=40, window_s=window, endpoint_limits=limits)
    endpoints = ("tracks", "audio_features", "track")

    def request(i: int) -> tuple[str, float]:
        ep = endpoints[i % 3]
        with limiter.acquire(ep) as permit:
            return ep, permit.started_at

    results = run_threads(8, 600, request)

    by_ep: dict[str, list[float]] = defaultdict(list)
    for ep, t in results:
        by_ep[ep].append(t)
    assert max_in_any_window([t for _, t in results], window) <= 40
    assert max_in_any_window(by_ep["tracks"], window) <= 30
    assert max_in_any_window(by_ep["audio_features"], window) <= 20


def test_endpoint_rate_per_minute_is_scaled_to_the_window() -> None:
    clock = FakeClock()
    # 60/min over a 10 s window = 10 starts per window for the endpoint.
    limiter = make(
        clock,
        rate_per_window=1000,
        window_s=10.0,
        endpoint_limits={"track": EndpointLimit(rate_per_min=60)},
    )
    starts = []
    for _ in range(30):
        with limiter.acquire("track") as p:
            starts.append(p.started_at)
    assert max_in_any_window(starts, 10.0) == 10


# -- 2. minimum interval --------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_min_interval_global_and_per_endpoint() -> None:
    clock = FakeClock()
    intervals = {"tracks": 0.75, "track": 1.0, "artist_tracks": 1.5}
    limiter = make(
        clock,
        rate_per_window=10_000,
        min_interval_s=0.25,
        endpoint_limits={ep: EndpointLimit(min_interval_s=s) for ep, s in intervals.items()},
    )
    endpoints = (*intervals, "recommendation")

    def request(i: int) -> tuple[str, float]:
        ep = endpoints[i % len(endpoints)]
        with limiter.acquire(ep) as permit:
            return ep, permit.started_at

    results = run_threads(8, 400, request)

    starts = sorted(t for _, t in results)
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.25 - EPS
    for ep, gap in intervals.items():
        times = sorted(t for e, t in results if e == ep)
        assert min(b - a for a, b in itertools.pairwise(times)) >= gap - EPS


@pytest.mark.timeout(30)
def test_min_interval_is_not_needlessly_slow() -> None:
    clock = FakeClock()
    limiter = make(
        clock,
        rate_per_window=10_000,
        min_interval_s=0.25,
        endpoint_limits={"track": EndpointLimit(min_interval_s=1.0)},
    )

    def request(_: int) -> float:
        with limiter.acquire("track") as permit:
            return permit.started_at

    starts = run_threads(8, 100, request)
    assert max(starts) == pytest.approx(99.0, abs=1e-6)


# -- 3. shared cool-down ----------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("retry_after", [30.0, None])
def test_429_pauses_every_thread(retry_after: float | None) -> None:
    clock = FakeClock()
    base = 8.0
    limiter = make(
        clock,
        rate_per_window=1000,
        min_interval_s=0.01,
        backoff_base_s=base,
        rng=FixedRandom(1.0),  # jitter draws the top: cool-down = base
    )
    expected = retry_after if retry_after is not None else base
    marks: list[tuple[float, float]] = []

    def request(i: int) -> float:
        with limiter.acquire("tracks") as permit:
            if i == 100:
                limiter.on_response("tracks", 429, retry_after, started_at=permit.started_at)
                marks.append((permit.started_at, limiter.stats()["cooldown_until"]))
            else:
                clock.sleep(0.2)  # latency; other threads keep going meanwhile
                limiter.on_response("tracks", 200, None)
            return permit.started_at

    starts = run_threads(8, 300, request)

    ((begin, end),) = marks  # the 429's request started at `begin` and was answered at once
    assert end - begin == pytest.approx(expected)
    assert not [t for t in starts if begin < t < end]
    after = sorted(t for t in starts if t >= end)
    assert len(after) >= 150  # every thread resumed
    assert after[0] <= end + 1.0  # ... promptly
    stats = limiter.stats()
    assert stats["count_429"] == 1
    assert stats["cooldown_seconds"] == pytest.approx(expected)


def test_exponential_cooldown_without_retry_after() -> None:
    clock = FakeClock()
    limiter = make(
        clock, rate_per_window=1000, backoff_base_s=1.0, backoff_max_s=10.0, rng=FixedRandom(1.0)
    )

    def cooldown_after_429() -> float:
        limiter.on_response("tracks", 429, None)
        until = limiter.stats()["cooldown_until"]
        length = until - clock.now()
        with limiter.acquire("tracks") as permit:  # waits out the cool-down
            assert permit.started_at >= until
        return length

    assert [cooldown_after_429() for _ in range(6)] == pytest.approx([1, 2, 4, 8, 10, 10])
    limiter.on_response("tracks", 200, None)  # ends the streak
    assert cooldown_after_429() == pytest.approx(1)


def test_exponential_cooldown_jitter_stays_within_half_to_full() -> None:
    clock = FakeClock()
    lengths = []
    for fraction in (0.0, 0.5, 1.0):
        limiter = make(clock, rate_per_window=10, backoff_base_s=4.0, rng=FixedRandom(fraction))
        limiter.on_response("tracks", 429, None)
        lengths.append(limiter.stats()["cooldown_until"] - clock.now())
    assert lengths == pytest.approx([2.0, 3.0, 4.0])


def test_cooldown_only_grows() -> None:
    clock = FakeClock()
    limiter = make(clock, rate_per_window=10)
    limiter.on_response("tracks", 429, 30.0)
    limiter.on_response("track", 429, 5.0)
    assert limiter.stats()["cooldown_until"] == pytest.approx(30.0)
    clock.advance(10)
    limiter.on_response("track", 429, 40.0)  # extends to 50: in force 0..50 in all
    assert limiter.stats()["cooldown_seconds"] == pytest.approx(50.0)


def test_too_long_retry_after_raises_instead_of_sleeping() -> None:
    clock = FakeClock()
    limiter = make(clock, rate_per_window=10, max_retry_after_s=300.0)
    limiter.on_response("tracks", 429, 400.0)
    with pytest.raises(RateLimitedError) as info:
        limiter.acquire("audio_features")
    assert info.value.endpoint == "audio_features"
    assert info.value.http_status == 429
    assert info.value.retry_after_s == pytest.approx(400.0)
    assert "tracks" in str(info.value)  # names the endpoint that caused the cool-down
    assert clock.sleep_calls == 0
    clock.advance(150)  # 250 s left: within what a run may wait
    with limiter.acquire("tracks") as permit:
        assert permit.started_at == pytest.approx(400.0)


# -- 4. adaptive ------------------------------------------------------------------------------


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
    assert steps == [6, 6, 6, 6, 6, 3]  # +6 per quiet stretch of successes, 30 -> 63
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


# -- 5. concurrency cap -----------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_concurrency_cap() -> None:
    clock = FakeClock()
    limiter = make(clock, rate_per_window=10_000, max_concurrency=3)
    cond = threading.Condition()
    in_flight = peak = 0

    def request(i: int) -> None:
        nonlocal in_flight, peak
        with limiter.acquire("tracks"):
            with cond:
                in_flight += 1
                peak = max(peak, in_flight)
                cond.notify_all()
                # Fake sleeps take no real time, so hold the slot (really, briefly) until
                # the others have had a chance to pile in: otherwise nothing overlaps.
                cond.wait_for(lambda: in_flight >= 4, timeout=0.01)
            clock.sleep(0.1 + (i % 7) * 0.3)
            with cond:
                in_flight -= 1

    run_threads(8, 200, request)
    assert peak == 3
    stats = limiter.stats()
    assert stats["peak_in_flight"] == 3
    assert stats["in_flight"] == 0


def test_permit_release_is_idempotent_and_context_exit_releases_on_error() -> None:
    clock = FakeClock()
    limiter = make(clock, rate_per_window=100, max_concurrency=2)
    p = limiter.acquire("tracks")
    p.release()
    p.release()
    assert limiter.stats()["in_flight"] == 0
    with pytest.raises(KeyError), limiter.acquire("tracks"):
        raise KeyError("boom")
    assert limiter.stats()["in_flight"] == 0


# -- 6. cancel --------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_cancel_wakes_threads_in_a_long_cooldown_real_time() -> None:
    limiter = RateLimiter(rate_per_window=100, max_retry_after_s=600)  # real clock and waits
    limiter.on_response("tracks", 429, 300.0)
    outcomes: list[tuple[str, float]] = []

    def waiter() -> None:
        try:
            limiter.acquire("tracks")
            outcomes.append(("acquired", time.monotonic()))
        except Cancelled:
            outcomes.append(("cancelled", time.monotonic()))

    threads = [threading.Thread(target=waiter, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.2)  # let them block
    assert outcomes == []
    cancelled_at = time.monotonic()
    limiter.cancel()
    for t in threads:
        t.join(1.0)
    assert [kind for kind, _ in outcomes] == ["cancelled"] * 4
    assert limiter.cancelled
    assert max(at for _, at in outcomes) - cancelled_at < 1.0
    with pytest.raises(Cancelled):
        limiter.acquire("track")  # every future acquire too


@pytest.mark.timeout(30)
def test_cancel_wakes_threads_waiting_for_a_slot_with_fake_sleep() -> None:
    clock = FakeClock()
    limiter = make(clock, rate_per_window=100, max_concurrency=1)
    held = limiter.acquire("tracks")
    outcomes: list[str] = []

    def waiter() -> None:
        try:
            limiter.acquire("tracks")
            outcomes.append("acquired")
        except Cancelled:
            outcomes.append("cancelled")

    threads = [threading.Thread(target=waiter, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    limiter.cancel()
    for t in threads:
        t.join(5.0)
    assert outcomes == ["cancelled"] * 3
    held.release()


# -- 7. Retry-After parsing -------------------------------------------------------------------


def test_parse_retry_after_seconds() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 3 ") == 3.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("0") == 0.0


def test_parse_retry_after_http_date() -> None:
    when = datetime(2025, 10, 21, 7, 28, 0, tzinfo=UTC)
    header = format_datetime(when, usegmt=True)  # "Tue, 21 Oct 2025 07:28:00 GMT"
    assert parse_retry_after(header, now_wall=when.timestamp() - 30) == pytest.approx(30.0)
    assert parse_retry_after(header, now_wall=when.timestamp() + 30) == 0.0  # past


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1e3", "nan", "12 s", "Tue, 99 Foo"])
def test_parse_retry_after_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value, now_wall=0.0) is None


# -- wiring -----------------------------------------------------------------------------------


def test_from_settings_converts_per_minute_to_per_window() -> None:
    settings = Settings(
        rate_limit=120,
        window_s=30,
        adaptive=True,
        adaptive_min_rate=6,
        adaptive_increase_per_min=6,
    )
    clock = FakeClock()
    limiter = RateLimiter.from_settings(settings, clock=clock, sleep=clock.sleep, initial_rate=40)
    stats = limiter.stats()
    assert stats["configured_rate"] == 60  # 120/min over a 30 s window
    assert stats["window_s"] == 30
    assert stats["effective_rate"] == 40
    capped = RateLimiter.from_settings(settings, clock=clock, sleep=clock.sleep, initial_rate=1e6)
    assert capped.effective_rate == 60  # a learned rate never exceeds today's ceiling


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
