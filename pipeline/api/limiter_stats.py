"""What the limiter counts for the run report, apart from what it decides.

Why apart: the limiter's class holds the admission and waiting; the tallies (starts per
endpoint, time spent waiting, peak in flight, cool-down seconds, the in-flight limit over
time) are bookkeeping the report and the plot read, and they read the same whichever backend
keeps the windows. All methods are called under the limiter's lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.api.adaptive import RateController
from pipeline.api.binding import binding_limit
from pipeline.api.concurrency import ConcurrencyController
from pipeline.config import LimiterConfig


@dataclass
class LimiterTally:
    t0: float  # limiter-clock instant of construction: the timeline's zero
    acquired: dict[str, int] = field(default_factory=dict)
    acquired_total: int = 0
    wait_total: float = 0.0
    waited: int = 0
    peak_in_flight: int = 0
    cooldown_total: float = 0.0
    #: (seconds since t0, limit) at each change of the in-flight limit.
    concurrency_timeline: list[tuple[float, int]] = field(default_factory=list)

    def admitted(self, endpoint: str, waited_s: float, in_flight: int) -> None:
        self.peak_in_flight = max(self.peak_in_flight, in_flight)
        self.acquired[endpoint] = self.acquired.get(endpoint, 0) + 1
        self.acquired_total += 1
        if waited_s > 0:
            self.wait_total += waited_s
            self.waited += 1

    def limit_changed(self, now: float, limit: int) -> None:
        self.concurrency_timeline.append((now - self.t0, limit))


def limiter_figures(
    config: LimiterConfig,
    tally: LimiterTally,
    rate: RateController,
    conc: ConcurrencyController,
    *,
    in_flight: int,
    cooldown_until: float | None,
) -> dict[str, Any]:
    """The ``limiter`` section of the run report. Rates are per ``window_s``."""
    return {
        "effective_rate": rate.rate,
        "configured_rate": rate.rules.ceiling,
        "window_s": config.window_s,
        "adaptive": config.adaptive,
        "rate_decreases": rate.decreases,
        "rate_increases": rate.increases,
        "count_429": rate.count_429,
        "forgiven_429": rate.forgiven,  # told rate: the gap was widened, the rate kept
        "cooldown_seconds": tally.cooldown_total,
        "cooldown_until": cooldown_until,
        "in_flight": in_flight,
        "peak_in_flight": tally.peak_in_flight,
        "acquired": dict(tally.acquired),
        "wait_seconds": tally.wait_total,
        "waited": tally.waited,
        "concurrency_limit": conc.settled,
        "concurrency_cap": config.max_concurrency,
        "adaptive_concurrency": config.adaptive_concurrency,
        "concurrency_cuts": conc.cuts,
        "concurrency_429": conc.concurrency_429,
        "latency_median_s": conc.median_s,
        "latency_baseline_s": conc.baseline_s,
        # how many requests the server works on at once, when its answers show a queue
        "server_parallelism": conc.knee.k if conc.knee and conc.knee.queue_shown else None,
        "concurrency_timeline": [[round(t, 3), n] for t, n in tally.concurrency_timeline],
        **binding_limit(
            config,
            rate_per_window=rate.rate,
            in_flight_limit=conc.limit,
            latency_s=conc.median_s,
            endpoints=tally.acquired or None,
        ),
    }
