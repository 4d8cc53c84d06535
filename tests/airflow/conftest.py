"""Hermetic Airflow for the DAG tests: its own AIRFLOW_HOME and SQLite DB in a temp dir.

Airflow reads its configuration (and creates ``AIRFLOW_HOME``) when it is first imported, so the
environment is set here, at conftest import, before any test module imports ``airflow``. The
metadata DB is always forced to SQLite in that temp dir: a developer's exported
``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` must never point these tests at a real deployment.
Without Airflow installed (the main venv) nothing is set and the tests skip.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "airflow_dags"
SAMPLE_INPUT = REPO / "data" / "sample" / "tracks.parquet"
DAG_ID = "reccobeats_enrichment"
POOL = "reccobeats_api"

HAVE_AIRFLOW = importlib.util.find_spec("airflow") is not None
_HOME: Path | None = None

if HAVE_AIRFLOW:
    _HOME = Path(tempfile.mkdtemp(prefix="reccobeats-airflow-home-"))
    os.environ.update(
        {
            "AIRFLOW_HOME": str(_HOME),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        }
    )
    # Settings leaking in from the developer's shell would change what the DAG runs against.
    for name in list(os.environ):
        if name.startswith(("RECCOBEATS_", "AIRFLOW_VAR_RECCOBEATS_")):
            del os.environ[name]


def pytest_unconfigure(config: pytest.Config) -> None:
    if _HOME is not None:
        shutil.rmtree(_HOME, ignore_errors=True)


def airflow_cli() -> str:
    """The ``airflow`` script of the interpreter running the tests (the airflow venv's)."""
    return str(Path(sys.executable).with_name("airflow"))


def run_airflow(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [airflow_cli(), *args],
        env=env if env is not None else dict(os.environ),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[Path]:
    """A migrated metadata DB with the API pool created exactly as the README tells users to."""
    if not HAVE_AIRFLOW:
        pytest.skip("apache-airflow is not installed (make test-airflow)")
    assert _HOME is not None
    for args in (("db", "migrate"), ("pools", "set", POOL, "1", "ReccoBeats API")):
        proc = run_airflow(*args)
        assert proc.returncode == 0, (
            f"airflow {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        )
    yield _HOME
