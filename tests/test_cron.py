"""The cron wrapper (jobs/cron/run_nightly.sh) and the job entry point it runs.

The wrapper's promises are tested on the real script: a second start while a run holds the lock
exits at once with 75 and never starts the job; the job's exit code comes back unchanged; the
output lands in a dated log. A stand-in job (``RECCOBEATS_JOB_CMD``, a documented knob) makes
the timing deterministic; one test runs the real ``python -m jobs.nightly_enrich`` end to end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from jobs import nightly_enrich
from pipeline.errors import EXIT_USAGE

REPO = Path(__file__).resolve().parents[1]
WRAPPER = REPO / "jobs" / "cron" / "run_nightly.sh"
EXIT_ALREADY_RUNNING = 75

# Records its arguments, then waits for a release file (so a test controls how long "the run"
# lasts) and exits with STUB_RC.
STUB_JOB = """#!/usr/bin/env bash
echo "stub args: $*"
echo "stub stderr line" >&2
echo "$*" >> "$STUB_CALLS"
if [[ -n "${STUB_RELEASE:-}" ]]; then
    for _ in $(seq 1 600); do [[ -e "$STUB_RELEASE" ]] && break; sleep 0.05; done
fi
exit "${STUB_RC:-0}"
"""


@pytest.fixture
def cron_env(tmp_path: Path) -> dict[str, str]:
    stub = tmp_path / "stub_job.sh"
    stub.write_text(STUB_JOB)
    stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECCOBEATS_")}
    env.update(
        {
            "RECCOBEATS_STATE_DIR": str(tmp_path / "state"),
            "RECCOBEATS_LOG_DIR": str(tmp_path / "logs"),
            "RECCOBEATS_JOB_CMD": str(stub),
            "STUB_CALLS": str(tmp_path / "calls.txt"),
        }
    )
    return env


def run_wrapper(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(WRAPPER), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def calls(env: dict[str, str]) -> list[str]:
    path = Path(env["STUB_CALLS"])
    return path.read_text().splitlines() if path.exists() else []


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def test_second_run_refuses_to_overlap_while_the_first_holds_the_lock(
    cron_env: dict[str, str], tmp_path: Path
) -> None:
    release = tmp_path / "release"
    first_env = {**cron_env, "STUB_RELEASE": str(release)}
    first = subprocess.Popen(
        [str(WRAPPER), "--date", "2026-11-20"],
        env=first_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_for(lambda: len(calls(cron_env)) == 1)  # the first run's job is running

        started = time.monotonic()
        second = run_wrapper(cron_env, "--date", "2026-11-20")
        assert second.returncode == EXIT_ALREADY_RUNNING
        assert time.monotonic() - started < 10  # at once, not after the first run ends
        assert "another nightly run holds" in second.stderr
        assert "cron.lock" in second.stderr
        assert len(calls(cron_env)) == 1  # the second job never started
    finally:
        release.touch()
        _out, err = first.communicate(timeout=30)
    assert first.returncode == 0, err

    # Lock released with the first run: the next start runs normally.
    third = run_wrapper(cron_env, "--date", "2026-11-20")
    assert third.returncode == 0, third.stderr
    assert len(calls(cron_env)) == 2


def test_lock_held_by_another_process_is_respected(cron_env: dict[str, str]) -> None:
    """Any holder of the lock file counts, e.g. an operator's `flock` around a manual run."""
    lock = Path(cron_env["RECCOBEATS_STATE_DIR"]) / "cron.lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen(["flock", str(lock), "sleep", "30"])
    try:
        wait_for(lambda: subprocess.run(["flock", "-n", str(lock), "true"]).returncode != 0)
        proc = run_wrapper(cron_env)
        assert proc.returncode == EXIT_ALREADY_RUNNING
        assert calls(cron_env) == []
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("code", [1, 2, 3, 4, 5, 130])
def test_job_exit_code_is_propagated_and_logged(cron_env: dict[str, str], code: int) -> None:
    proc = run_wrapper({**cron_env, "STUB_RC": str(code)}, "--date", "2026-11-20")
    assert proc.returncode == code
    log = Path(cron_env["RECCOBEATS_LOG_DIR"]) / "nightly-2026-11-20.log"
    text = log.read_text()
    assert "stub args: --date 2026-11-20" in text
    assert "stub stderr line" in text  # stderr goes to the log too
    assert f"exit={code}" in text
    # Cron mails whatever a job prints: one line on failure, pointing at the log.
    assert f"exited {code}" in proc.stderr and str(log) in proc.stderr


def test_timeout_stops_a_hung_job_and_frees_the_lock(
    cron_env: dict[str, str], tmp_path: Path
) -> None:
    hung = {**cron_env, "STUB_RELEASE": str(tmp_path / "never"), "RECCOBEATS_TIMEOUT": "1"}
    started = time.monotonic()
    proc = run_wrapper(hung, "--date", "2026-11-20")
    assert proc.returncode == 124
    assert time.monotonic() - started < 20
    assert run_wrapper(cron_env, "--date", "2026-11-20").returncode == 0


