"""The run report: the JSON a user tunes with, written per run, and its one-screen summary."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from pipeline import load_enriched, run_job
from pipeline.io.report import load_report
from pipeline.simulator import SimulatorServer
from tests.conftest import job_settings, requests_by_endpoint

RUN_DATE = date(2025, 6, 1)


def test_report_file_matches_what_the_server_saw_and_the_summary_says_so(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    report = run_job(job_settings(tmp_path, simulator.url), RUN_DATE)
    assert report.report_path is not None and report.report_path.is_file()
    on_disk = load_report(report.report_path)
    assert on_disk["run_id"] == report.run_id
    assert (on_disk["status"], on_disk["exit_code"]) == ("ok", 0)

    seen = requests_by_endpoint(simulator)
    by_ep = on_disk["requests"]["by_endpoint"]
    assert {ep: by_ep[ep]["attempts"] for ep in by_ep} == {ep: seen[ep] for ep in by_ep}
    assert sum(seen.values()) == sum(by_ep[ep]["attempts"] for ep in by_ep) > 0

    statuses = load_enriched(tmp_path / "output", date=RUN_DATE)["status"].value_counts()
    assert on_disk["outputs"]["track_status"] == {k: int(v) for k, v in statuses.items()}

    text = report.summary()
    assert f"run {report.run_id}" in text and "status=ok" in text
    assert f"rows: {on_disk['rows']['valid']} valid" in text


def test_a_warm_rerun_reports_zero_requests_and_full_hit_rates(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    settings = job_settings(tmp_path, simulator.url)
    run_job(settings, RUN_DATE)
    warm = run_job(settings, RUN_DATE).figures
    by_ep = warm["requests"]["by_endpoint"]
    assert sum(ep["attempts"] for ep in by_ep.values()) == 0
    json.dumps(warm)  # the whole report is JSON-able
    assert "registry 100%" in run_job(settings, RUN_DATE).summary()
