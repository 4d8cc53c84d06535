"""Issue 14: the DAG under real Airflow with input, state and outputs only in S3.

``airflow dags test`` runs plan -> resolve -> features -> recommendations -> publish against
the bundled simulator and a real S3-compatible server (moto, loopback), from an empty working
directory, with every location an ``s3://`` URI: no task can lean on a local disk shared with
another. Afterwards the working directory is still empty, and the partitions equal those of
one local ``run_job`` of the same input.

Limit, said plainly: ``dags test`` runs the tasks one after another in one process, so "a
different worker per task" is modelled by "no local location at all", not by separate hosts.
"""

# ruff: noqa: F811  (pytest fixtures imported from tests.s3_support are parameters here)
from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest

pytest.importorskip("airflow", reason="apache-airflow is not installed (make test-airflow)")

from tests.airflow.conftest import DAG_ID, SAMPLE_INPUT, run_airflow
from tests.s3_support import S3Server, s3_server  # noqa: F401 (fixture)

pytestmark = [pytest.mark.airflow, pytest.mark.integration]

RUN_DATE = "2026-11-20"


@pytest.fixture(scope="module")
def simulator_url():
    from pipeline.simulator import SimulatorConfig, SimulatorServer

    server = SimulatorServer(SimulatorConfig())
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.mark.timeout(660)
def test_dag_with_everything_in_s3_matches_a_local_run(
    airflow_db: Path, simulator_url: str, s3_server: S3Server, tmp_path: Path
) -> None:
    import pandas as pd

    from pipeline import load_enriched
    from pipeline.io.storage import open_storage
    from pipeline.orchestrator import run_job
    from pipeline.settings import load_settings

    bucket = s3_server.new_bucket()
    root = f"s3://{bucket}"
    open_storage(f"{root}/in").write_bytes("tracks.parquet", SAMPLE_INPUT.read_bytes())
    workdir = tmp_path / "worker"
    workdir.mkdir()
    env = {
        **os.environ,
        **s3_server.env(),
        "RECCOBEATS_INPUT": f"{root}/in/",
        "RECCOBEATS_OUTPUT_DIR": f"{root}/out",
        "RECCOBEATS_STATE_DIR": f"{root}/state",
        "RECCOBEATS_BASE_URL": simulator_url,
        "RECCOBEATS_RATE_LIMIT": "600",
    }
    proc = run_airflow("dags", "test", DAG_ID, RUN_DATE, env=env, cwd=workdir, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert sorted(p.name for p in workdir.iterdir()) == [], "a task wrote to its local disk"

    local = load_settings(
        {
            "input": SAMPLE_INPUT,
            "output_dir": tmp_path / "local-out",
            "state_dir": tmp_path / "local-state",
            "base_url": simulator_url,
            "rate_limit": 600.0,
            "progress": False,
        }
    )
    run_job(local, date.fromisoformat(RUN_DATE))
    for dataset, keys in (("tracks", ["row_number"]), ("recommendations", ["playlist_id", "rank"])):
        there = load_enriched(f"{root}/out", date=RUN_DATE, dataset=dataset)
        here = load_enriched(local.output_dir, date=RUN_DATE, dataset=dataset)
        run_columns = [c for c in ("run_id", "loaded_at") if c in there.columns]
        pd.testing.assert_frame_equal(
            there.drop(columns=run_columns).sort_values(keys).reset_index(drop=True),
            here.drop(columns=run_columns).sort_values(keys).reset_index(drop=True),
        )
    reports = open_storage(f"{root}/out").list_files("runs")
    assert reports, "the run report went to S3 too"