def test_success_is_quiet_and_the_date_defaults_to_today_utc(cron_env: dict[str, str]) -> None:
    before = datetime.now(UTC).date()
    proc = run_wrapper(cron_env)
    after = datetime.now(UTC).date()
    assert proc.returncode == 0
    assert proc.stdout == "" and proc.stderr == ""  # under cron: no mail on success
    (call,) = calls(cron_env)
    run_date = call.split("--date ")[1].split()[0]
    assert date.fromisoformat(run_date) in {before, after}
    assert (Path(cron_env["RECCOBEATS_LOG_DIR"]) / f"nightly-{run_date}.log").is_file()


def test_extra_arguments_reach_the_job(cron_env: dict[str, str]) -> None:
    proc = run_wrapper(cron_env, "--stage", "resolve", "--date=2026-11-19")
    assert proc.returncode == 0
    assert calls(cron_env) == ["--stage resolve --date=2026-11-19"]
    assert (Path(cron_env["RECCOBEATS_LOG_DIR"]) / "nightly-2026-11-19.log").is_file()


def test_bad_date_is_refused_before_taking_the_lock(cron_env: dict[str, str]) -> None:
    proc = run_wrapper(cron_env, "--date", "tomorrow")
    assert proc.returncode == EXIT_USAGE
    assert calls(cron_env) == []


def test_real_job_with_missing_input_exits_2_through_the_wrapper(
    cron_env: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in cron_env.items() if k != "RECCOBEATS_JOB_CMD"}
    env.update(
        {
            "PYTHON": sys.executable,
            "RECCOBEATS_INPUT": str(tmp_path / "missing.parquet"),
            "RECCOBEATS_OUTPUT_DIR": str(tmp_path / "output"),
        }
    )
    proc = run_wrapper(env, "--date", "2026-11-20", timeout=120)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    log = (Path(env["RECCOBEATS_LOG_DIR"]) / "nightly-2026-11-20.log").read_text()
    assert "InputError" in log and "(exit 2)" in log


# -- jobs.nightly_enrich -------------------------------------------------------------------


def test_main_maps_errors_to_exit_codes_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RECCOBEATS_INPUT", str(tmp_path / "missing.parquet"))
    monkeypatch.setenv("RECCOBEATS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RECCOBEATS_OUTPUT_DIR", str(tmp_path / "output"))
    assert nightly_enrich.main(["--date", "2026-11-20"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nightly_enrich 2026-11-20: InputError")


def test_run_nightly_orders_stages_and_applies_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RECCOBEATS_BASE_URL", "RECCOBEATS_CONFIG", "RECCOBEATS_RATE_LIMIT"):
        monkeypatch.delenv(name, raising=False)
    seen: dict = {}

    def fake_run_job(settings, run_date, *, stages, dry_run, progress):
        seen.update(settings=settings, run_date=run_date, stages=stages, dry_run=dry_run)
        return "report"

    monkeypatch.setattr(nightly_enrich, "run_job", fake_run_job)
    result = nightly_enrich.run_nightly(
        date(2026, 11, 20),
        stages=["publish", "resolve"],
        input="x.parquet",
        rate_limit=30,
        base_url=None,  # None never masks the environment / defaults
    )
    assert result == "report"
    assert seen["stages"] == ("resolve", "publish")
    assert seen["settings"].rate_limit == 30
    assert str(seen["settings"].input) == "x.parquet"
    assert seen["settings"].base_url == "https://api.reccobeats.com"


def test_unknown_stage_is_a_config_error() -> None:
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown stage"):
        nightly_enrich.run_nightly(date(2026, 11, 20), stages=["resolv"], input="x.parquet")


# -- issue 12: the plan on --dry-run, the date checked before any file exists --------------


def real_job_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECCOBEATS_")}
    env.update(
        {
            "RECCOBEATS_STATE_DIR": str(tmp_path / "state"),
            "RECCOBEATS_LOG_DIR": str(tmp_path / "logs"),
            "RECCOBEATS_OUTPUT_DIR": str(tmp_path / "out"),
            "RECCOBEATS_INPUT": str(REPO / "data" / "sample" / "tracks.parquet"),
            "RECCOBEATS_BASE_URL": "http://127.0.0.1:9",  # never asked: a dry run
            "PYTHON": sys.executable,
        }
    )
    return env


def test_dry_run_shows_the_plan_and_writes_nothing(tmp_path: Path) -> None:
    result = run_wrapper(real_job_env(tmp_path), "--dry-run", "--date", "2026-11-20")
    assert result.returncode == 0, result.stderr
    assert "plan for 2026-11-20: 305 valid rows, 3 rejected" in result.stdout
    assert "tracks" in result.stdout and "ETA" in result.stdout
    for name in ("logs", "state", "out"):
        assert not (tmp_path / name).exists(), name  # no log file, no lock, no state


@pytest.mark.parametrize("bad", ["2026-13-45", "2026-02-30", "20261120"])
def test_an_impossible_date_is_refused_before_a_log_file_exists(
    cron_env: dict[str, str], tmp_path: Path, bad: str
) -> None:
    result = run_wrapper(cron_env, "--date", bad)
    assert result.returncode == EXIT_USAGE
    assert f"got '{bad}'" in result.stderr
    assert not (tmp_path / "logs").exists()
    assert calls(cron_env) == []
