"""RateLimiter behaviour. Everything runs on a FakeClock except the cancel liveness check."""

from __future__ import annotations

import itertools
import threading
import time
from collections import defaultdict

import pytest

from pipeline.api.limiter import RateLimiter
from pipeline.config import limiter_config
from pipeline.errors import Cancelled, RateLimitedError
from pipeline.settings import EndpointLimit, Settings
from pipeline.stop import StopSignal
from tests.fakes import FakeClock, FixedRandom, max_in_any_window, plain_limiter, run_threads
from tests.fakes import make_limiter as make

EPS = 1e-9


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


# -- 6. stop signal----------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_cancel_wakes_threads_in_a_long_cooldown_real_time() -> None:
    stop = StopSignal()
    limiter = RateLimiter(plain_limiter(rate_per_window=100, max_retry_after_s=600), stop=stop)
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
    stop.set()
    for t in threads:
        t.join(1.0)
    assert [kind for kind, _ in outcomes] == ["cancelled"] * 4
    assert limiter.stop.is_set()
    assert max(at for _, at in outcomes) - cancelled_at < 1.0
    with pytest.raises(Cancelled):
        limiter.acquire("track")  # every future acquire too


@pytest.mark.timeout(30)
def test_cancel_wakes_threads_waiting_for_a_slot_with_fake_sleep() -> None:
    clock = FakeClock()
    stop = StopSignal()
    limiter = make(clock, rate_per_window=100, max_concurrency=1, stop=stop)
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
    stop.set()
    for t in threads:
        t.join(5.0)
    assert outcomes == ["cancelled"] * 3
    held.release()


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
    limiter = RateLimiter(limiter_config(settings), clock=clock, sleep=clock.sleep, initial_rate=40)
    stats = limiter.stats()
    assert stats["configured_rate"] == 60  # 120/min over a 30 s window
    assert stats["window_s"] == 30
    assert stats["effective_rate"] == 40
    capped = RateLimiter(limiter_config(settings), clock=clock, sleep=clock.sleep, initial_rate=1e6)
    assert capped.effective_rate == 60  # a learned rate never exceeds today's ceiling


def _told(clock: FakeClock) -> RateLimiter:
    """Told 300/min: starts 0.21 s apart, adaptive, as ``limiter_config`` builds it."""
    return make(clock, rate_per_window=300, min_interval_s=0.21, adaptive=True, told_rate=True)


def _gap_after(limiter: RateLimiter, clock: FakeClock) -> float:
    first = limiter.acquire("tracks")
    first.release()
    second = limiter.acquire("tracks")
    second.release()
    return second.started_at - first.started_at


def test_a_told_rates_first_429_after_clean_answers_widens_the_gap_not_the_rate() -> None:
    """Jitter at the told spacing: one 429 after 20 clean answers. Halving the rate for it
    made the rest of a run 2x slower; the gap widens by 5 % of the interval instead."""
    clock = FakeClock()
    limiter = _told(clock)
    for _ in range(20):
        limiter.on_response("tracks", 200)
    assert _gap_after(limiter, clock) == pytest.approx(0.21)
    limiter.on_response("tracks", 429, 1.0, started_at=clock())
    stats = limiter.stats()
    assert (stats["effective_rate"], stats["count_429"], stats["rate_decreases"]) == (300, 1, 0)
    assert stats["forgiven_429"] == 1
    clock.advance(2.0)  # past the cool-down
    assert _gap_after(limiter, clock) == pytest.approx(0.21 + 0.05 * 0.21)
    limiter.on_response("tracks", 429, 1.0, started_at=clock())  # a second one: the rate's
    assert limiter.stats()["effective_rate"] == 150


def test_a_told_rates_429_in_the_first_answers_cuts_the_rate() -> None:
    """A told rate 2x too high shows at once (the server's burst limit, 6th-7th request)."""
    clock = FakeClock()
    limiter = _told(clock)
    for _ in range(6):
        limiter.on_response("tracks", 200)
    limiter.on_response("tracks", 429, 1.0, started_at=clock())
    assert limiter.stats()["effective_rate"] == 150
