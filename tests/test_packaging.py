"""Issue 12: ``pip install`` alone serves every README recipe.

The wheel carries the demo's sample, the cron wrapper (+ crontab example) and the Airflow
DAG (``pipeline/resources``, symlinks in git); ``reccobeats-etl airflow-dag PATH`` and
``cron-wrapper PATH`` put them where a user needs them. The last test is the real thing: a
wheel built from the tree, installed into a fresh venv, ``reccobeats-etl demo`` run from an
empty directory (marker ``wheel``; it runs in ``make test``, ~75 s on 2 cores, mostly pip
installing pandas/pyarrow from the local cache: the figures are printed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.errors import EXIT_USAGE
from pipeline.resources import (
    AIRFLOW_DAG,
    CRON_WRAPPER,
    CRONTAB_EXAMPLE,
    SAMPLE_INPUT,
    install_resource,
    sample_input_path,
)
from tests.conftest import REPO

REPO_COPIES = {
    SAMPLE_INPUT: REPO / "data" / "sample" / "tracks.parquet",
    CRON_WRAPPER: REPO / "jobs" / "cron" / "run_nightly.sh",
    CRONTAB_EXAMPLE: REPO / "jobs" / "cron" / "crontab.example",
    AIRFLOW_DAG: REPO / "airflow_dags" / "reccobeats_enrichment.py",
}


@pytest.mark.parametrize("name", [SAMPLE_INPUT, CRONTAB_EXAMPLE, AIRFLOW_DAG])
def test_resources_are_the_repository_files(tmp_path: Path, name: str) -> None:
    target = install_resource(name, tmp_path)
    assert target.read_bytes() == REPO_COPIES[name].read_bytes()


def test_cron_wrapper_copy_runs_this_installation(tmp_path: Path) -> None:
    target = install_resource(CRON_WRAPPER, tmp_path / "bin" / "run_nightly.sh")
    text = target.read_text()
    assert f'installed_python="{sys.executable}"' in text
    assert os.access(target, os.X_OK)
    assert sample_input_path().read_bytes() == REPO_COPIES[SAMPLE_INPUT].read_bytes()


def test_resource_commands_write_once_and_refuse_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["airflow-dag", str(tmp_path)]) == 0
    assert main(["cron-wrapper", str(tmp_path)]) == 0
    out = capsys.readouterr().out.split()
    assert out == [str(tmp_path / AIRFLOW_DAG), str(tmp_path / CRON_WRAPPER)]
    assert main(["airflow-dag", str(tmp_path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "exists" in err


def _source_tree(dest: Path) -> Path:
    """The tree as git would ship it (tracked + new, not ignored): no .venv, no build/."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, listed):
        src = REPO / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the work tree
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dest / rel)
        else:
            shutil.copy2(src, dest / rel)
    return dest


@pytest.mark.wheel
@pytest.mark.timeout(900)
def test_wheel_in_a_fresh_venv_runs_the_demo_from_an_empty_dir(tmp_path: Path) -> None:
    python = shutil.which("python3.11") or sys.executable
    timings: dict[str, float] = {}

    def step(name: str, cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        t0 = time.monotonic()
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
        timings[name] = time.monotonic() - t0
        assert result.returncode == 0, f"{name}: {result.stdout}\n{result.stderr}"
        return result

    src = _source_tree(tmp_path / "src")
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip"]
    step("build wheel", [*pip, "wheel", "-q", "--no-deps", "-w", str(dist), str(src)])
    wheel = next(dist.glob("reccobeats_etl-*.whl"))
    venv = tmp_path / "venv"
    step("create venv", [python, "-m", "venv", str(venv)])
    vpy = str(venv / "bin" / "python")
    step("pip install wheel", [vpy, "-m", "pip", "install", "-q", "--no-compile", str(wheel)])

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECCOBEATS_")}
    cli = str(venv / "bin" / "reccobeats-etl")
    demo = step("demo", [cli, "demo", "--output", "demo", "--no-progress"], cwd=empty, env=env)
    assert "status=ok" in demo.stderr and "simulator saw 40 requests" in demo.stderr
    assert (empty / "demo" / "output" / "tracks").is_dir()

    step("airflow-dag", [cli, "airflow-dag", "dags/"], cwd=empty, env=env)
    assert (empty / "dags" / AIRFLOW_DAG).read_bytes() == REPO_COPIES[AIRFLOW_DAG].read_bytes()
    step("cron-wrapper", [cli, "cron-wrapper", "bin/run_nightly.sh"], cwd=empty, env=env)
    sample = step(
        "sample path",
        [str(venv / "bin" / "python"), "-c",
         "from pipeline.resources import sample_input_path; print(sample_input_path())"],
        cwd=empty, env=env,
    ).stdout.strip()  # fmt: skip
    plan = step(
        "cron dry run",
        [str(empty / "bin" / "run_nightly.sh"), "--dry-run", "--date", "2026-11-20"],
        cwd=empty,
        env={**env, "RECCOBEATS_INPUT": sample, "RECCOBEATS_STATE_DIR": str(empty / "state")},
        stdin=subprocess.DEVNULL,
    )
    assert "plan for 2026-11-20: 305 valid rows" in plan.stdout
    print("wheel test timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
