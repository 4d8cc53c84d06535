"""Shared helpers of the reliability tests (tests/test_reliability_*.py).

They build inputs the bundled simulator knows, a settings file that takes the client's own
limits out of the way (the simulator's limits are what a test turns on), and run the CLI in a
subprocess so a test can SIGKILL / SIGTERM a real process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from pipeline.settings import ENDPOINTS
from pipeline.simulator import Catalog, SimulatorConfig

REPO = Path(__file__).resolve().parents[1]
RUN_DATE = "2024-06-01"
#: The rate a user is told, compressed in time: 300/min at 10x (the crash tests' server enforces
#: it). The in-flight limit at the defaults follows from it (~R x L x 1.5 + 2, here ~5).
USER_RATE_PER_MIN = 3000.0


def catalog_ids(synthetic: int, seed: int) -> list[str]:
    """Every Spotify ID of the simulator's catalog (known and unknown ones), sorted."""
    return sorted(Catalog.load(extra_synthetic=synthetic, seed=seed).all_spotify_ids)


def write_input(
    path: Path, ids: list[str], *, per_playlist: int = 25, repeat_every: int = 0
) -> Path:
    """A track list over ``ids`` cut into playlists (``repeat_every``: add duplicate rows)."""
    rows = list(ids)
    if repeat_every:
        rows += ids[::repeat_every]
    df = pd.DataFrame(
        {
            "track_id": rows,
            "playlist_id": [f"pl{i // per_playlist:04d}" for i in range(len(rows))],
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    return path


def write_fast_config(path: Path, **extra: object) -> Path:
    """TOML settings: no client-side pacing (the simulator's limits are the ones under test)."""
    lines = [
        "rate_limit = 100000.0",
        "min_interval_s = 0.0",
        "jitter_margin_s = 0.0",
        "seed_stagger_s = 0.0",
        "backoff_base_s = 0.01",
        "backoff_max_s = 0.05",
        "retry_window_s = 0.0",
        "progress = false",
    ]
    lines += [f"{k} = {_toml(v)}" for k, v in extra.items()]
    for ep in ENDPOINTS:
        lines += [f"[endpoint_limits.{ep}]", "min_interval_s = 0.0"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_user_config(path: Path, rate_limit: float, **extra: object) -> Path:
    """TOML settings as a user writes them: the rate they were told and nothing else (every
    other knob at its default; ``extra`` only shapes the workload)."""
    lines = [f"rate_limit = {rate_limit!r}", "progress = false"]
    lines += [f"{k} = {_toml(v)}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def user_rate_server(seed: int, latency_s: float = 0.03) -> SimulatorConfig:
    """A server enforcing ``USER_RATE_PER_MIN`` (a 60 s window, bursts of 1.2 x the rate per
    second), answering after ``latency_s``."""
    return SimulatorConfig(
        model="budget",
        rate_per_window=USER_RATE_PER_MIN,
        burst=int(USER_RATE_PER_MIN / 60 * 1.2),
        latency_s=latency_s,
        seed=seed,
    )


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def run_args(inp: Path, out: Path, state: Path, url: str, config: Path, *more: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline",
        "run",
        "--input",
        str(inp),
        "--output",
        str(out),
        "--state-dir",
        str(state),
        "--base-url",
        url,
        "--config",
        str(config),
        "--date",
        RUN_DATE,
        "--no-progress",
        "-q",
        *more,
    ]


def start(args: list[str], log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECCOBEATS_")}
    fh = log.open("wb")
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)


def run_to_end(args: list[str], log: Path, timeout: float = 120) -> int:
    proc = start(args, log)
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def kill_when(
    proc: subprocess.Popen,
    condition: Callable[[], bool],
    *,
    timeout: float = 60,
    poll_s: float = 0.001,
    sig: int = signal.SIGKILL,
) -> bool:
    """Send ``sig`` as soon as ``condition()`` holds; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if condition():
            proc.send_signal(sig)
            proc.wait(timeout=30)
            return True
        time.sleep(poll_s)
    proc.kill()
    proc.wait()
    raise AssertionError(f"condition not reached within {timeout}s")


def read_dataset(out: Path, dataset: str) -> pd.DataFrame:
    """The dataset as a plain pandas user loads it, sorted so runs compare row by row."""
    df = pd.read_parquet(out / dataset)
    df = df.drop(columns=[c for c in ("run_id", "loaded_at") if c in df.columns])  # per run
    keys = [c for c in ("row_number", "playlist_id", "rank") if c in df.columns]
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


def assert_state_readable(state: Path) -> None:
    """Every Parquet/JSON file in the state dir reads back; nothing was quarantined."""
    corrupt = sorted(p.name for p in state.glob("*.corrupt-*"))
    assert not corrupt, f"quarantined state files: {corrupt}"
    for f in state.glob("*.parquet"):
        pq.read_table(f)  # raises on a torn file
    for f in state.glob("*.json"):
        import json

        json.loads(f.read_text(encoding="utf-8"))


def assert_outputs_readable(out: Path) -> None:
    """Whatever partitions are visible load with plain pandas; no temp dir is visible."""
    for dataset in ("tracks", "recommendations", "rejects"):
        root = out / dataset
        if not root.is_dir():
            continue
        visible = [p.name for p in root.iterdir() if not p.name.startswith((".", "_"))]
        assert all(n.startswith("date=") for n in visible), visible
        if visible:
            pd.read_parquet(root)


def one_line_error(capsys: Any, rc: int, expected_rc: int, *words: str) -> str:
    """The CLI failed with ``expected_rc`` and exactly one error line naming ``words``."""
    err = capsys.readouterr().err
    assert rc == expected_rc, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("reccobeats-etl: error:")]
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]
