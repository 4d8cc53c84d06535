"""The compressed-time setup of ``run``: server limits sized from the workload, and the job's
settings with every time-like default scaled by W/60 (W = the server window standing for the
real minute) and the per-endpoint seeds and global gap replaced by the server's own shape.

These are TUNED settings: they show what the machinery reaches when told everything. ``run``
therefore also prints, beside each cold run, a row at the defaults (``default_overrides``: only
the rate and its window told), and ``matrix`` measures the job exactly as a user runs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from pipeline.settings import ENDPOINTS
from pipeline.simulator import SimulatorConfig
from tests.benchmarks import floors
from tests.benchmarks.workload import SEED, SYNTHETIC

MODELS = ("budget", "spacing", "block")
MODEL_LABEL = {"budget": "a:budget+burst", "spacing": "b:spacing", "block": "c:budget+block"}
SCENARIOS = ("cold", "cold2x", "warm", "incremental", "local", "faults")
RUN_DATE = "2025-06-01"
LATENCY_S = 0.02
LATENCY_JITTER_S = 0.02
BUDGET_FACTOR = 5.5  # C >= 5.5 L: the per-window budget binds
#: Not scaled: arrival jitter on loopback (new connections, GIL) is absolute, ~ms.
JITTER_MARGIN_S = 0.01


@dataclass(frozen=True)
class Limit:
    model: str
    L: int  # starts per window
    window_s: float
    burst: int  # starts per 1 s (budget/block); 0 for spacing

    @property
    def rate_per_s(self) -> float:
        return self.L / self.window_s

    def floor(self, calls: int) -> float:
        return floors.floor_s(
            calls, self.model, self.L, self.window_s, self.burst, LATENCY_S + LATENCY_JITTER_S / 2
        )


def limit_for(model: str, calls: int, window_s: float) -> Limit:
    L = max(2, math.floor(calls / BUDGET_FACTOR))
    burst = 0 if model == "spacing" else max(2, math.ceil(2 * L / window_s))
    return Limit(model, L, window_s, burst)


def sim_config(
    lim: Limit, *, error_rate: float = 0.0, malformed_rate: float = 0.0
) -> SimulatorConfig:
    return SimulatorConfig(
        model=lim.model,
        rate_per_window=lim.L,
        window_s=lim.window_s,
        burst=lim.burst,
        block_after=3,
        block_seconds=2 * lim.window_s,
        latency_s=LATENCY_S,
        latency_jitter_s=LATENCY_JITTER_S,
        error_rate=error_rate,
        malformed_rate=malformed_rate,
        proxy_html_fraction=0.25,
        synthetic_tracks=SYNTHETIC,
        seed=SEED,
    )


def job_overrides(lim: Limit, url: str, inp: Path, work: Path, factor: float = 1.0) -> dict:
    """Settings for our job: the limit told ``factor`` x the real one, time scaled by W/60."""
    k = lim.window_s / 60.0
    rate_per_min = lim.L * 60.0 / lim.window_s * factor
    gap = lim.window_s / lim.L if lim.model == "spacing" else 1.0 / lim.burst
    return {
        "base_url": url,
        "input": str(inp),
        "output_dir": str(work / "output"),
        "state_dir": str(work / "state"),
        "rate_limit": rate_per_min,
        "window_s": lim.window_s,
        "min_interval_s": gap / factor,
        "endpoint_limits": {ep: {} for ep in ENDPOINTS},  # one global limit, like the server
        "adaptive": True,
        "adaptive_quiet_s": 30.0 * k,
        "adaptive_increase_per_min": rate_per_min * 6.0 / 120.0,  # defaults' ratio 6/120
        "adaptive_min_rate": rate_per_min * 6.0 / 120.0,
        "max_retry_after_s": 300.0 * k,
        "backoff_base_s": 1.0 * k,
        "backoff_max_s": 60.0 * k,
        "jitter_margin_s": JITTER_MARGIN_S,
        "progress": False,
    }


def default_overrides(lim: Limit, url: str, inp: Path, work: Path, factor: float = 1.0) -> dict:
    """What a user tells: where, and the limit (rate and window); every other setting default."""
    return {
        "base_url": url,
        "input": str(inp),
        "output_dir": str(work / "output"),
        "state_dir": str(work / "state"),
        "rate_limit": lim.L * 60.0 / lim.window_s * factor,
        "window_s": lim.window_s,
        "progress": False,
    }
