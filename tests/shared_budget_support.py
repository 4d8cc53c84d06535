"""Helpers of the shared-budget process tests and benchmark: a fleet of real CLI runs.

Each job is ``python -m pipeline run`` in its own process, with its own input (disjoint IDs),
state dir and output dir, all against ONE in-process simulator that enforces the budget
globally; the simulator's counters (sampled by ``CounterSampler``) are the judge. The shared
budget is a real redis-server (tests/redis_support.py).
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.settings import ENDPOINTS
from pipeline.simulator import SimulatorServer
from tests.reliability_support import run_args, start, write_input


@dataclass(frozen=True)
class FleetSpec:
    """The client side: every job gets these settings (rates per window of ``window_s``)."""

    rate_per_window: float
    window_s: float
    max_concurrency: int = 4
    chunk_size: int = 2  # small chunks: many requests from a small input
    jitter_margin_s: float = 0.1  # loopback + 2 busy cores: arrival jitter reaches ~50 ms
    lease_s: float = 10.0
    adaptive: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def toml(self) -> str:
        values: dict[str, Any] = {
            "rate_limit": self.rate_per_window * 60.0 / self.window_s,
            "window_s": self.window_s,
            "min_interval_s": 0.0,
            "jitter_margin_s": self.jitter_margin_s,
            "max_concurrency": self.max_concurrency,
            "chunk_size": self.chunk_size,
            "chunk_concurrency": self.max_concurrency,
            "adaptive": self.adaptive,
            # The shared slots are under test: a fixed number of them, not a learned one.
            "adaptive_concurrency": False,
            "seed_stagger_s": 0.0,
            "backoff_base_s": 0.05,
            "backoff_max_s": 0.5,
            "max_retries": 6,
            "progress": False,
            "shared_budget_lease_s": self.lease_s,
            **self.extra,
        }
        lines = [f"{k} = {_toml(v)}" for k, v in values.items()]
        for ep in ENDPOINTS:
            lines += [f"[endpoint_limits.{ep}]", "min_interval_s = 0.0"]
        return "\n".join(lines) + "\n"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


@dataclass
class Job:
    name: str
    input: Path
    output: Path
    state: Path
    log: Path
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ended_at: float | None = None

    def start(self) -> Job:
        self.started_at = time.monotonic()
        self.proc = start(self.args, self.log)
        return self

    def wait(self, timeout: float = 180) -> int:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        if self.ended_at is None:
            self.ended_at = time.monotonic()
        return code

    def output_text(self) -> str:
        return self.log.read_text(errors="replace")


def make_jobs(
    root: Path,
    server: SimulatorServer,
    spec: FleetSpec,
    *,
    count: int,
    ids_per_job: int,
    redis_url: str | None,
    budget_name: str = "fleet",
) -> list[Job]:
    """``count`` jobs over disjoint slices of the simulator's known IDs, not started yet."""
    known = sorted(server.catalog.known_spotify_ids)
    assert len(known) >= count * ids_per_job, "catalog too small for this fleet"
    config = root / "settings.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(spec.toml(), encoding="utf-8")
    jobs = []
    for i in range(count):
        d = root / f"job{i}"
        inp = write_input(d / "input.parquet", known[i * ids_per_job : (i + 1) * ids_per_job])
        more = ["--no-recommendations"]
        if redis_url is not None:
            more += ["--shared-budget", redis_url, "--budget-name", budget_name]
        args = run_args(inp, d / "out", d / "state", server.url, config, *more)
        jobs.append(Job(f"job{i}", inp, d / "out", d / "state", d / "run.log", args))
    return jobs


class CounterSampler:
    """Samples the simulator's counters every ``every_s`` in a thread: (t, total, 429s, in_flight).

    ``t`` is ``time.monotonic()`` of this process, the same clock the simulator counts on.
    """

    def __init__(self, server: SimulatorServer, every_s: float = 0.005) -> None:
        self._server = server
        self._every = every_s
        self._stop = threading.Event()
        self.samples: list[tuple[float, int, int, int]] = []
        self._thread = threading.Thread(target=self._run, name="counter-sampler", daemon=True)

    def __enter__(self) -> CounterSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            c = self._server.counters()
            self.samples.append(
                (time.monotonic(), c["requests_total"], c["rejected_429"], c["in_flight"])
            )
            self._stop.wait(self._every)

    def first(self, predicate: Any) -> tuple[float, int, int, int] | None:
        return next((s for s in self.samples if predicate(s)), None)

    def total_at(self, t: float) -> int:
        """Requests that had arrived by ``t`` (the last sample at or before it)."""
        total = 0
        for at, n, _r, _f in self.samples:
            if at > t:
                break
            total = n
        return total

    def last_arrival_after(self, t: float) -> float | None:
        """The instant of the last sample where the arrival count grew, if after ``t``."""
        last, prev = None, None
        for at, n, _r, _f in self.samples:
            if prev is not None and n > prev and at > t:
                last = at
            prev = n
        return last
