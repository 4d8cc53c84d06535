"""Fault injection: latency, spikes, 5xx, malformed bodies, connection resets.

Every choice comes from one seeded ``random.Random`` under a lock, and every request draws the
same number of values whatever the settings, so a run with the same seed and the same request
order gets the same faults.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from pipeline.simulator.config import SimulatorConfig

FAULT_KINDS = ("reset", "error500", "error502", "malformed")


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

    def reset(self) -> None:
        """Restart the random sequence, so a reset run replays the same faults."""
        with self._lock:
            self._rng = random.Random(self._config.seed)

    def plan(self) -> FaultPlan:
        c = self._config
        with self._lock:
            jitter, spike, reset, error, html, malformed = (self._rng.random() for _ in range(6))
        delay = c.latency_s + jitter * c.latency_jitter_s
        if spike < c.spike_probability:
            delay += c.spike_s
        kind: str | None = None
        if reset < c.reset_rate:
            kind = "reset"
        elif error < c.error_rate:
            kind = "error502" if html < c.proxy_html_fraction else "error500"
        elif malformed < c.malformed_rate:
            kind = "malformed"
        return FaultPlan(delay, kind)
