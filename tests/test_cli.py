"""Issue 2: ``reccobeats-etl run`` as a user meets it: exit codes, messages, the summary.

In-process through ``pipeline.cli.main`` (plus one real ``python -m pipeline run``), against
the simulator over loopback. Fast limits come from a ``--config`` TOML, as a user would
give them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.simulator import SimulatorConfig, SimulatorServer
from tests.conftest import REPO, SAMPLE_INPUT, fast_config_toml, sample_frame

pytestmark = pytest.mark.integration

DATE = "2025-03-01"


def run_args(tmp_path: Path, base_url: str, *extra: str, config: Path | None = None) -> list[str]:
    cfg = config or fast_config_toml(tmp_path / "fast.toml")
    return [
        "run",
        "--input",
        str(SAMPLE_INPUT),
        "--output",
        str(tmp_path / "out"),
        "--state-dir",
        str(tmp_path / "state"),
        "--base-url",
        base_url,
        "--date",
        DATE,
        "--config",
        str(cfg),
        "--no-progress",
        *extra,
    ]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error" in line.lower()]


def assert_one_clear_error(err: str, *needles: str) -> None:
    assert "Traceback" not in err
    lines = error_lines(err)
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_run_succeeds_with_summary_on_stderr(
    tmp_path: Path, simulator: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(run_args(tmp_path, simulator.url))
    out, err = capsys.readouterr()
    assert code == 0
    assert out == ""
    assert f"date={DATE} status=ok" in err
    assert "rows: 305 valid, 3 rejected" in err
    assert "429s: 0" in err
    assert (tmp_path / "out" / "tracks" / f"date={DATE}" / "part-0.parquet").is_file()
    assert simulator.counters()["requests_total"] > 0


def test_missing_input_file_exits_2_with_one_line(
    tmp_path: Path, simulator: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    args = run_args(tmp_path, simulator.url)
    args[args.index("--input") + 1] = str(tmp_path / "nope.parquet")
    assert main(args) == 2
    assert_one_clear_error(capsys.readouterr().err, "nope.parquet")
    assert simulator.counters()["requests_total"] == 0


def test_input_without_id_column_exits_2(
    tmp_path: Path, simulator: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "no_ids.parquet"
    pd.DataFrame({"title": ["a", "b"], "artist": ["x", "y"]}).to_parquet(bad)
    args = run_args(tmp_path, simulator.url)
    args[args.index("--input") + 1] = str(bad)
    assert main(args) == 2
    assert_one_clear_error(capsys.readouterr().err, "column")
    assert simulator.counters()["requests_total"] == 0


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--rate-limit", "0"),
        ("--rate-limit", "-3"),
        ("--rate-limit", "fast"),
        ("--rate-limit", "inf"),  # accepted once, then the run crashed saving the learned rate
        ("--rate-limit", "nan"),
        ("--date", "2025-13-45"),
    ],
)
def test_invalid_flag_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    args = run_args(tmp_path, "http://127.0.0.1:9")
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert_one_clear_error(err, flag, value)


def test_max_concurrency_flag_beats_env_and_caps_the_requests_in_flight(
    tmp_path: Path,
    simulator: SimulatorServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RECCOBEATS_MAX_CONCURRENCY", "8")
    assert main(run_args(tmp_path, simulator.url, "--max-concurrency", "2")) == 0
    capsys.readouterr()
    (report_path,) = (tmp_path / "out" / "runs").glob("*.json")
    report = json.loads(report_path.read_text())
    assert report["limiter"]["concurrency_cap"] == 2
    assert 1 <= report["requests"]["peak_in_flight"] <= 2
    assert simulator.counters()["peak_in_flight"] <= 2


def test_max_concurrency_over_64_is_a_config_error(
    tmp_path: Path, simulator: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(run_args(tmp_path, simulator.url, "--max-concurrency", "65")) == 2
    assert_one_clear_error(capsys.readouterr().err, "max_concurrency", "64")
    assert simulator.counters()["requests_total"] == 0


def test_chunk_size_over_40_from_env_is_a_config_error(
    tmp_path: Path,
    simulator: SimulatorServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RECCOBEATS_CHUNK_SIZE", "50")
    assert main(run_args(tmp_path, simulator.url)) == 2
    assert_one_clear_error(capsys.readouterr().err, "chunk_size", "40")
    assert simulator.counters()["requests_total"] == 0


def test_help_lists_the_run_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in (
        "--input",
        "--output",
        "--state-dir",
        "--date",
        "--base-url",
        "--rate-limit",
        "--max-concurrency",
        "--id-column",
        "--no-recommendations",
        "--dry-run",
        "--stage",
        "--config",
    ):
        assert option in out, option


def test_api_that_keeps_failing_gives_exit_3_with_rows_and_failures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = fast_config_toml(tmp_path / "fail.toml", max_retries=1)
    with SimulatorServer(SimulatorConfig(model="none", error_rate=1.0)) as server:
        code = main(run_args(tmp_path, server.url, config=config))
        sim = server.counters()
    err = capsys.readouterr().err
    assert code == 3
    assert "status=partial" in err
    assert "Traceback" not in err

    rows = sample_frame()
    distinct = set(rows["spotify_id"].dropna())
    chunks = -(-len(distinct) // 40)
    # retried (max_retries 1), at most twice per chunk (the client may give up on a dead API
    # sooner), and nothing after resolve could start
    assert 2 <= sim["by_endpoint"]["tracks"]["requests"] <= 2 * chunks
    assert sim["requests_total"] == sim["by_endpoint"]["tracks"]["requests"]

    out = pd.read_parquet(tmp_path / "out" / "tracks")
    assert len(out) == 305
    assert set(out["status"]) == {"failed"}

    [report_file] = (tmp_path / "out" / "runs").glob("*.json")
    report = json.loads(report_file.read_text())
    assert report["status"] == "partial" and report["exit_code"] == 3
    assert report["failures"]["count"] == chunks  # every chunk's failure is listed
    assert report["failures"]["messages"]
    assert set(report["failures"]["failed_ids"]) == distinct


def test_python_m_pipeline_run_in_a_subprocess(tmp_path: Path, simulator: SimulatorServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECCOBEATS_")}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", *run_args(tmp_path, simulator.url)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"date={DATE} status=ok" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert simulator.counters()["requests_total"] > 0
    tracks = pd.read_parquet(tmp_path / "out" / "tracks")
    assert len(tracks) == 305


def test_the_stage_flag_takes_exactly_the_stages_the_job_has() -> None:
    from pipeline.cli_parser import STAGE_CHOICES
    from pipeline.orchestrator import STAGES

    assert STAGE_CHOICES == STAGES
