"""The one process-wide rate limiter every HTTP attempt goes through: admission and waiting.

ReccoBeats publishes no rate limit, answers 429 + ``Retry-After`` when it is exceeded and warns
that bursts may get a client blocked (design.md §3). So one ``RateLimiter`` per budget
enforces, for every thread at once:

* a concurrency cap: a slot is held from ``acquire`` until ``Permit.release``;
* a sliding window: at most N request *starts* in ANY window of ``window_s``, globally and
  per endpoint. A fixed-window counter such as ``ratelimit`` lets almost 2N through across a
  boundary (docs/decisions.md);
* a minimum interval between consecutive starts, globally and per endpoint;
* one shared cool-down: after a 429 no thread starts a request until it has passed, and
  for one window after it starts are spaced window/rate apart (no burst at its end;
  ``adaptive.Pacing``);
* optionally (``adaptive``) a learned global rate (``adaptive.RateController``: AIMD with
  probing). After the first 429 starts stay spaced window/rate apart for the rest of the run
  (the server may be strict spacing).

Where things live: the windows, slots, cool-down and learned limits are kept by a
``LimiterBackend`` (``limiter_backend.py``; in memory by default, shared across processes by
another adapter); the rate decisions by the pure controller; this module holds the waiting.

Waiting. Threads queue FIFO per endpoint; only the head of each queue evaluates the limits,
so a request cannot be starved by later arrivals and at most one thread per endpoint sleeps
on the clock. A head that must wait for *time* (cool-down, window, interval) waits that long
with ``stop.wait(seconds)`` (or the injected ``sleep``: tests on a fake clock), the lock
released, then re-checks everything. A head that needs a slot, and every non-head, waits on
the condition variable until another thread changes the state (release, admission, 429),
which always notifies; a set ``StopSignal`` notifies too (``pipeline/stop.py``). Every
waiter raises ``Cancelled`` as soon as it sees the stop signal set.

Slightly over 350 lines: admission and waiting share one lock and one condition variable,
and splitting them would put the FIFO hand-off on both sides of a module boundary; the
controllers (adaptive.py, concurrency.py), the counted state (limiter_backend.py) and the
tallies (limiter_stats.py) are already apart.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

from pipeline.api.adaptive import Pacing, RateController, RateRules, Reclaimed, whole_starts
from pipeline.api.backoff import EQUAL_JITTER, backoff_s
from pipeline.api.concurrency import ConcurrencyController, ConcurrencyRules
from pipeline.api.limiter_backend import AdmitRule, InMemoryBackend, Learned, Lease, LimiterBackend
from pipeline.api.limiter_stats import LimiterTally, limiter_figures
from pipeline.config import LimiterConfig
from pipeline.errors import Cancelled, RateLimitedError
from pipeline.stop import StopSignal

#: After a forgiven 429 (``RateController.forgive_429``) the gap between starts is widened by
#: this share of the told interval: two starts jitter brought too close must not meet again.
TOLD_GAP_WIDEN = 0.05
#: After a 429 blamed on concurrency, starts are spread for this many median latencies.
BLAME_PACED_LATENCIES = 2.0


class Permit:
    """One admitted request. Holds a concurrency slot until ``release()`` (idempotent).

    ``started_at`` is the limiter-clock instant the start was charged to the window; pass it
    to ``RateLimiter.on_response(..., started_at=)`` so a 429 for a request sent before the
    last rate decrease does not decrease the rate again.
    """

    __slots__ = ("_lease", "_limiter", "_lock", "_released", "in_flight")

    def __init__(self, limiter: RateLimiter, lease: Lease, in_flight: int) -> None:
        self._limiter = limiter
        self._lease = lease
        self._lock = threading.Lock()
        self._released = False
        #: Requests in flight (this one included) when it was admitted: the concurrency
        #: controller relates latency and 429s to it.
        self.in_flight = in_flight

    @property
    def endpoint(self) -> str:
        return self._lease.endpoint

    @property
    def started_at(self) -> float:
        return self._lease.started_at

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._limiter._release(self._lease)

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

    Too-long ``Retry-After``: the full cool-down is recorded (no thread hammers a server that
    asked for silence), but ``acquire`` raises ``RateLimitedError`` instead of waiting more
    than ``max_retry_after_s``, in every thread; the transport needs no check of its own.
    ``initial_rate`` (per window) / ``initial_concurrency`` start from what an earlier run
    learned (else the backend's learned values, else the ceiling / ``INITIAL_LIMIT``).
    """

    def __init__(
        self,
        config: LimiterConfig,
        *,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
        backend: LimiterBackend | None = None,
        initial_rate: float | None = None,
        initial_concurrency: int | None = None,
    ) -> None:
        c = config
        if c.rate_per_window <= 0 or c.window_s <= 0 or c.max_concurrency < 1:
            raise ValueError("rate_per_window and window_s must be > 0, max_concurrency >= 1")
        self.config = c
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._stop = stop if stop is not None else StopSignal()
        self._backend: LimiterBackend = backend if backend is not None else InMemoryBackend()
        self._ep_budget, self._ep_interval = _endpoint_rules(c)

        # A re-entrant lock: the stop waker may run in a signal handler on a thread that
        # already holds it.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        # Everything below is guarded by self._lock.
        start = initial_rate if initial_rate is not None else self._backend.learned().rate
        # A learned start climbs fast until its first 429 (issue 11: a storm's penalty must
        # not slow the next clean night), unless the budget is live: another holder has
        # requests in flight, or its cool-down ended less than a quiet stretch ago (or has not
        # ended; the Redis backend reports only a running one). Then the learned
        # rate is this night's, and climbing from it would publish the ceiling to the whole
        # fleet again (a process that joined a shared budget just after its 429 did: the
        # fleet's learned rate back at 2x the server's).
        cooldown_age = clock() - self._backend.cooldown().until
        live = self._backend.in_use() > 0 or cooldown_age < c.quiet_s
        self._rate = RateController(
            RateRules.from_config(c), clock(), start, warm_start=start is not None and not live
        )
        learned_conc = self._backend.learned().concurrency
        self._conc = ConcurrencyController(
            ConcurrencyRules(cap=c.max_concurrency, enabled=c.adaptive_concurrency),
            initial_concurrency if initial_concurrency is not None else learned_conc,
        )
        self._pacing = Pacing(c.window_s, for_good=c.adaptive)
        if c.adaptive and self._rate.rate < self._rate.rules.ceiling:
            self._pacing.after_429(clock(), self._rate.rate)  # a learned rate: see Pacing
        self._queues: dict[str, deque[object]] = {}
        self._consecutive_429 = 0
        self._gap_widened_s = 0.0  # told rate: the gap after a forgiven 429 (see on_response)
        self._blame_until = -math.inf  # a concurrency 429's pacing (``_blame_gap``) ends then
        self._tally = LimiterTally(t0=clock(), concurrency_timeline=[(0.0, self._conc.limit)])
        if isinstance(self._stop, StopSignal):
            self._stop.on_set(self._wake)

    # -- public API -------------------------------------------------------------------------

    @property
    def clock(self) -> Callable[[], float]:
        """The limiter's clock (the transport times latencies with it)."""
        return self._clock

    @property
    def stop(self) -> threading.Event:
        """The run's stop signal this limiter obeys."""
        return self._stop

    @property
    def effective_rate(self) -> float:
        """Requests per window the limiter admits now (the learned rate when adaptive)."""
        with self._lock:
            return self._rate.rate

    @property
    def concurrency_limit(self) -> int:
        """Requests allowed in flight now (the learned limit when adaptive_concurrency)."""
        with self._lock:
            return self._conc.limit

    @property
    def learned_concurrency(self) -> int:
        """The in-flight limit a next run starts from (a refresh's dip is not learned)."""
        with self._lock:
            return self._conc.settled

    @property
    def latency_median_s(self) -> float | None:
        """The median latency of the last answers the in-flight limit was judged on."""
        with self._lock:
            return self._conc.median_s

    def acquire(self, endpoint: str) -> Permit:
        """Block until ``endpoint`` may start a request; the Permit holds a concurrency slot.

        Raises ``Cancelled`` once the stop signal is set, and ``RateLimitedError`` if the
        shared cool-down still has more than ``max_retry_after_s`` to run.
        """
        ticket = object()
        with self._cond:
            entered = self._clock()
            queue = self._queues.setdefault(endpoint, deque())
            queue.append(ticket)
            try:
                while True:
                    if self._stop.is_set():
                        raise Cancelled("stop requested while waiting for the rate limiter")
                    if queue[0] is not ticket:
                        self._cond.wait()  # the head's departure notifies
                        continue
                    now = self._clock()
                    remaining = self._cooldown_remaining(endpoint, now)
                    if remaining > 0:
                        self._wait(remaining)
                        continue
                    admission = self._backend.admit(endpoint, now, self._rule(endpoint, now))
                    if admission.lease is not None:
                        return self._admitted(admission.lease, entered)
                    if admission.wait_s is None:
                        self._cond.wait(self._backend.slot_poll_s)  # a release notifies
                    else:
                        self._wait(admission.wait_s)
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
        latency_s: float | None = None,
        in_flight: int | None = None,
    ) -> None:
        """Feed back one HTTP answer (every attempt that got a status).

        429: extend (never shorten) the shared cool-down to ``now + retry_after_s`` (or the
        backoff); the concurrency controller may blame it on too many in flight, else the rate
        controller decides (``started_at`` tells a stale 429); then pacing (``Pacing``).
        Other statuses end the 429 streak and may let the rate probe upwards, or refute a 429
        blamed on concurrency (it is then the rate's). ``latency_s`` and ``in_flight``
        (``Permit.in_flight``) feed the in-flight limit (``concurrency.py``).
        """
        with self._cond:
            now = self._clock()
            if status != 429:
                self._consecutive_429 = 0
                if self._rate.on_success(now, self._tally.acquired_total):
                    self._rate_changed(now)
                if in_flight is not None and self._conc.refutes_429(in_flight):
                    # A request sent at more in flight than a 429 blamed on concurrency came
                    # back clean: that 429 was the rate's (concurrency.py, "refuted").
                    self._blame_until = -math.inf
                    self._concurrency_changed()
                    self._rate_429_decided(now, self._rate.reclaim_429(now))
                if (
                    latency_s is not None
                    and in_flight is not None
                    and self._conc.on_answer(latency_s, in_flight, self._rate_per_s())
                ):
                    self._concurrency_changed()
                return
            self._consecutive_429 += 1
            in_cooldown = now < self._backend.cooldown().until
            until = now + self._cooldown_s(retry_after_s)
            self._tally.cooldown_total += self._backend.extend_cooldown(until, endpoint, now)
            if in_flight is not None and self._conc.on_429(in_flight):
                self._rate.note_429(now)  # too many in flight, not too fast
                self._blame_until = now + BLAME_PACED_LATENCIES * (self._conc.median_s or 0.0)
                self._concurrency_changed()
            elif self._rate.forgive_429(now):  # jitter at the told spacing, not too fast
                self._rate_429_decided(now, "forgiven")
            elif self._rate.on_429(now, started_at, in_cooldown):
                self._rate_429_decided(now, "cut")
            self._pacing.after_429(self._backend.cooldown().until, self._rate.rate)
            self._cond.notify_all()

    def stats(self) -> dict[str, Any]:
        """A snapshot for the run report. Rates are per ``window_s``; seconds on the clock."""
        with self._lock:
            until = self._backend.cooldown().until
            return limiter_figures(
                self.config,
                self._tally,
                self._rate,
                self._conc,
                in_flight=self._backend.in_use(),
                cooldown_until=until if until > self._clock() else None,
            )

    # -- internals (all called with self._lock held) -----------------------------------------

    def _cooldown_remaining(self, endpoint: str, now: float) -> float:
        """Seconds of shared silence left; raises when more than ``max_retry_after_s``."""
        cooldown = self._backend.cooldown()
        remaining = cooldown.until - now
        if remaining > self.config.max_retry_after_s:
            raise RateLimitedError(
                f"server asked for {remaining:.0f}s of silence after a 429 on "
                f"{cooldown.cause!r}, more than max_retry_after_s="
                f"{self.config.max_retry_after_s:.0f}",
                endpoint=endpoint,
                http_status=429,
                retry_after_s=remaining,
            )
        return remaining

    def _rule(self, endpoint: str, now: float) -> AdmitRule:
        c = self.config
        pacing = self._pacing.active(now)
        return AdmitRule(
            window_s=c.window_s,
            budget=whole_starts(self._rate.rate),
            interval_s=self._spaced(c.min_interval_s) + self._gap_widened_s,
            max_in_flight=self._conc.limit,
            endpoint_budget=self._ep_budget.get(endpoint),
            endpoint_interval_s=self._spaced(self._ep_interval.get(endpoint, 0.0)),
            margin_s=c.margin_s,
            paced_interval_s=(
                self._spaced(max(self._pacing.step, c.min_interval_s, self._blame_gap(now)))
                if pacing
                else 0.0
            ),
            paced_from=self._pacing.since if pacing else math.inf,
        )

    def _blame_gap(self, now: float) -> float:
        """Seconds between starts the in-flight limit sustains (median latency / limit,
        Little's law) for two latencies after a 429 blamed on concurrency; else 0.

        Why: that blame may be wrong (concurrency.py, "refuted"), and the requests sent at
        the told rate just before the 429 come back together one latency later: at the told
        gap their follow-ups went out as a burst again and took a second 429 (told 600/min
        against 300/min + 6/s, at 7.3 s, 2 s after the first). Only for two latencies, by
        when the requests sent before the cut are back (refuted or not): held for the rest
        of the run on the noisy median of 8 answers, it throttled a server that does refuse
        concurrency (its 4 workers at ~1 s: 39.5 -> 47.4 s)."""
        if now >= self._blame_until:
            return 0.0
        sustained = self._conc.sustained_per_s()
        return 1.0 / sustained if sustained else 0.0

    def _spaced(self, gap: float) -> float:
        # Our start and the server's arrival differ by network jitter: keep starts this much
        # further apart than the limits say, or a full window at the server's edge is a 429.
        return gap + self.config.margin_s if gap > 0 else 0.0

    def _wait(self, seconds: float) -> None:
        """Wait for time with the lock released: ``stop.wait`` (or the injected sleep)."""
        self._lock.release()
        try:
            if self._sleep is None:
                self._stop.wait(seconds)
            else:
                self._sleep(seconds)
        finally:
            self._lock.acquire()

    def _admitted(self, lease: Lease, entered: float) -> Permit:
        in_flight = self._backend.in_use()
        self._tally.admitted(lease.endpoint, lease.started_at - entered, in_flight)
        return Permit(self, lease, in_flight)

    def _cooldown_s(self, retry_after_s: float | None) -> float:
        """The server's ``Retry-After``, or the k-th consecutive 429's equal-jitter backoff."""
        if retry_after_s is not None:
            return max(0.0, retry_after_s)
        c = self.config
        k = self._consecutive_429
        return backoff_s(k, c.backoff_base_s, c.backoff_max_s, self._rng, EQUAL_JITTER)

    def _release(self, lease: Lease) -> None:
        with self._cond:
            self._backend.release(lease)
            self._cond.notify_all()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()  # the stop signal was set: every waiter re-checks

    def _rate_per_s(self) -> float:
        """Starts per second the limits allow now: the in-flight need is this x latency."""
        per_s = self._rate.rate / self.config.window_s
        gap = self._spaced(self.config.min_interval_s)
        return min(per_s, 1.0 / gap) if gap > 0 else per_s

    def _rate_429_decided(self, now: float, outcome: Reclaimed) -> None:
        """Apply the rate controller's verdict on a 429 it took as its own."""
        if outcome == "forgiven":
            self._gap_widened_s = TOLD_GAP_WIDEN * self.config.min_interval_s
        elif outcome == "cut":
            self._conc.on_rate_429()
            self._rate_changed(now)

    def _concurrency_changed(self) -> None:
        """A higher limit may admit a waiting thread at once; the backend learns it."""
        self._backend.store_learned(Learned(concurrency=self._conc.settled))
        self._tally.limit_changed(self._clock(), self._conc.limit)
        self._cond.notify_all()

    def _rate_changed(self, now: float) -> None:
        """Pacing (if on) follows the new rate; the backend learns it."""
        self._pacing.rate_changed(now, self._rate.rate)
        self._backend.store_learned(Learned(rate=self._rate.rate))


def _endpoint_rules(config: LimiterConfig) -> tuple[dict[str, int | None], dict[str, float]]:
    """Per-endpoint budgets (whole starts per window, from per minute) and gaps."""
    budgets: dict[str, int | None] = {}
    gaps: dict[str, float] = {}
    for name, lim in config.endpoint_limits.items():
        per_min = lim.rate_per_min
        budgets[name] = None if per_min is None else whole_starts(per_min * config.window_s / 60)
        gaps[name] = lim.min_interval_s
    return budgets, gaps
