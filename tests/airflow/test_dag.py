"""The Airflow DAG on a real Airflow 3: it parses, it is shaped as documented, and it runs.

Runs only in the airflow venv (``make test-airflow``); elsewhere the module skips. The end-to-end
tests run ``airflow dags test`` in a subprocess -- exactly what a data engineer would type -- on
the bundled sample against the bundled simulator, with Airflow's SQLite DB in a temp
``AIRFLOW_HOME`` (see conftest.py).
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("airflow", reason="apache-airflow is not installed (make test-airflow)")

from tests.airflow.conftest import (
    DAG_ID,
    DAGS_FOLDER,
    POOL,
    SAMPLE_INPUT,
    run_airflow,
)

pytestmark = pytest.mark.airflow

API_TASKS = ("resolve", "features", "recommendations", "publish")
SAMPLE_VALID_IDS = 305
RUN_DATE = "2026-11-20"


# -- parsing and shape --------------------------------------------------------------------


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_dag_imports_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert DAG_ID in dagbag.dag_ids


def test_dag_shape(dagbag) -> None:
    dag = dagbag.dags[DAG_ID]
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    order = ["plan", *API_TASKS]
    assert sorted(t.task_id for t in dag.tasks) == sorted(order)
    for upstream, downstream in itertools.pairwise(order):
        assert dag.get_task(downstream).upstream_task_ids == {upstream}
    for task in dag.tasks:
        assert task.retries >= 1, task.task_id
        # Airflow 3 takes a multiplier: True (== 1.0) would silently mean a constant delay.
        assert task.retry_exponential_backoff > 1, task.task_id
        assert task.execution_timeout is not None, task.task_id
        assert task.pool == (POOL if task.task_id in API_TASKS else "default_pool")
        assert task.pool_slots == 1


def test_pool_name_matches_the_settings_default() -> None:
    from airflow_dags.reccobeats_enrichment import API_POOL
    from pipeline.settings import Settings

    assert API_POOL == Settings.model_fields["airflow_pool"].default == POOL


# -- the partition date -------------------------------------------------------------------


def test_partition_date_precedence() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_dags.reccobeats_enrichment import partition_date

    logical = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    run_after = SimpleNamespace(run_after=datetime(2026, 11, 21, 9, 30, tzinfo=UTC))
    ctx = {"params": {"date": "2026-11-01"}, "logical_date": logical, "dag_run": run_after}
    assert partition_date(ctx) == date(2026, 11, 1)  # explicit param wins
    ctx["params"] = {"date": None}
    assert partition_date(ctx) == date(2026, 11, 20)  # scheduled run: logical date
    # Airflow 3 manual runs may have no logical date at all: run_after, then today.
    assert partition_date({"params": {}, "dag_run": run_after}) == date(2026, 11, 21)
    assert partition_date({"params": {}, "dag_run": None}) == datetime.now(UTC).date()
    with pytest.raises(AirflowFailException):
        partition_date({"params": {"date": "20/11/2026"}})


# -- end to end -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def simulator() -> Iterator[str]:
    from pipeline.simulator import SimulatorConfig, SimulatorServer

    server = SimulatorServer(SimulatorConfig())
    base_url = server.start()
    try:
        yield base_url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def run_env(airflow_db: Path, simulator: str, tmp_path_factory: pytest.TempPathFactory):
    """Env for ``airflow dags test``: absolute paths (a worker's cwd is not ours to assume)."""
    root = tmp_path_factory.mktemp("e2e")
    env = {
        **os.environ,
        "RECCOBEATS_INPUT": str(SAMPLE_INPUT),
        "RECCOBEATS_OUTPUT_DIR": str(root / "output"),
        "RECCOBEATS_STATE_DIR": str(root / "state"),
        "RECCOBEATS_BASE_URL": simulator,
        "RECCOBEATS_RATE_LIMIT": "600",
    }
    return SimpleNamespace(env=env, root=root, db=airflow_db / "airflow.db")


def _dags_test(
    env: dict[str, str], cwd: Path, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return run_airflow("dags", "test", DAG_ID, *args, env=env, cwd=cwd, timeout=timeout)


def _explain(proc: subprocess.CompletedProcess[str]) -> str:
    return (
        f"exit {proc.returncode}\n--- stdout (tail)\n{proc.stdout[-6000:]}\n"
        f"--- stderr (tail)\n{proc.stderr[-6000:]}"
    )


def _task_instances(db: Path) -> dict[str, tuple[str, str, int]]:
    """task_id -> (state, pool, try_number) of the latest DAG run, read from Airflow's DB."""
    with sqlite3.connect(db) as con:
        (run_id,) = con.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (DAG_ID,)
        ).fetchone()
        rows = con.execute(
            "SELECT task_id, state, pool, try_number FROM task_instance "
            "WHERE dag_id = ? AND run_id = ?",
            (DAG_ID, run_id),
        ).fetchall()
    return {task_id: (state, pool, tries) for task_id, state, pool, tries in rows}


@pytest.mark.integration
@pytest.mark.timeout(660)
def test_dags_test_runs_end_to_end_on_the_sample(run_env) -> None:
    import pandas as pd

    proc = _dags_test(run_env.env, run_env.root, RUN_DATE)
    assert proc.returncode == 0, _explain(proc)

    tis = _task_instances(run_env.db)
    assert {t: s for t, (s, _, _) in tis.items()} == dict.fromkeys(["plan", *API_TASKS], "success")
    assert {t for t, (_, pool, _) in tis.items() if pool == POOL} == set(API_TASKS)

    output = Path(run_env.env["RECCOBEATS_OUTPUT_DIR"])
    tracks = output / "tracks" / f"date={RUN_DATE}"
    assert tracks.is_dir(), sorted(str(p) for p in output.rglob("*"))
    frame = pd.read_parquet(tracks)
    assert len(frame) == SAMPLE_VALID_IDS
    assert (output / "recommendations" / f"date={RUN_DATE}").is_dir()
    reports = [json.loads(p.read_text()) for p in (output / "runs").glob("*.json")]
    published = [r for r in reports if "publish" in r.get("stages", ())]
    assert [r["status"] for r in published] == ["ok"], "one run report, from publish"
    # The stages really talked to the API (the simulator), each task for its own stage.
    attempts = sum(r.get("requests", {}).get("total_attempts", 0) for r in reports)
    assert attempts > 0


@pytest.mark.integration
@pytest.mark.timeout(660)
def test_manual_run_date_param_and_variables_take_precedence(run_env) -> None:
    """A manual run with ``date`` in its conf writes that date; a Variable beats the env var."""
    import pandas as pd

    override = run_env.root / "output-from-variable"
    env = {**run_env.env, "AIRFLOW_VAR_RECCOBEATS_OUTPUT_DIR": str(override)}
    # No logical date on the command line: Airflow uses "now"; the param must still win.
    proc = _dags_test(env, run_env.root, "--conf", json.dumps({"date": "2026-11-19"}))
    assert proc.returncode == 0, _explain(proc)

    partition = override / "tracks" / "date=2026-11-19"
    assert partition.is_dir(), sorted(str(p) for p in override.rglob("*"))
    assert len(pd.read_parquet(partition)) == SAMPLE_VALID_IDS
    env_output = Path(run_env.env["RECCOBEATS_OUTPUT_DIR"])
    assert not (env_output / "tracks" / "date=2026-11-19").exists()


@pytest.mark.integration
def test_bad_input_fails_at_once_without_retries(run_env) -> None:
    env = {**run_env.env, "RECCOBEATS_INPUT": str(run_env.root / "no-such-file.parquet")}
    # With a retryable failure, `dags test` would sit out the 5-minute retry delay and time out.
    proc = _dags_test(env, run_env.root, "2026-11-18", timeout=180)
    assert proc.returncode != 0, _explain(proc)
    tis = _task_instances(run_env.db)
    assert tis["plan"][0] == "failed" and tis["plan"][2] == 1, tis
    assert all(tis[t][0] in ("upstream_failed", None) for t in API_TASKS), tis
    assert "InputError" in proc.stdout + proc.stderr


@pytest.mark.integration
@pytest.mark.timeout(660)
def test_a_request_budget_ends_every_task_in_success_with_more_to_do(run_env) -> None:
    """A backlog under a budget: tasks succeed (exit 10 is not a failure), rows are pending,
    and the next DAG run continues from the state instead of starting again."""
    import pandas as pd

    root = run_env.root / "budgeted"
    env = {
        **run_env.env,
        "RECCOBEATS_OUTPUT_DIR": str(root / "output"),
        "RECCOBEATS_STATE_DIR": str(root / "state"),
        "RECCOBEATS_MAX_REQUESTS": "6",
    }
    proc = _dags_test(env, run_env.root, "2026-11-17")
    assert proc.returncode == 0, _explain(proc)
    tis = _task_instances(run_env.db)
    assert {t: s for t, (s, _, _) in tis.items()} == dict.fromkeys(["plan", *API_TASKS], "success")

    partition = root / "output" / "tracks" / "date=2026-11-17"
    first = pd.read_parquet(partition)["status"].value_counts()
    assert first.get("pending", 0) > 0 and first.get("failed", 0) == 0
    reports = [json.loads(p.read_text()) for p in (root / "output" / "runs").glob("*.json")]
    assert {r["status"] for r in reports} <= {"budget_reached", "ok"}

    proc = _dags_test(env, run_env.root, "2026-11-17")
    assert proc.returncode == 0, _explain(proc)
    second = pd.read_parquet(partition)["status"].value_counts()
    assert second.get("pending", 0) < first["pending"]  # the next night went on from there


@pytest.mark.integration
def test_a_features_task_before_anything_is_resolved_succeeds_with_more_to_do(
    run_env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A resolve task its budget stopped before any answer succeeds with more to do; the
    features task after it has nothing to fetch yet. The CLI calls that a usage error (exit
    2); in the DAG it failed the night without retry, where one full run publishes pending
    rows."""
    from airflow_dags import reccobeats_enrichment as dag_module

    for name, value in run_env.env.items():
        if name.startswith("RECCOBEATS_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("RECCOBEATS_STATE_DIR", str(tmp_path / "state"))  # nothing resolved
    monkeypatch.setenv("RECCOBEATS_OUTPUT_DIR", str(tmp_path / "output"))
    monkeypatch.setattr(dag_module, "setting_overrides", dict)  # no Variables in-process
    data = dag_module.run_stage("2026-11-16", ("features",))
    assert data["more_to_do"] is True
    assert "run --stage resolve first" in data["skipped"]
