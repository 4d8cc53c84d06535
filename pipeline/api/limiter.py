"""The one process-wide rate limiter every HTTP attempt goes through.

ReccoBeats publishes no rate limit, answers 429 + ``Retry-After`` when it is exceeded and warns
that bursts may get a client blocked (design.md §3). So one ``RateLimiter`` per process
enforces, for every thread at once:

* a concurrency cap: a slot is held from ``acquire`` until ``Permit.release``;
* a sliding window: at most N request *starts* in ANY window of ``window_s`` (a deque of
  start times), globally and per endpoint. A fixed-window counter such as ``ratelimit``
  lets almost 2N through across a boundary (docs/decisions.md);
* a minimum interval between consecutive starts, globally and per endpoint;
* one shared cool-down: after a 429 no thread starts a request until it has passed, and
  for one window after it starts are spaced window/rate apart (no burst at its end);
* optionally (``adaptive``) a learned global rate: multiplicative decrease on 429,
  additive increase after ``quiet_s`` of answers without a 429, never above the ceiling. An
  increase is a probe: a 429 within one window of it restores the rate that worked (no
  cut) and doubles the quiet stretch before the next probe; after the run's first 429 a
  probe is made only while 429s stay within ``probe_429_budget`` (1 %) of the requests
  made. After the first 429 starts
  stay spaced window/rate apart for the rest of the run (the server may be strict spacing).

Rates are counts per window (``window_s``). Settings and ``EndpointLimit`` speak per minute;
``from_settings`` and the constructor convert with ``window_s / 60``.

Waiting. Threads queue FIFO per endpoint; only the head of each queue evaluates the limits,
so a request cannot be starved by later arrivals and at most one thread per endpoint sleeps
on the clock. A head that must wait for *time* (cool-down, window, interval) computes the
instant it may start and waits that long; a head that needs a concurrency slot, and every
non-head, waits on the condition variable until another thread changes the state
(release, admission, 429, cancel), which always notifies. With the default ``sleep=None``
timed waits are ``Condition.wait(timeout)``, so ``cancel()`` or a new 429 ends them at once.
An injected ``sleep(dt)`` (tests: a fake clock) is called with the lock released and cannot
be interrupted; after it returns the state is re-checked, so ``cancel()`` still wins as
soon as the sleep returns. Inject ``clock`` and ``sleep`` together: the default wait counts
real seconds.
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pipeline.errors import Cancelled, RateLimitedError
from pipeline.settings import EndpointLimit

if TYPE_CHECKING:
    from pipeline.settings import Settings

_SECONDS = re.compile(r"\d+(?:\.\d+)?")


def parse_retry_after(value: str | None, now_wall: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value, or ``None`` if absent/unusable.

    Accepts delay-seconds (``"120"``, also ``"1.5"``) or an HTTP-date, which is converted
    against ``now_wall`` (epoch seconds; default ``time.time()``). A date in the past gives
    0.0. Anything else (negative, garbage) gives ``None`` so the caller falls back to its
    own backoff instead of trusting a value it cannot read.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _SECONDS.fullmatch(text):
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None or when.tzinfo is None:  # RFC 9110 dates are GMT; a naive one is garbage
        return None
    now = time.time() if now_wall is None else now_wall
    return max(0.0, when.timestamp() - now)


class Permit:
    """One admitted request. Holds a concurrency slot until ``release()`` (idempotent).

    ``started_at`` is the limiter-clock instant the start was charged to the window; pass it
    to ``RateLimiter.on_response(..., started_at=)`` so a 429 for a request sent before the
    last rate decrease does not decrease the rate again.
    """

    __slots__ = ("_limiter", "_lock", "_released", "endpoint", "started_at")

    def __init__(self, limiter: RateLimiter, endpoint: str, started_at: float) -> None:
        self._limiter = limiter
        self._lock = threading.Lock()
        self._released = False
        self.endpoint = endpoint
        self.started_at = started_at

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._limiter._release()

    def __enter__(self) -> Permit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class RateLimiter:
    """Concurrency cap + sliding windows + min intervals + shared 429 cool-down (+ adaptive).

    Too-long ``Retry-After``: ``on_response`` always records the full cool-down (so no thread
    hammers a server that asked for silence), and ``acquire`` never waits more than
    ``max_retry_after_s`` for a cool-down: if the remaining cool-down is longer, it raises
    ``RateLimitedError`` (``retry_after_s`` = remaining) in every thread that asks. The client
    therefore needs no check of its own: report the 429, go round the retry loop, and the
    next ``acquire`` either waits or raises.

    A 429 without ``Retry-After`` gets an exponential cool-down with equal jitter:
    ``d = min(backoff_max_s, backoff_base_s * 2**(k-1))`` for the k-th consecutive 429
    (any other status resets k), then a uniform draw in ``[d/2, d]``.
    """

    def __init__(
        self,
        *,
        rate_per_window: float,
        window_s: float = 60.0,
        min_interval_s: float = 0.0,
        max_concurrency: int = 6,
        endpoint_limits: Mapping[str, EndpointLimit] | None = None,
        adaptive: bool = False,
        decrease: float = 0.5,
        increase_per_window: float = 6.0,
        quiet_s: float = 30.0,
        min_rate_per_window: float = 1.0,
        max_retry_after_s: float = 300.0,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        initial_rate: float | None = None,
        margin_s: float = 0.0,
        probe_429_budget: float | None = 0.01,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if rate_per_window <= 0 or window_s <= 0 or max_concurrency < 1:
            raise ValueError("rate_per_window and window_s must be > 0, max_concurrency >= 1")
        if not 0 < decrease < 1:
            raise ValueError("decrease must be in (0, 1)")
        self._ceiling = float(rate_per_window)
        self._floor = min(float(min_rate_per_window), self._ceiling)
        self._window = float(window_s)
        self._min_interval = float(min_interval_s)
        # Our start and the server's arrival differ by network jitter: keep starts this much
        # further apart than the limits say, or a full window at the server's edge is a 429.
        self._margin = float(margin_s)
        self._max_concurrency = int(max_concurrency)
        self._adaptive = adaptive
        self._decrease = decrease
        self._increase = float(increase_per_window)
        self._quiet = float(quiet_s)
        self._probe_budget = probe_429_budget  # None: probe whenever the quiet stretch passed
        self._max_retry_after = float(max_retry_after_s)
        self._backoff_base = float(backoff_base_s)
        self._backoff_max = float(backoff_max_s)
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()

        # Per-endpoint ceilings, converted from per-minute to per-window.
        self._ep_rate: dict[str, float | None] = {}
        self._ep_interval: dict[str, float] = {}
        for name, lim in (endpoint_limits or {}).items():
            per_window = None if lim.rate_per_min is None else lim.rate_per_min * window_s / 60
            self._ep_rate[name] = per_window
            self._ep_interval[name] = lim.min_interval_s

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # Everything below is guarded by self._lock.
        start_rate = self._ceiling if initial_rate is None or not adaptive else initial_rate
        self._rate = min(self._ceiling, max(self._floor, float(start_rate)))
        now = clock()
        self._starts: deque[float] = deque()
        self._pace_from = self._pace_until = math.inf  # after a 429: see _pace_after_429
        self._pace_step = 0.0
        self._ep_starts: dict[str, deque[float]] = {}
        self._last_start: float | None = None
        self._ep_last_start: dict[str, float] = {}
        self._queues: dict[str, deque[object]] = {}
        self._in_flight = 0
        self._peak_in_flight = 0
        self._cancelled = False
        self._cooldown_until = -math.inf
        self._cooldown_total = 0.0
        self._cooldown_cause = ""
        self._consecutive_429 = 0
        self._count_429 = 0
        self._last_decrease_at = -math.inf
        self._quiet_anchor = now  # start of the current stretch without a 429 (or increase)
        # Probing (adaptive): an increase is a probe above a rate that just ran ``quiet_s``
        # without a 429. A 429 within one window of it means the probe failed: go back to
        # that good rate (not a multiplicative cut) and wait twice as long before the next.
        self._good_rate: float | None = None
        self._probe_quiet = self._quiet
        self._increased_at = -math.inf
        self._decreases = 0
        self._increases = 0
        self._acquired: dict[str, int] = {}
        self._acquired_total = 0
        self._wait_total = 0.0
        self._waited = 0

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        initial_rate: float | None = None,
        rng: random.Random | None = None,
    ) -> RateLimiter:
        """The limiter ``settings`` describe. ``initial_rate`` is per window, like
        ``effective_rate`` (persist ``stats()["effective_rate"]`` and pass it back tomorrow)."""
        per_window = settings.window_s / 60.0
        return cls(
            rate_per_window=settings.rate_limit * per_window,
            window_s=settings.window_s,
            min_interval_s=settings.min_interval_s,
            max_concurrency=settings.max_concurrency,
            endpoint_limits=settings.endpoint_limits,
            adaptive=settings.adaptive,
            decrease=settings.adaptive_decrease,
            increase_per_window=settings.adaptive_increase_per_min * per_window,
            quiet_s=settings.adaptive_quiet_s,
            min_rate_per_window=settings.adaptive_min_rate * per_window,
            max_retry_after_s=settings.max_retry_after_s,
            backoff_base_s=settings.backoff_base_s,
            backoff_max_s=settings.backoff_max_s,
            initial_rate=initial_rate,
            margin_s=settings.jitter_margin_s,
            probe_429_budget=settings.adaptive_probe_429_budget,
            clock=clock,
            sleep=sleep,
            rng=rng,
        )

    # -- public API -------------------------------------------------------------------------

    @property
    def effective_rate(self) -> float:
        """Requests per window the limiter admits now (the learned rate when adaptive)."""
        with self._lock:
            return self._rate

    @property
    def cancelled(self) -> bool:
        """True once ``cancel()`` was called (lets other waits, e.g. backoffs, stop too)."""
        with self._lock:
            return self._cancelled

    def acquire(self, endpoint: str) -> Permit:
        """Block until ``endpoint`` may start a request; the Permit holds a concurrency slot.

        Raises ``Cancelled`` after ``cancel()``, and ``RateLimitedError`` if the shared
        cool-down still has more than ``max_retry_after_s`` to run.
        """
        ticket = object()
        with self._cond:
            entered = self._clock()
            queue = self._queues.setdefault(endpoint, deque())
            queue.append(ticket)
            try:
                while True:
                    if self._cancelled:
                        raise Cancelled("rate limiter cancelled")
                    now = self._clock()
                    if queue[0] is not ticket:
                        self._cond.wait()  # the head's departure notifies
                        continue
                    delay = self._delay(endpoint, now)
                    if delay is None:
                        self._cond.wait()  # a release notifies
                    elif delay > 0:
                        self._wait(delay)
                    else:
                        return self._admit(endpoint, now, entered)
            finally:
                queue.remove(ticket)
                self._cond.notify_all()

    def on_response(
        self,
        endpoint: str,
        status: int,
        retry_after_s: float | None = None,
        *,
        started_at: float | None = None,
    ) -> None:
        """Feed back one HTTP answer (call it for every attempt that got a status).

        429: start (or extend; never shorten) the shared cool-down to ``now + retry_after_s``,
        or the exponential backoff if ``None``; when adaptive, multiply the rate by
        ``decrease`` unless the 429 answers a request sent before the last decrease
        (``started_at`` from the Permit; without it, a 429 during the cool-down of the
        previous decrease counts as stale); a 429 within one window of an increase restores
        the rate before it instead and doubles the next quiet stretch. After the cool-down
        starts are spaced window/rate apart (adaptive: for the rest of the run; otherwise
        for one window), so the budget left in the window is not spent as a burst.

        Any other status: ends the consecutive-429 streak; when adaptive and ``quiet_s`` has
        passed since the last 429 or increase, add ``increase_per_window`` (up to the ceiling).
        """
        with self._cond:
            now = self._clock()
            if status != 429:
                self._consecutive_429 = 0
                if (
                    self._adaptive
                    and self._rate < self._ceiling
                    and now - self._quiet_anchor >= self._probe_quiet
                    and self._probe_affordable()
                ):
                    self._good_rate = self._rate
                    self._rate = min(self._ceiling, self._rate + self._increase)
                    self._quiet_anchor = self._increased_at = now
                    self._increases += 1
                    self._repace()
                return
            self._count_429 += 1
            self._consecutive_429 += 1
            self._quiet_anchor = now
            in_cooldown = now < self._cooldown_until
            duration = self._backoff() if retry_after_s is None else max(0.0, retry_after_s)
            self._extend_cooldown(now + duration, endpoint, now)
            if self._adaptive:
                stale = (
                    started_at <= self._last_decrease_at if started_at is not None else in_cooldown
                )
                if not stale:
                    probe_failed = (
                        self._good_rate is not None and now - self._increased_at <= self._window
                    )
                    if probe_failed:
                        self._rate = self._good_rate
                        self._probe_quiet *= 2
                    else:
                        self._rate = max(self._floor, self._rate * self._decrease)
                        self._probe_quiet = self._quiet
                    self._good_rate = None
                    self._last_decrease_at = now
                    self._decreases += 1
            self._pace_after_429()
            self._cond.notify_all()

    def cancel(self) -> None:
        """Make every waiting and future ``acquire`` raise ``Cancelled``."""
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()

    def stats(self) -> dict[str, Any]:
        """A snapshot for the run report. Rates are per ``window_s``; seconds on the clock."""
        with self._lock:
            now = self._clock()
            return {
                "effective_rate": self._rate,
                "configured_rate": self._ceiling,
                "window_s": self._window,
                "adaptive": self._adaptive,
                "rate_decreases": self._decreases,
                "rate_increases": self._increases,
                "count_429": self._count_429,
                "cooldown_seconds": self._cooldown_total,
                "cooldown_until": self._cooldown_until if self._cooldown_until > now else None,
                "in_flight": self._in_flight,
                "peak_in_flight": self._peak_in_flight,
                "acquired": dict(self._acquired),
                "wait_seconds": self._wait_total,
                "waited": self._waited,
            }

    # -- internals (all called with self._lock held) -----------------------------------------

    def _delay(self, endpoint: str, now: float) -> float | None:
        """0 if ``endpoint`` may start now, seconds to wait, or None: wait for a free slot."""
        remaining = self._cooldown_until - now
        if remaining > 0:
            if remaining > self._max_retry_after:
                raise RateLimitedError(
                    f"server asked for {remaining:.0f}s of silence after a 429 on "
                    f"{self._cooldown_cause!r}, more than max_retry_after_s="
                    f"{self._max_retry_after:.0f}",
                    endpoint=endpoint,
                    http_status=429,
                    retry_after_s=remaining,
                )
            return remaining
        if self._in_flight >= self._max_concurrency:
            return None
        wait = self._window_wait(self._starts, self._rate, now)
        if self._last_start is not None:
            pacing = self._last_start >= self._pace_from and now < self._pace_until
            gap = max(self._pace_step, self._min_interval) if pacing else self._min_interval
            wait = max(wait, self._last_start + self._spaced(gap) - now)
        ep_starts = self._ep_starts.get(endpoint)
        ep_rate = self._ep_rate.get(endpoint)
        if ep_starts is not None and ep_rate is not None:
            wait = max(wait, self._window_wait(ep_starts, ep_rate, now))
        ep_last = self._ep_last_start.get(endpoint)
        if ep_last is not None:
            wait = max(wait, ep_last + self._spaced(self._ep_interval.get(endpoint, 0.0)) - now)
        return max(0.0, wait)

    def _window_wait(self, starts: deque[float], rate: float, now: float) -> float:
        """Seconds until one more start fits: a start at t counts while now < t + window."""
        span = self._window + self._margin
        while starts and starts[0] + span <= now:
            starts.popleft()
        excess = len(starts) - _budget(rate)
        if excess < 0:
            return 0.0
        return starts[excess] + span - now  # when the (excess+1)-th oldest expires

    def _spaced(self, gap: float) -> float:
        return gap + self._margin if gap > 0 else 0.0

    def _wait(self, seconds: float) -> None:
        """Wait with the lock released; the default is interruptible by any notify."""
        if self._sleep is None:
            self._cond.wait(seconds)
            return
        self._lock.release()
        try:
            self._sleep(seconds)
        finally:
            self._lock.acquire()

    def _admit(self, endpoint: str, now: float, entered: float) -> Permit:
        self._starts.append(now)
        self._ep_starts.setdefault(endpoint, deque()).append(now)
        self._last_start = now
        self._ep_last_start[endpoint] = now
        self._in_flight += 1
        self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        self._acquired[endpoint] = self._acquired.get(endpoint, 0) + 1
        self._acquired_total += 1
        waited = now - entered
        if waited > 0:
            self._wait_total += waited
            self._waited += 1
        return Permit(self, endpoint, now)

    def _release(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def _probe_affordable(self) -> bool:
        """A probe may cost a 429: after this run's first 429, probe only while 429s stay
        within ``probe_429_budget`` of the requests made (small runs keep the rate that
        works instead of spending a tenth of their calls on probes; long runs still climb)."""
        if self._count_429 == 0 or self._probe_budget is None:
            return True
        return self._count_429 + 1 <= self._probe_budget * self._acquired_total

    def _backoff(self) -> float:
        exponent = min(self._consecutive_429 - 1, 62)
        ceiling = min(self._backoff_max, self._backoff_base * 2.0**exponent)
        return ceiling / 2 + self._rng.uniform(0.0, ceiling / 2)

    def _extend_cooldown(self, until: float, endpoint: str, now: float) -> None:
        """Cool-downs only grow; ``cooldown_seconds`` counts the union of their intervals."""
        if until <= self._cooldown_until:
            return
        self._cooldown_total += until - max(self._cooldown_until, now)
        self._cooldown_until = until
        self._cooldown_cause = endpoint

    def _pace_after_429(self) -> None:
        """For one window after the cool-down, space starts window/rate apart.

        The budget left unused in the window (and, after a decrease, the starts of the old
        rate still in it) would otherwise go out the instant the cool-down ends: the burst
        that got us the 429. Real starts stay in the deque, so the sliding-window guarantee
        is untouched; pacing only spreads what the window allows.
        """
        self._pace_from = self._cooldown_until
        # Adaptive: the server just showed the configured rate is too high, and its shape is
        # unknown (it may be strict spacing): keep spacing starts at the learned rate for the
        # rest of the run, not only for one window.
        self._pace_until = math.inf if self._adaptive else self._cooldown_until + self._window
        self._pace_step = self._window / _budget(self._rate)

    def _repace(self) -> None:
        """After a rate change, pacing (if on) follows the new rate."""
        if self._pace_until > self._clock():
            self._pace_step = self._window / _budget(self._rate)


def _budget(rate: float) -> int:
    """Whole starts per window a (possibly fractional, learned) rate allows; at least 1."""
    return max(1, math.floor(rate + 1e-9))
