"""The server models of ``matrix`` and the cases built from them (see its docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.simulator import SimulatorConfig
from tests.benchmarks.workload import SEED, SYNTHETIC

RUN_DATE = "2025-06-01"
FAST_LATENCY_S = (0.02, 0.02)  # fixed + uniform jitter, for the rate-bound models
SIGMA = 0.5


@dataclass(frozen=True)
class Server:
    """One simulated server (a fresh simulator per run)."""

    model: str  # budget | spacing | block (the simulator's rate-limit model)
    rate_per_min: float
    burst: int = 0  # starts per 1 s (budget/block)
    latency_median_s: float = 0.0  # > 0: lognormal service time instead of 20-40 ms
    parallelism: int = 0  # K workers, the rest queue
    max_concurrent: int = 0  # 429 above this many concurrent
    block_seconds: float = 30.0
    latency_seed: int | None = None  # other latency draws, same catalog (None: the seed's)

    @property
    def rate_per_s(self) -> float:
        return self.rate_per_min / 60.0

    @property
    def k(self) -> int:
        return self.parallelism or self.max_concurrent

    @property
    def unloaded_latency_s(self) -> float:
        fixed, jitter = FAST_LATENCY_S
        return self.latency_median_s or fixed + jitter / 2

    def floor_s(self, calls: int) -> float:
        """max(C/R, C x L/K): the rate bound, or the server-parallelism bound if it binds."""
        c_over_r = calls / self.rate_per_s
        if self.k and self.latency_median_s:
            return max(c_over_r, calls * self.latency_median_s / self.k)
        return c_over_r

    def config(self) -> SimulatorConfig:
        fixed, jitter = (0.0, 0.0) if self.latency_median_s else FAST_LATENCY_S
        return SimulatorConfig(
            model=self.model,
            rate_per_window=self.rate_per_min,
            window_s=60.0,
            burst=self.burst if self.model != "spacing" else 0,
            block_after=3,
            block_seconds=self.block_seconds,
            latency_s=fixed,
            latency_jitter_s=jitter,
            latency_median_s=self.latency_median_s,
            latency_sigma=SIGMA,
            parallelism=self.parallelism,
            max_concurrent=self.max_concurrent,
            synthetic_tracks=SYNTHETIC,
            seed=SEED,
            latency_seed=self.latency_seed,
        )

    def describe(self) -> str:
        parts = [f"{self.model} {self.rate_per_min:g}/min"]
        if self.burst and self.model != "spacing":
            parts.append(f"burst {self.burst}/s")
        if self.model == "block":
            parts.append(f"block {self.block_seconds:g}s after 3x429")
        if self.latency_median_s:
            parts.append(f"lognormal L={self.latency_median_s:g}s s={SIGMA:g}")
        if self.parallelism:
            parts.append(f"K={self.parallelism} queue")
        if self.max_concurrent:
            parts.append(f"429 above {self.max_concurrent} concurrent")
        return ", ".join(parts)


@dataclass(frozen=True)
class Case:
    name: str
    server: Server
    told_factor: float = 1.0  # our job is told told_factor x the server's rate
    greedy: bool = True  # False: an identical server already ran the greedy client


def cases(quick: bool, sweep: bool) -> list[Case]:
    """The matrix. Quick: twice the rate, half the latency (same R x L), half the workload."""
    f = 2.0 if quick else 1.0
    rate, burst = 300.0 * f, int(6 * f)
    budget = Server("budget", rate, burst)
    slow = Server("budget", rate, burst, latency_median_s=2.0 / f, parallelism=16)
    out = [
        Case("budget", budget),
        Case("spacing", Server("spacing", rate)),
        Case("block", Server("block", rate, burst, block_seconds=30.0 / f)),
        Case(
            "concurrency", Server("budget", rate, burst, latency_median_s=1.0 / f, max_concurrent=4)
        ),
        Case("slow", slow),
        Case("budget-told-2x", budget, told_factor=2.0, greedy=False),
        Case("slow-told-2x", slow, told_factor=2.0, greedy=False),
    ]
    if sweep:
        # R x L = 0.25 .. 25 in flight needed; K below it (latency-bound) and above (rate-bound)
        for latency, k in (
            (0.05, 2),
            (0.5, 2),
            (1.0, 4),
            (2.0, 4),
            (2.0, 64),
            (5.0, 16),
            (5.0, 64),
        ):
            server = Server("budget", rate, burst, latency_median_s=latency / f, parallelism=k)
            out.append(Case(f"L{latency:g}-K{k}", server))
    return out
