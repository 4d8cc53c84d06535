"""Shared fixtures for the job-level tests: the simulator over loopback and fast settings.

The simulator is the real HTTP server (``SimulatorServer``) on 127.0.0.1, so these tests
exercise the client, limiter, stages and writers together; expected answers come from the
simulator's own ``Catalog`` object, never from the pipeline.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipeline.settings import ENDPOINTS, EndpointLimit, Settings, load_settings
from pipeline.simulator import Catalog, SimulatorConfig, SimulatorServer
from tests.api_support import h, rsps  # noqa: F401 (fixtures)
from tests.redis_support import private_redis, redis_server, redis_url  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[1]
SAMPLE_INPUT = REPO / "data" / "sample" / "tracks.parquet"

#: Loud enough that nothing in a job-level test is ever limited (the limits tests set their own).
FAST_SIM_RATE = 100_000

#: An independent parser of what the sample's ID column holds (the reader has its own tests).
_TRACK_ID = re.compile(
    r"(?:spotify:track:|https?://open\.spotify\.com/track/)?([0-9A-Za-z]{22})(?:\?.*)?"
)


@pytest.fixture(autouse=True)
def _no_reccobeats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings from the developer's shell must not change what a test runs against."""
    for name in list(os.environ):
        if name.startswith("RECCOBEATS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    """The simulator with a limit no job-level test reaches (no burst cap)."""
    config = SimulatorConfig(rate_per_window=FAST_SIM_RATE, window_s=60.0, burst=0)
    with SimulatorServer(config) as server:
        yield server


@pytest.fixture
def catalog(simulator: SimulatorServer) -> Catalog:
    """The very catalog object the running simulator answers from."""
    return simulator.catalog


def job_settings(tmp_path: Path, base_url: str, **overrides: Any) -> Settings:
    """Settings for a job run against the simulator at ``base_url``, with fast limits.

    No per-endpoint seeds, no adaptive learning, no stagger, no progress bars; state and
    output under ``tmp_path``. ``overrides`` win (``input``, ``recommendations``, TTLs...).
    """
    values: dict[str, Any] = {
        "base_url": base_url,
        "input": SAMPLE_INPUT,
        "output_dir": tmp_path / "output",
        "state_dir": tmp_path / "state",
        "rate_limit": 60_000.0,
        "min_interval_s": 0.0,
        "endpoint_limits": {name: EndpointLimit() for name in ENDPOINTS},
        "adaptive": False,
        "progress": False,
        "seed_stagger_s": 0.0,
        "backoff_base_s": 0.0,
        "retry_window_s": 0.0,  # retries counted in attempts only (the window has its tests)
    }
    values.update(overrides)
    return load_settings(values)


def fast_config_toml(path: Path, **extra: Any) -> Path:
    """A TOML settings file with the same fast limits, for CLI runs (flags cannot set them)."""
    lines = [
        "rate_limit = 60000.0",
        "min_interval_s = 0.0",
        "adaptive = false",
        "seed_stagger_s = 0.0",
        "backoff_base_s = 0.0",
        "retry_window_s = 0.0",
    ]
    for key, value in extra.items():
        lines.append(f"{key} = {str(value).lower() if isinstance(value, bool) else value}")
    lines += [f"[endpoint_limits.{name}]" for name in ENDPOINTS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def parse_track_id(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    m = _TRACK_ID.fullmatch(value.strip())
    return m.group(1) if m else None


def sample_frame(path: Path = SAMPLE_INPUT) -> pd.DataFrame:
    """The input as written, plus the row position and the parsed Spotify ID (None if bad)."""
    raw = pd.read_parquet(path)
    raw["row_number"] = range(len(raw))
    raw["spotify_id"] = [parse_track_id(v) for v in raw["track_id"]]
    return raw


def requests_by_endpoint(server: SimulatorServer) -> dict[str, int]:
    """What the simulator saw, per canonical endpoint name."""
    by_ep = server.counters()["by_endpoint"]
    return {ep: int(by_ep[ep]["requests"]) for ep in ENDPOINTS}


def ceil40(n: int) -> int:
    return math.ceil(n / 40)
