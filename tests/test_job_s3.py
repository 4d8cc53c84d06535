"""Issue 14 end to end: the nightly job with input, state and outputs only in ``s3://``.

Against a real S3-compatible server (moto, loopback) and the bundled simulator: a cold run,
a warm re-run that makes zero API requests, the outputs read back with plain pandas,
pyarrow.dataset and ``load_enriched`` (documented dtypes), the same partitions as a local
run, per-run object-store operation counts in the report, and a second run on the same
state prefix exiting with the lock code.
"""

# ruff: noqa: F811  (pytest fixtures imported from tests.s3_support are parameters here)
from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.dataset as pads
import pytest

from pipeline import load_enriched
from pipeline.errors import EXIT_LOCKED
from pipeline.io.storage import open_storage
from pipeline.orchestrator import run_job
from pipeline.simulator import SimulatorServer
from pipeline.state.lease import LeaseLock
from tests.conftest import SAMPLE_INPUT, fast_config_toml, job_settings
from tests.s3_support import S3Server, s3_root, s3_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration

RUN_DATE = date(2025, 3, 1)
REPO = Path(__file__).resolve().parents[1]


#: Columns that name the run that wrote a row: they differ between any two runs.
RUN_COLUMNS = ["run_id", "loaded_at"]


def _sorted(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    df = df.drop(columns=[c for c in RUN_COLUMNS if c in df.columns])
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


def _upload_input(root: str) -> str:
    open_storage(f"{root}/in").write_bytes("tracks.parquet", SAMPLE_INPUT.read_bytes())
    return f"{root}/in/"


def test_nightly_job_on_s3_cold_then_warm(
    tmp_path: Path, simulator: SimulatorServer, s3_server: S3Server, s3_root: str
) -> None:
    settings = job_settings(
        tmp_path,
        simulator.url,
        input=_upload_input(s3_root),
        output_dir=f"{s3_root}/out",
        state_dir=f"{s3_root}/state",
        s3_endpoint_url=s3_server.endpoint_url,
    )
    cold = run_job(settings, RUN_DATE)
    assert cold.status == "ok"
    cold_api = simulator.counters()["requests_total"]
    assert cold_api > 0
    assert str(cold.report_path).startswith(f"{s3_root}/out/runs/")

    warm = run_job(settings, RUN_DATE)
    assert simulator.counters()["requests_total"] == cold_api  # zero API requests
    assert warm.figures["requests"]["total_attempts"] == 0

    # The outputs as users read them.
    opts = s3_server.storage_options
    plain = pd.read_parquet(f"{s3_root}/out/tracks", storage_options=opts)
    enriched = load_enriched(f"{s3_root}/out", date=RUN_DATE, storage_options=opts)
    assert len(plain) == len(enriched) > 0
    assert str(enriched["duration_ms"].dtype) == "Int64"
    assert str(enriched["date"].dtype) == "datetime64[ns]"
    assert isinstance(enriched["artists"].dropna().iloc[0], list)
    assert str(plain["popularity"].dtype) == "Int64"
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_server.endpoint_url, skip_instance_cache=True)
    ds = pads.dataset(f"{s3_root[5:]}/out/recommendations", filesystem=fs, partitioning="hive")
    assert ds.count_rows() == len(load_enriched(f"{s3_root}/out", dataset="recommendations"))

    # The same partitions as one local run (a fresh local state asks the API again).
    local = job_settings(tmp_path / "local", simulator.url)
    run_job(local, RUN_DATE)
    for dataset, keys in (("tracks", ["row_number"]), ("recommendations", ["playlist_id", "rank"])):
        here = _sorted(load_enriched(local.output_dir, dataset=dataset), keys)
        there = _sorted(load_enriched(f"{s3_root}/out", dataset=dataset), keys)
        pd.testing.assert_frame_equal(here, there)

    # Object-store operations per run, in the report: cold and warm.
    cold_ops, warm_ops = cold.figures["object_store"], warm.figures["object_store"]
    for ops in (cold_ops, warm_ops):
        assert set(ops) == {"state", "output", "input"}
    assert warm_ops["state"]["put"] < cold_ops["state"]["put"]
    assert warm_ops["state"]["get"] <= 6  # 4 tables (+ journal replay: none) + learned rate
    assert "object store ops" in warm.summary()
    figures = {"api_requests_cold": cold_api, "cold": cold_ops, "warm": warm_ops}
    (tmp_path / "s3_op_counts.json").write_text(json.dumps(figures, indent=2) + "\n")
    print("\nobject-store ops cold:", json.dumps({k: _short(v) for k, v in cold_ops.items()}))
    print("object-store ops warm:", json.dumps({k: _short(v) for k, v in warm_ops.items()}))


def _short(ops: dict) -> dict:
    return {k: ops[k] for k in ("list", "get", "put", "delete", "head", "total")}


def test_second_run_on_the_same_s3_state_exits_with_the_lock_code(
    tmp_path: Path, simulator: SimulatorServer, s3_server: S3Server, s3_root: str
) -> None:
    state = open_storage(f"{s3_root}/state", s3_endpoint_url=s3_server.endpoint_url)
    cfg = fast_config_toml(tmp_path / "settings.toml")
    args = [
        sys.executable, "-m", "pipeline", "run",
        "--input", _upload_input(s3_root), "--output", f"{s3_root}/out",
        "--state-dir", f"{s3_root}/state", "--base-url", simulator.url,
        "--config", str(cfg), "--date", RUN_DATE.isoformat(), "--no-progress", "-q",
    ]  # fmt: skip
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("RECCOBEATS_")}
    with LeaseLock(state, lock_wait_s=0, lease_s=300):  # a live run holds the prefix
        proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == EXIT_LOCKED, proc.stderr
    assert "another run holds" in proc.stderr and ".lock" in proc.stderr
    assert simulator.counters()["requests_total"] == 0  # refused before any request
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
