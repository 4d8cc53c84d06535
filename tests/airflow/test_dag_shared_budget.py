"""With a shared budget (issue 13) the DAG's API tasks leave the 1-slot pool; without, they keep it.

The pool is chosen when the DAG file is parsed, so each case parses it in a fresh interpreter
with its own environment (the test process has imported the module already).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("airflow", reason="apache-airflow is not installed (make test-airflow)")

from tests.airflow.conftest import DAG_ID, DAGS_FOLDER, POOL

pytestmark = pytest.mark.airflow

API_TASKS = {"resolve", "features", "recommendations", "publish"}

_PARSE = f"""
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(DAGS_FOLDER)!r})
assert not bag.import_errors, bag.import_errors
dag = bag.dags[{DAG_ID!r}]
print(json.dumps({{t.task_id: [t.pool, t.pool_slots] for t in dag.tasks}}))
"""


def parsed_pools(**env: str) -> dict[str, list[object]]:
    proc = subprocess.run(
        [sys.executable, "-c", _PARSE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_with_a_shared_budget_the_api_tasks_need_no_pool() -> None:
    pools = parsed_pools(RECCOBEATS_SHARED_BUDGET="redis://127.0.0.1:6379/0")
    assert {t for t, (pool, _) in pools.items() if pool != "default_pool"} == set()
    assert set(pools) >= API_TASKS


def test_without_one_they_keep_the_one_slot_pool() -> None:
    pools = parsed_pools(RECCOBEATS_SHARED_BUDGET="")
    assert {t for t, (pool, _) in pools.items() if pool == POOL} == API_TASKS
    assert all(slots == 1 for _, slots in pools.values())


def test_the_budget_url_and_name_can_be_airflow_variables() -> None:
    from airflow_dags.reccobeats_enrichment import VARIABLE_SETTINGS

    assert {"RECCOBEATS_SHARED_BUDGET", "RECCOBEATS_BUDGET_NAME"} <= set(VARIABLE_SETTINGS)
