"""``SimulatorConfig``: every knob of the simulator in one frozen object.

Defaults describe a healthy, moderately limited API (600 requests/min, bursts of 20, no faults,
no latency, unlimited server capacity) so the demo runs fast; tests and benchmarks turn on the
harsh parts explicitly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from pipeline.simulator.catalog import (
    DEFAULT_NO_FEATURES_FRACTION,
    DEFAULT_SHARED_ISRC_FRACTION,
    DEFAULT_UNKNOWN_FRACTION,
)
from pipeline.simulator.limits import LimitSpec

#: The only address the simulator binds: it must never be mistaken for, or exposed as, a service.
LOOPBACK = "127.0.0.1"
OVER_MAX_IDS = ("reject", "truncate")


@dataclass(frozen=True)
class SimulatorConfig:
    # network
    host: str = LOOPBACK
    port: int = 0  # 0 = pick a free port
    # rate limit (see limits.py for the models)
    model: str = "budget"  # budget | spacing | block | none
    rate_per_window: float = 600
    window_s: float = 60.0
    burst: int = 20  # starts in any 1 s (budget/block); 0 = no burst cap
    block_after: int = 3  # block model: this many 429s within window_s ...
    block_seconds: float = 30.0  # ... block everything for this long
    count_rejected: bool = False  # do 429'd requests use up budget?
    per_endpoint: bool = False  # False: one limit for all endpoints
    # API behaviour where the real one is undocumented (api notes §8)
    max_ids: int = 40
    over_max_ids: str = "reject"  # reject: 400/4004; truncate: keep the first max_ids silently
    all_unknown_status: int = 200  # 200 (empty content) or 404 (code 4041)
    # faults
    latency_s: float = 0.0
    latency_jitter_s: float = 0.0  # + uniform(0, jitter)
    latency_median_s: float = 0.0  # > 0: + lognormal service time with this median ...
    latency_sigma: float = 0.5  # ... and this sigma of ln(seconds)
    spike_probability: float = 0.0
    spike_s: float = 0.0  # added on a spike
    error_rate: float = 0.0  # 5xx
    proxy_html_fraction: float = 0.25  # of those 5xx: non-JSON proxy 502 instead of JSON 500/5001
    malformed_rate: float = 0.0  # 200 with truncated JSON
    reset_rate: float = 0.0  # close the connection without a response
    # hostile servers (issue 11): deterministic, every admitted data request
    reject_all: bool = False  # 400 with a validation body (4004) to every request
    html_404: bool = False  # a proxy's HTML 404 page instead of every answer
    trickle_s_per_byte: float = 0.0  # > 0: send the body one byte at a time, this far apart
    seed: int = 0  # fault RNG and synthetic tracks
    latency_seed: int | None = None  # the lognormal stream's own (None: ``seed``), new draws
    # server capacity (capacity.py), on the requests the rate limit admitted; 0 = unlimited
    parallelism: int = 0  # at most K worked on at once, the rest queue (FIFO)
    max_concurrent: int = 0  # 429 to a request arriving while this many are in the server
    # catalog
    synthetic_tracks: int = 0
    unknown_fraction: float = DEFAULT_UNKNOWN_FRACTION
    no_features_fraction: float = DEFAULT_NO_FEATURES_FRACTION
    shared_isrc_fraction: float = DEFAULT_SHARED_ISRC_FRACTION
    # time source of the limiter and counters (tests inject a fake clock)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.host != LOOPBACK:
            raise ValueError(f"the simulator listens on {LOOPBACK} only, not {self.host!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be 0..65535")
        if self.max_ids < 1:
            raise ValueError("max_ids must be >= 1")
        if self.over_max_ids not in OVER_MAX_IDS:
            raise ValueError(f"over_max_ids must be one of {OVER_MAX_IDS}")
        if self.all_unknown_status not in (200, 404):
            raise ValueError("all_unknown_status must be 200 or 404")
        for name in (
            "spike_probability",
            "error_rate",
            "proxy_html_fraction",
            "malformed_rate",
            "reset_rate",
            "unknown_fraction",
            "no_features_fraction",
            "shared_isrc_fraction",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1")
        for name in (
            "latency_s",
            "latency_jitter_s",
            "latency_median_s",
            "latency_sigma",
            "spike_s",
            "trickle_s_per_byte",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.parallelism < 0 or self.max_concurrent < 0:
            raise ValueError("parallelism and max_concurrent must be >= 0 (0 = unlimited)")
        if self.synthetic_tracks < 0:
            raise ValueError("synthetic_tracks must be >= 0")
        self.limit_spec  # noqa: B018 -- validates the limit fields now, not at first request

    @property
    def limit_spec(self) -> LimitSpec:
        return LimitSpec(
            model=self.model,
            rate_per_window=self.rate_per_window,
            window_s=self.window_s,
            burst=self.burst,
            block_after=self.block_after,
            block_seconds=self.block_seconds,
            count_rejected=self.count_rejected,
            per_endpoint=self.per_endpoint,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view (no clock) for ``/__sim/info``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "clock"}
