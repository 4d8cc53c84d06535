"""Fault injection: latency, spikes, 5xx, malformed bodies, connection resets.

Every choice comes from one seeded ``random.Random`` under a lock, and every request draws the
same number of values whatever the settings, so a run with the same seed and the same request
order gets the same faults.

The lognormal service time (``latency_median_s``, ``latency_sigma``) has its own seeded stream,
so turning it on leaves the fault sequence of a seed unchanged. Lognormal because measured
API latencies are: most calls near the median, a long right tail (sigma 0.5 puts the 90th
percentile at ~1.9x the median).
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass

from pipeline.simulator.config import SimulatorConfig

FAULT_KINDS = ("reset", "error500", "error502", "malformed", "reject400", "html404")


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """What to do to one admitted request: wait ``delay_s``, then apply ``kind`` (or nothing)."""

    delay_s: float = 0.0
    kind: str | None = None  # one of FAULT_KINDS


class FaultInjector:
    def __init__(self, config: SimulatorConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self._latency_rng = random.Random(_latency_seed(config))

    def reset(self) -> None:
        """Restart the random sequence, so a reset run replays the same faults."""
        with self._lock:
            self._rng = random.Random(self._config.seed)
            self._latency_rng = random.Random(_latency_seed(self._config))

    def plan(self) -> FaultPlan:
        c = self._config
        with self._lock:
            jitter, spike, reset, error, html, malformed = (self._rng.random() for _ in range(6))
            normal = self._latency_rng.gauss(0.0, 1.0)
        delay = c.latency_s + jitter * c.latency_jitter_s
        if c.latency_median_s > 0:
            delay += c.latency_median_s * math.exp(c.latency_sigma * normal)
        if spike < c.spike_probability:
            delay += c.spike_s
        kind: str | None = None
        if reset < c.reset_rate:
            kind = "reset"
        elif error < c.error_rate:
            kind = "error502" if html < c.proxy_html_fraction else "error500"
        elif malformed < c.malformed_rate:
            kind = "malformed"
        if kind is None and c.reject_all:  # switches, not draws: a seed's sequence is unchanged
            kind = "reject400"
        elif kind is None and c.html_404:
            kind = "html404"
        return FaultPlan(delay, kind)


def _latency_seed(config: SimulatorConfig) -> str:
    """A stream of its own per seed (``random.Random`` hashes a str seed deterministically);
    ``latency_seed`` draws other latencies for the same catalog and faults."""
    seed = config.seed if config.latency_seed is None else config.latency_seed
    return f"latency:{seed}"
