"""Thread-safe request counters, latencies and a per-attempt timeline.

The run report (design.md section 6) must show where the time went: attempts vs logical
successes, 429s, retries, timeouts, latency percentiles and peak in-flight requests, per
endpoint. One lock guards everything: updates are a few dict operations, far cheaper than
the HTTP calls they describe, so contention is irrelevant. Latencies are kept as plain
lists because a nightly run makes thousands of calls, not millions.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

TimelineEntry = tuple[float, str, int | None, float]


@dataclass(slots=True)
class AttemptToken:
    """Handle returned by :meth:`RequestMetrics.start`; finishing it twice is a no-op."""

    endpoint: str
    started: float
    done: bool = False


@dataclass(slots=True)
class _EndpointStats:
    attempts: int = 0
    successes: int = 0
    failures: int = 0
    status_429: int = 0
    retries: int = 0
    timeouts: int = 0
    bytes: int = 0
    dedup_hits: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    retry_reasons: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "successes": self.successes,
            "failures": self.failures,
            "status_429": self.status_429,
            "retries": self.retries,
            "timeouts": self.timeouts,
            "bytes": self.bytes,
            "dedup_hits": self.dedup_hits,
            "statuses": dict(self.statuses),
            "errors": dict(self.errors),
            "retry_reasons": dict(self.retry_reasons),
            "latency_s": latency_summary(self.latencies),
        }


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default) of ``values``; ``None`` if empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def latency_summary(values: list[float]) -> dict[str, float | int | None]:
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": max(values) if values else None,
    }


class RequestMetrics:
    """Counts HTTP attempts (``start``/``finish``) and logical requests (``success``...).

    An *attempt* is one HTTP exchange; a *logical request* is one client-method call, which
    may take several attempts (retries) or none of its own (a dedup hit).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._t0 = clock()
        self._lock = threading.Lock()
        self._stats: dict[str, _EndpointStats] = {}
        self._timeline: list[TimelineEntry] = []
        self._in_flight = 0
        self._peak_in_flight = 0
        #: Clock readings of the first and the last attempt's start (None: none started).
        self._first_start: float | None = None
        self._last_start: float | None = None

    def _ep(self, endpoint: str) -> _EndpointStats:
        stats = self._stats.get(endpoint)
        if stats is None:
            stats = self._stats[endpoint] = _EndpointStats()
        return stats

    # -- attempts ---------------------------------------------------------------------------
    def start(self, endpoint: str) -> AttemptToken:
        """An HTTP attempt begins (call it while holding the limiter's permit)."""
        now = self._clock()
        with self._lock:
            self._ep(endpoint).attempts += 1
            if self._first_start is None:
                self._first_start = now
            self._last_start = now
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        return AttemptToken(endpoint, now)

    def finish(
        self,
        token: AttemptToken,
        status: int | None,
        nbytes: int = 0,
        error: str | None = None,
    ) -> None:
        """The attempt ended: ``status`` None means a transport error; ``error`` is its kind."""
        now = self._clock()
        latency = max(0.0, now - token.started)
        with self._lock:
            if token.done:
                return
            token.done = True
            self._in_flight -= 1
            stats = self._ep(token.endpoint)
            stats.latencies.append(latency)
            stats.bytes += max(0, nbytes)
            stats.statuses[str(status) if status is not None else "none"] += 1
            if status == 429:
                stats.status_429 += 1
            if error is not None:
                stats.errors[error] += 1
                if error == "timeout":
                    stats.timeouts += 1
            self._timeline.append((token.started - self._t0, token.endpoint, status, latency))

    # -- logical requests -------------------------------------------------------------------
    def retry(self, endpoint: str, reason: str) -> None:
        with self._lock:
            stats = self._ep(endpoint)
            stats.retries += 1
            stats.retry_reasons[reason] += 1

    def dedup_hit(self, endpoint: str) -> None:
        with self._lock:
            self._ep(endpoint).dedup_hits += 1

    def success(self, endpoint: str) -> None:
        with self._lock:
            self._ep(endpoint).successes += 1

    def failure(self, endpoint: str, kind: str) -> None:
        """A logical request raised; ``kind`` is counted under ``errors`` as ``failed:<kind>``."""
        with self._lock:
            stats = self._ep(endpoint)
            stats.failures += 1
            stats.errors[f"failed:{kind}"] += 1

    def count_error(self, endpoint: str, kind: str, n: int = 1) -> None:
        """Count a non-attempt problem, e.g. ``bad_item`` or ``unasked`` records dropped."""
        if n <= 0:
            return
        with self._lock:
            self._ep(endpoint).errors[kind] += n

    # -- reading ----------------------------------------------------------------------------
    @property
    def answered(self) -> int:
        """Attempts that got an HTTP status (any, even 404/429): proof the URL is right."""
        with self._lock:
            return sum(
                n for s in self._stats.values() for k, n in s.statuses.items() if k != "none"
            )

    @property
    def attempts(self) -> int:
        """HTTP attempts started so far, every endpoint (what a request budget counts)."""
        with self._lock:
            return sum(s.attempts for s in self._stats.values())

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy: ``endpoints`` (per endpoint), ``totals``, ``latency_s``...

        ``start_span_s``: seconds from the first attempt's start to the last one's (None
        before any). Why: N starts hold N - 1 gaps, so the rate they were started at is
        (N - 1) / span; N over the stages' wall time read above the configured rate on
        small runs (and below it when the last answers were slow).
        """
        with self._lock:
            endpoints = {name: s.as_dict() for name, s in sorted(self._stats.items())}
            all_latencies = [x for s in self._stats.values() for x in s.latencies]
            peak, in_flight = self._peak_in_flight, self._in_flight
            first, last = self._first_start, self._last_start
        return {
            "endpoints": endpoints,
            "totals": _totals(endpoints.values()),
            "latency_s": latency_summary(all_latencies),
            "peak_in_flight": peak,
            "in_flight": in_flight,
            "start_span_s": None if first is None or last is None else last - first,
        }

    def timeline(self) -> list[TimelineEntry]:
        """``(t_rel_start, endpoint, status|None, latency_s)`` per attempt, by start time."""
        with self._lock:
            return sorted(self._timeline, key=lambda entry: entry[0])


_SUMMED = (
    "attempts",
    "successes",
    "failures",
    "status_429",
    "retries",
    "timeouts",
    "bytes",
    "dedup_hits",
)


def _totals(per_endpoint: Iterable[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = dict.fromkeys(_SUMMED, 0)
    errors: Counter[str] = Counter()
    for stats in per_endpoint:
        for name in _SUMMED:
            totals[name] += stats[name]
        errors.update(stats["errors"])
    totals["errors"] = dict(errors)
    return totals
