"""Issue 12: what a data engineer hits in the first hour, one test per defect.

Through ``pipeline.cli.main`` (in process) or ``run_job``, against the simulator over
loopback; a dead API is a loopback port nothing listens on. Each test failed on the code
before issue 12 (commit a2a5f6a).
"""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import threading
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.errors import EXIT_NOTHING_FETCHED, EXIT_USAGE, InputError
from pipeline.io.writer import load_enriched
from pipeline.orchestrator import run_job
from pipeline.simulator import SimulatorConfig, SimulatorServer
from tests.conftest import REPO, SAMPLE_INPUT, fast_config_toml, job_settings
from tests.redis_support import free_port

pytestmark = pytest.mark.integration

DATE = "2025-03-01"
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z ")


def run_args(tmp_path: Path, base_url: str, *extra: str) -> list[str]:
    return [
        "run",
        "--input", str(SAMPLE_INPUT),
        "--output", str(tmp_path / "out"),
        "--state-dir", str(tmp_path / "state"),
        "--base-url", base_url,
        "--date", DATE,
        "--config", str(fast_config_toml(tmp_path / "fast.toml")),
        "--no-progress",
        *extra,
    ]  # fmt: skip


def tracks_partition(tmp_path: Path) -> Path:
    return tmp_path / "out" / "tracks" / f"date={DATE}"


# -- terminal and logs --------------------------------------------------------------------


def test_log_lines_carry_a_utc_timestamp_with_its_zone(
    tmp_path: Path, simulator: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(run_args(tmp_path, simulator.url)) == 0
    logged = [line for line in capsys.readouterr().err.splitlines() if " INFO " in line]
    assert logged
    assert all(ISO_UTC.match(line) for line in logged), logged[:3]


def test_log_format_json_is_one_utc_object_per_line(
    tmp_path: Path, simulator: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*run_args(tmp_path, simulator.url), "--log-format", "json"]) == 0
    err = capsys.readouterr().err
    objects = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert len(objects) >= 3
    for obj in objects:
        assert {"ts", "level", "logger", "message"} <= set(obj)
        assert obj["ts"].endswith("Z")
    assert any(o["message"].startswith("resolve IDs: done") for o in objects)


