"""What the simulator saw, so tests and benchmarks can check a client from the server's side.

``max_in_window`` is the most request arrivals in any sliding window of ``window_s`` (429'd ones
included): a client that respects an N-per-window limit keeps it <= N whatever the server
does. ``max_admitted_in_window`` counts only the requests the limiter let through.

``latency`` is the server's own view of how long admitted requests took: ``median_s`` is the
loaded latency (queue wait + service), ``service_median_s`` what the same requests would have
taken on an idle server (unloaded), ``queue_wait_*`` the difference. A client that does not
flood a saturated server keeps the two medians close. The last ``LATENCY_SAMPLES`` requests count.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

OUTCOMES = ("ok", "429", "404", "400", "5xx", "malformed", "resets")
OTHER = "other"  # requests to paths that are not API endpoints (404/4042)
LATENCY_SAMPLES = 100_000


def _quantiles(values: deque[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p90": None, "max": None}
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return {
        "median": round(statistics.median(ordered), 4),
        "p90": round(p90, 4),
        "max": round(ordered[-1], 4),
    }


def outcome_for_status(status: int) -> str:
    if status >= 500:
        return "5xx"
    if 200 <= status < 300:
        return "ok"
    return str(status) if str(status) in OUTCOMES else "400"


class _Window:
    """Sliding count of events over ``span`` seconds, remembering its maximum."""

    def __init__(self, span: float) -> None:
        self.span = span
        self.times: deque[float] = deque()
        self.max = 0

    def add(self, now: float) -> None:
        limit = now - self.span + 1e-6  # same tolerance as the limiter (limits.EPS)
        while self.times and self.times[0] <= limit:
            self.times.popleft()
        self.times.append(now)
        self.max = max(self.max, len(self.times))


class SimCounters:
    """Thread-safe request counters, keyed by the canonical endpoint names."""

    def __init__(
        self,
        endpoints: Iterable[str],
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._endpoints = (*endpoints, OTHER)
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._by_endpoint = {
                ep: {"requests": 0, **dict.fromkeys(OUTCOMES, 0)} for ep in self._endpoints
            }
            self._statuses: dict[str, int] = {}
            self._reasons: dict[str, int] = {}
            self._requests_total = 0
            self._rejected = 0
            self._blocks = 0
            self._ids = 0
            self._in_flight = 0
            self._peak_in_flight = 0
            self._arrivals = _Window(self._window_s)
            self._admitted = _Window(self._window_s)
            self._arrivals_1s = _Window(1.0)
            self._waits: deque[float] = deque(maxlen=LATENCY_SAMPLES)
            self._services: deque[float] = deque(maxlen=LATENCY_SAMPLES)
            self._latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
            self._started_wall = datetime.now(UTC).isoformat(timespec="milliseconds")
            self._started_mono = self._clock()

    def arrival(self, endpoint: str, n_ids: int = 0) -> None:
        """A request reached the server (before the limiter)."""
        with self._lock:
            now = self._clock()
            self._requests_total += 1
            self._by_endpoint[endpoint]["requests"] += 1
            self._ids += n_ids
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
            if endpoint != OTHER:
                self._arrivals.add(now)
                self._arrivals_1s.add(now)

    def admitted(self) -> None:
        with self._lock:
            self._admitted.add(self._clock())

    def served(self, queue_wait_s: float, service_s: float) -> None:
        """An admitted request got its worker after ``queue_wait_s`` and held it ``service_s``."""
        with self._lock:
            self._waits.append(queue_wait_s)
            self._services.append(service_s)
            self._latencies.append(queue_wait_s + service_s)

    def finished(
        self,
        endpoint: str,
        outcome: str,
        status: int | None,
        block_started: bool = False,
        limit_reason: str | None = None,
    ) -> None:
        """The request was answered (``status``) or reset (``status`` None)."""
        with self._lock:
            if limit_reason is not None:
                self._reasons[limit_reason] = self._reasons.get(limit_reason, 0) + 1
            self._in_flight -= 1
            self._by_endpoint[endpoint][outcome] += 1
            if status is not None:
                self._statuses[str(status)] = self._statuses.get(str(status), 0) + 1
            if outcome == "429":
                self._rejected += 1
            if block_started:
                self._blocks += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests_total": self._requests_total,
                "by_endpoint": {ep: dict(c) for ep, c in self._by_endpoint.items()},
                "statuses": dict(sorted(self._statuses.items())),
                "rejected_429": self._rejected,
                "rejected_by_limit": dict(sorted(self._reasons.items())),
                "blocks_started": self._blocks,
                "window_s": self._window_s,
                "max_in_window": self._arrivals.max,
                "max_admitted_in_window": self._admitted.max,
                "max_in_1s": self._arrivals_1s.max,
                "ids_requested_total": self._ids,
                "in_flight": self._in_flight,
                "peak_in_flight": self._peak_in_flight,
                "latency": self._latency_summary(),
                "started_at": self._started_wall,
                "uptime_s": round(self._clock() - self._started_mono, 3),
            }

    def _latency_summary(self) -> dict[str, float | int | None]:
        loaded, service, wait = (
            _quantiles(q) for q in (self._latencies, self._services, self._waits)
        )
        return {
            "served": len(self._latencies),
            "median_s": loaded["median"],
            "p90_s": loaded["p90"],
            "service_median_s": service["median"],
            "service_p90_s": service["p90"],
            "queue_wait_median_s": wait["median"],
            "queue_wait_p90_s": wait["p90"],
            "queue_wait_max_s": wait["max"],
        }
