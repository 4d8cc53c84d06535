"""The run report: the JSON a user tunes with, written per run, and its one-screen summary."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from pipeline import load_enriched, run_job
from pipeline.api.metrics import RequestMetrics
from pipeline.config import ttl_config
from pipeline.errors import Cancelled
from pipeline.io.report import build_report, load_report, summary_text
from pipeline.settings import Settings
from pipeline.simulator import SimulatorServer
from pipeline.state.learned_rate import load_learned_rate, save_learned_rate
from pipeline.state.registry import IdRegistry
from pipeline.stop import StopSignal
from tests.conftest import SAMPLE_INPUT, job_settings, requests_by_endpoint, sample_frame
from tests.fakes import FakeClock

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


def test_a_run_exactly_at_the_configured_rate_reports_that_rate_not_more() -> None:
    """4 starts 1 s apart at 60/min hold 3 gaps: the old N / wall read 4 / 3.1 s = 77/min."""
    clock = FakeClock()
    metrics = RequestMetrics(clock=clock)
    for _ in range(4):
        token = metrics.start("tracks")
        clock.advance(0.1)  # the answer's latency
        metrics.finish(token, 200)
        metrics.success("tracks")
        clock.advance(0.9)  # the next start is one configured interval later
    settings = Settings(rate_limit=60)
    figures = build_report(
        base={"run_id": "r", "run_date": RUN_DATE.isoformat(), "status": "ok"},
        settings=settings,
        metrics=metrics.snapshot(),
        limiter={},
        caches={},
        wall_s=3.2,
        api_wall_s=3.1,  # first start to last answer
    )
    assert figures["timing"]["effective_rate_per_min"] == 60.0
    assert "effective 60.0/min (configured 60.0/min)" in summary_text(figures)

    one = RequestMetrics(clock=clock)
    one.start("tracks")  # a single start has no gap: no rate to speak of
    figures = build_report(
        base={"run_id": "r", "run_date": RUN_DATE.isoformat(), "status": "ok"},
        settings=settings,
        metrics=one.snapshot(),
        limiter={},
        caches={},
        wall_s=1.0,
        api_wall_s=1.0,
    )
    assert figures["timing"]["effective_rate_per_min"] is None
    assert "effective n/a (configured 60.0/min)" in summary_text(figures)


def test_a_dry_run_plans_tonights_told_rate_unless_the_limiter_learned_a_lower_one(
    tmp_path: Path, simulator: SimulatorServer
) -> None:
    """A clean night told 120/min saves 120/min: the rate it was told, not one it learned.
    Tonight told 600/min, the plan used to call 120/min "learned" and plan at it."""
    night1 = tmp_path / "night1.parquet"
    pd.read_parquet(SAMPLE_INPUT).head(40).to_parquet(night1)
    run_job(job_settings(tmp_path, simulator.url, input=night1, adaptive=True, rate_limit=120.0),
            RUN_DATE)  # fmt: skip
    state = tmp_path / "state"
    assert load_learned_rate(state) == 120.0  # per 60 s window: saved at its ceiling

    tonight = job_settings(tmp_path, simulator.url, adaptive=True, rate_limit=600.0)
    report = run_job(tonight, RUN_DATE, dry_run=True)
    plan = report.figures["plan"]
    calls = sum(plan["calls_expected"].values())
    assert calls > 0 and plan["learned_rate_per_min"] is None
    assert plan["binding_limit"] == "told rate"
    assert plan["eta_s"] < calls * 60 / 120  # not at last night's told rate
    assert "learned" not in report.summary()

    # 429s held a run at 60/min under its 120/min ceiling: that is learned, and said so
    save_learned_rate(state, 60.0, datetime.now(UTC), ceiling_per_window=120.0)
    report = run_job(tonight, RUN_DATE, dry_run=True)
    plan = report.figures["plan"]
    assert plan["learned_rate_per_min"] == 60.0
    assert plan["binding_limit"] == "learned rate (configured 600/min)"
    assert plan["eta_s"] >= calls * 60 / 60
    assert "ETA at the learned rate 60/min" in report.summary()


def test_an_interrupted_runs_report_counts_the_ids_the_registry_kept(
    tmp_path: Path, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop after the first answered chunk: its mappings are saved, and the report used to
    say "0 known, 0 new -> 0 found" (the stage's tally never reached it)."""
    stop = StopSignal()
    record_found = IdRegistry.record_found

    def then_stop(registry: IdRegistry, mapping: Mapping[str, str]) -> None:
        record_found(registry, mapping)
        if mapping:
            stop.set()  # Ctrl-C, right after the registry kept the first answers

    monkeypatch.setattr(IdRegistry, "record_found", then_stop)
    settings = job_settings(tmp_path, simulator.url, max_concurrency=1)
    with pytest.raises(Cancelled) as stopped:
        run_job(settings, RUN_DATE, cancel=stop)
    report = load_report(Path(str(stopped.value.report_path)))

    ids = sample_frame()["spotify_id"].dropna().unique().tolist()
    kept = IdRegistry(tmp_path / "state", ttl_config(settings)).known(ids, count=False)
    found = int((kept["status"] == "found").sum())
    missing = int((kept["status"] == "missing").sum())
    assert report["status"] == "interrupted" and found > 0
    assert report["ids"] == {
        "distinct": len(ids), "known": 0, "new": len(ids), "found": found, "missing": missing
    }  # fmt: skip
    assert f"{len(ids)} new -> {found} found, {missing} not found" in summary_text(report)