def test_each_stage_ends_with_one_finished_line_without_a_terminal(
    tmp_path: Path, simulator: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(run_args(tmp_path, simulator.url)) == 0
    err = capsys.readouterr().err
    for stage in ("resolve IDs", "audio features", "recommendations"):
        finished = [line for line in err.splitlines() if f" {stage}: done, " in line]
        assert len(finished) == 1, (stage, err)


def test_ctrl_c_says_so_in_user_words_and_writes_an_interrupted_report(tmp_path: Path) -> None:
    slow = SimulatorConfig(rate_per_window=100_000, window_s=60.0, burst=0, latency_s=0.3)
    with SimulatorServer(slow) as sim:
        cfg = fast_config_toml(tmp_path / "fast.toml", max_concurrency=1)
        args = run_args(tmp_path, sim.url)
        args[args.index("--config") + 1] = str(cfg)
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", *args],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        for line in proc.stderr:  # the first answered chunk, then Ctrl-C
            if "asking" in line:
                break
        saved = threading.Event()  # a journal entry: one answer recorded in the state dir
        while not saved.wait(0.02):
            if any(p.is_file() for p in (tmp_path / "state").glob("*.journal/*")):
                saved.set()
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == 130
    assert "rate limiter cancelled" not in rest
    last = rest.strip().splitlines()[-1]
    assert "stopped (Ctrl-C or SIGTERM)" in last and "run the same command again" in last
    reports = list((tmp_path / "out" / "runs").glob("*.json"))
    assert len(reports) == 1 and str(reports[0]) in last
    report = json.loads(reports[0].read_text())
    assert report["status"] == "interrupted" and report["exit_code"] == 130
    assert report["saved"]["answers"] >= 1 and report["saved"]["published"] is False
    assert not tracks_partition(tmp_path).exists()


# -- a dead or wrong API ------------------------------------------------------------------


def test_dead_api_fails_fast_with_one_line_naming_the_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code = main(run_args(tmp_path, url))
    err = capsys.readouterr().err
    assert code == EXIT_NOTHING_FETCHED == 7
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert url in errors[0] and "Connection refused" in errors[0]
    assert len(err.splitlines()) < 20, err
    assert not tracks_partition(tmp_path).exists()  # nothing published


def test_exit_7_is_documented_in_run_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert re.search(r"^  7 +nothing could be fetched", out, re.M), out
    readme = (REPO / "README.md").read_text()
    assert re.search(r"^\| 7 \| nothing could be fetched", readme, re.M)


def test_a_good_partition_is_kept_when_a_rerun_fetches_less(tmp_path: Path) -> None:
    with SimulatorServer(SimulatorConfig(rate_per_window=100_000, burst=0)) as good:
        first = run_job(job_settings(tmp_path, good.url), date(2025, 3, 1))
    published = pq.read_table(tmp_path / "output" / "tracks" / "date=2025-03-01")
    ok_before = published.column("status").to_pylist().count("ok")
    assert first.status == "ok" and ok_before > 200

    # The state is lost and the API answers only 5xx: every row would be `failed`.
    broken = SimulatorConfig(rate_per_window=100_000, burst=0, error_rate=1.0)
    with SimulatorServer(broken) as bad:
        settings = job_settings(tmp_path, bad.url, state_dir=tmp_path / "state2", max_retries=1)
        second = run_job(settings, date(2025, 3, 1))
        kept = pq.read_table(tmp_path / "output" / "tracks" / "date=2025-03-01")
        assert kept.column("status").to_pylist().count("ok") == ok_before
        assert second.status == "partial"
        assert second.figures["outputs"]["kept"]["rows_that_would_regress"] == ok_before
        assert second.figures["outputs"]["paths"] == {}
        rejects = load_enriched(tmp_path / "output", date(2025, 3, 1), "rejects")
        assert set(rejects["run_id"]) == {first.run_id}  # kept with the tracks they go with

        forced = run_job(settings.replace(force_publish=True), date(2025, 3, 1))
    replaced = pq.read_table(tmp_path / "output" / "tracks" / "date=2025-03-01")
    assert replaced.column("status").to_pylist().count("ok") == 0
    assert "kept" not in forced.figures["outputs"]


def test_an_all_rejected_input_keeps_a_published_date_and_writes_a_new_ones_rejects(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """Exit 2, and the date's rejects still describe the input of its published tracks; it
    used to replace them with the junk input's, beside the good run's tracks."""
    day = date(2025, 3, 1)
    first = run_job(job_settings(tmp_path, simulator.url), day)
    junk = tmp_path / "junk.parquet"
    pd.DataFrame({"track_id": ["not an id", "x" * 30]}).to_parquet(junk, index=False)
    settings = job_settings(tmp_path, simulator.url, input=junk)
    with pytest.raises(InputError, match="published 2025-03-01 partitions are kept"):
        run_job(settings, day)
    rejects = load_enriched(tmp_path / "output", day, "rejects")
    assert set(rejects["run_id"]) == {first.run_id} and len(rejects) == 3

    with pytest.raises(InputError, match=r"all 2 rows rejected \(reasons in "):
        run_job(settings, date(2025, 3, 2))  # nothing published that day: written
    fresh = load_enriched(tmp_path / "output", date(2025, 3, 2), "rejects")
    assert fresh["row_number"].tolist() == [0, 1] and set(fresh["reason"]) == {"malformed id"}


# -- stage semantics and dry runs ---------------------------------------------------------


def test_stage_features_on_an_empty_state_is_one_usage_error_naming_resolve(
    tmp_path: Path, simulator: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """It used to end ``ok`` with "0 new": a success that fetched nothing."""
    assert main([*run_args(tmp_path, simulator.url), "--stage", "features"]) == EXIT_USAGE
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1, errors
    assert "nothing resolved to fetch features for" in errors[0]
    assert "--stage resolve first" in errors[0]
    assert simulator.counters().get("requests_total", 0) == 0
    assert not (tmp_path / "out" / "runs").exists()


def test_stage_features_on_a_partly_resolved_state_says_what_it_skipped(
    tmp_path: Path, simulator: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    part = tmp_path / "part.parquet"
    pd.read_parquet(SAMPLE_INPUT).head(40).to_parquet(part)
    args = run_args(tmp_path, simulator.url)
    resolve = [*args, "--stage", "resolve"]
    resolve[resolve.index("--input") + 1] = str(part)
    assert main(resolve) == 0
    capsys.readouterr()
    assert main([*args, "--stage", "features"]) == 0
    err = capsys.readouterr().err
    assert "not resolved in the state dir" in err and "--stage resolve first" in err
    reports = [json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*.json")]
    (report,) = [r for r in reports if r["stages"] == ["features"]]
    assert any("--stage resolve first" in note for note in report["notes"])


def test_several_stages_after_one_flag_run_as_the_readme_writes_them(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """README: ``[--stage STAGE ...]``; only ``--stage a --stage b`` used to parse."""
    assert main(run_args(tmp_path, simulator.url, "--stage", "resolve", "features")) == 0
    (path,) = (tmp_path / "out" / "runs").glob("*.json")
    assert json.loads(path.read_text())["stages"] == ["resolve", "features"]
    assert simulator.counters()["by_endpoint"]["audio_features"]["requests"] > 0


def test_demo_takes_an_id_column_as_its_errors_suggest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    songs = tmp_path / "songs.parquet"
    ids = pd.read_parquet(SAMPLE_INPUT)["track_id"].head(3)
    pd.DataFrame({"song": ids}).to_parquet(songs, index=False)
    demo = ["demo", "--input", str(songs), "--output", str(tmp_path / "d"), "--no-progress"]
    assert main(demo) == EXIT_USAGE
    assert "--id-column" in capsys.readouterr().err  # the hint the demo could not take
    assert main([*demo, "--id-column", "song"]) == 0
    assert len(load_enriched(tmp_path / "d" / "output", dataset="tracks")) == 3


def test_features_after_a_resolve_that_found_nothing_succeeds_as_the_dag_runs_them(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """The Airflow DAG runs each stage as its own task: a resolve whose IDs the API does not
    know leaves nothing to fetch, and the features task after it is a success, not exit 2."""
    unknown = tmp_path / "unknown.parquet"
    ids = [f"{n:022d}".replace("0", "Z") for n in range(1, 6)]  # well formed, not in the catalog
    pd.DataFrame({"track_id": ids, "playlist_id": "p1"}).to_parquet(unknown)
    settings = job_settings(tmp_path, simulator.url, input=unknown)
    resolved = run_job(settings, date(2025, 3, 1), stages=("resolve",))
    assert resolved.figures["ids"]["missing"] == len(ids) and resolved.exit_code == 0
    features = run_job(settings, date(2025, 3, 1), stages=("features",))
    assert (features.status, features.exit_code) == ("ok", 0)
    assert features.figures["features"]["asked"] == 0
    assert features.figures["notes"] == []  # not "run --stage resolve first": it just ran


def test_offline_publishes_from_the_state_without_a_request(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    settings = job_settings(tmp_path, simulator.url)
    run_job(settings, date(2025, 3, 1), stages=("resolve", "features"))
    before = simulator.counters()["requests_total"]
    report = run_job(settings, date(2025, 3, 2), stages=("publish",), offline=True)
    assert simulator.counters()["requests_total"] == before
    assert report.figures["outputs"]["track_status"]["ok"] > 200
    assert report.figures["requests"]["total_attempts"] == 0


def test_stage_publish_alone_says_it_fetches_first(
    tmp_path: Path, simulator: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    run_job(job_settings(tmp_path, simulator.url), date(2025, 3, 1), stages=("publish",))
    assert "publish: also ran resolve, features and recommendations" in caplog.text
    assert "--offline" in caplog.text


def test_dry_run_writes_nothing(
    tmp_path: Path, simulator: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*run_args(tmp_path, simulator.url), "--dry-run"]) == 0
    assert "plan for 2025-03-01" in capsys.readouterr().out
    assert not (tmp_path / "state").exists()
    assert not (tmp_path / "out").exists()

    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"track_id": ["nope", "also nope"]}).to_parquet(bad)
    args = run_args(tmp_path, simulator.url, "--dry-run")
    args[args.index("--input") + 1] = str(bad)
    assert main(args) == EXIT_USAGE
    assert not (tmp_path / "out").exists() and not (tmp_path / "state").exists()
    assert simulator.counters().get("requests_total", 0) == 0


# -- report validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "needle"),
    [("a,b\n1,2\n", "not JSON"), ('{"a": 1}', "missing run_id"), ("[1, 2]", "JSON object")],
)
def test_report_rejects_what_is_not_a_run_report_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, needle: str
) -> None:
    path = tmp_path / "thing.json"
    path.write_text(content)
    plot = tmp_path / "plot.png"
    assert main(["report", str(path), "--plot", str(plot)]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and needle in err and str(path) in err
    assert not plot.exists()


def test_run_report_has_a_schema_version_and_report_reads_it(
    tmp_path: Path, simulator: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(run_args(tmp_path, simulator.url)) == 0
    path = next((tmp_path / "out" / "runs").glob("*.json"))
    assert json.loads(path.read_text())["schema_version"] == 1
    capsys.readouterr()
    assert main(["report", str(path)]) == 0
    assert "status=ok" in capsys.readouterr().out


# -- help texts and one-line usage errors -------------------------------------------------


@pytest.mark.parametrize("command", ["demo", "report"])
def test_demo_and_report_have_a_description(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    description = out.split("\n\n")[1]  # usage, blank line, description
    assert not description.lstrip().startswith(("positional", "options")), out
    assert len(description.split()) > 10


def test_simulate_help_shows_defaults_and_run_help_names_env_vars(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    sim = capsys.readouterr().out
    assert "(default 8765)" in sim and "(default 60.0)" in sim
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    run = " ".join(capsys.readouterr().out.split())
    assert "RECCOBEATS_OUTPUT_DIR" in run and "RECCOBEATS_STATE_DIR" in run


@pytest.mark.parametrize(
    ("flag", "value"), [("--date", "2026-13-45"), ("--rate-limit", "fast"), ("--rate-limit", "0")]
)
def test_a_bad_flag_value_prints_one_line(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--input", "x.parquet", flag, value])
    assert exc.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert flag in err and value in err


# -- configuration traps ------------------------------------------------------------------


def test_a_misspelled_env_var_is_warned_about_in_one_line(
    tmp_path: Path,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RECCOBEATS_RATE_LIMT", "5")
    monkeypatch.setenv("RECCOBEATS_LOG_DIR", "/tmp/logs")  # the cron wrapper's: known
    assert main([*run_args(tmp_path, simulator.url), "--dry-run"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "RECCOBEATS_" in line]
    assert len(warnings) == 1, warnings
    assert "RECCOBEATS_RATE_LIMT" in warnings[0] and "RECCOBEATS_RATE_LIMIT" in warnings[0]
