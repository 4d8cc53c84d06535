"""Faults: 10 % 5xx, 5 % malformed JSON, 1 % connection resets, 1-3 s latency spikes and a
429 storm with a 30 s Retry-After, all in one run; then an API that stays down.

The job runs in-process (``run_job``) against the simulator, so the run report can be set
against what the simulator counted: every fault the server injected must appear in the
report, every fault costs exactly one retry (bounded), and every resolvable track is
enriched. The storm is the simulator's ``block`` model switched on part-way through ID
resolution: the request that trips it gets ``Retry-After: 30`` and so does every request
that arrives during the block; the block is switched off again when it ends.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import date

import pyarrow.parquet as pq
import pytest

from pipeline.api.transport import DOWN_AFTER_FAILED_REQUESTS
from pipeline.errors import EXIT_OK, EXIT_PARTIAL
from pipeline.io.writer import load_enriched
from pipeline.orchestrator import run_job
from pipeline.simulator import LimitSpec, RateLimits, SimulatorConfig, SimulatorServer
from pipeline.simulator.faults import FaultInjector
from tests.conftest import job_settings
from tests.reliability_support import catalog_ids, write_input

pytestmark = pytest.mark.integration

RUN_DATE = date(2024, 6, 1)
STORM_S = 30.0


def _storm_at(sim: SimulatorServer, after_tracks_calls: int) -> threading.Thread:
    """Start a 30 s block once ``after_tracks_calls`` ID lookups were served; lift it after."""

    def storm() -> None:
        while sim.counters()["by_endpoint"]["tracks"]["requests"] < after_tracks_calls:
            time.sleep(0.01)
        block = RateLimits(
            LimitSpec(
                model="block",
                rate_per_window=1,
                window_s=3600,
                burst=0,
                block_after=1,
                block_seconds=STORM_S,
            )
        )
        block.check()  # uses the 1-request budget: the next request trips the block
        sim.core.limits = block
        while not block.snapshot()["*"]["blocks"]:
            time.sleep(0.01)
        time.sleep(STORM_S - 0.5)  # a client honouring Retry-After sends nothing before then
        sim.core.limits = RateLimits(LimitSpec(model="none"))

    t = threading.Thread(target=storm, daemon=True)
    t.start()
    return t


def test_faults_and_storm_run_completes_and_report_counts_every_fault(tmp_path):
    config = SimulatorConfig(
        model="none",
        error_rate=0.10,
        malformed_rate=0.05,
        reset_rate=0.01,
        latency_s=0.01,
        spike_probability=0.03,
        spike_s=2.0,
        seed=11,
    )
    with SimulatorServer(config) as sim:
        ids = catalog_ids(0, 11)[:1200]
        inp = write_input(tmp_path / "in.parquet", ids, per_playlist=30)
        settings = job_settings(
            tmp_path,
            sim.url,
            input=inp,
            max_seed_chunks_per_playlist=2,
            backoff_base_s=0.05,
            backoff_max_s=0.5,
            read_timeout_s=10.0,
        )
        storm = _storm_at(sim, after_tracks_calls=10)
        t0 = time.monotonic()
        report = run_job(settings, RUN_DATE, progress=False)
        wall = time.monotonic() - t0
        storm.join(timeout=5)
        served = sim.counters()

    fig = report.figures
    assert report.exit_code == EXIT_OK, fig["failures"]
    assert fig["failures"]["count"] == 0
    assert wall >= STORM_S  # the storm's Retry-After was honoured, not cut short

    # Every fault the server injected is in the report, per endpoint and kind.
    by_ep = fig["requests"]["by_endpoint"]
    totals = {"5xx": 0, "malformed": 0, "resets": 0, "429": 0}
    for ep, seen in served["by_endpoint"].items():
        if not seen["requests"]:
            continue
        mine = by_ep[ep]
        assert mine["attempts"] == seen["requests"], ep
        assert mine["errors"].get("server", 0) == seen["5xx"], ep
        assert mine["errors"].get("malformed", 0) == seen["malformed"], ep
        assert mine["errors"].get("connection", 0) == seen["resets"], ep
        assert mine["status_429"] == seen["429"], ep
        # Bounded: each fault cost exactly one retry, nothing else was retried.
        faults = seen["5xx"] + seen["malformed"] + seen["resets"] + seen["429"]
        assert mine["retries"] == faults, ep
        assert mine["attempts"] == mine["successes"] + faults, ep
        for k in totals:
            totals[k] += seen[k]
    assert totals["5xx"] and totals["malformed"] and totals["429"]
    assert fig["limiter"]["cooldown_seconds"] >= STORM_S - 1

    # Every resolvable track is enriched; unknown ones are "not_found", none "failed".
    tracks = load_enriched(tmp_path / "output", RUN_DATE)
    assert len(tracks) == len(ids)
    assert set(tracks["status"]) <= {"ok", "no_features", "not_found"}
    known = set(sim.catalog.known_spotify_ids)
    assert (tracks["spotify_id"].isin(known) == (tracks["status"] != "not_found")).all()
    print(
        json.dumps(
            {
                "wall_s": round(wall, 1),
                "requests": served["requests_total"],
                "faults": totals,
                "retries": fig["requests"]["retries"],
                "cooldown_s": round(fig["limiter"]["cooldown_seconds"], 1),
            }
        )
    )


def test_api_down_stops_after_retry_budget_and_keeps_what_it_had(tmp_path):
    with SimulatorServer(SimulatorConfig(model="none", latency_s=0.005, seed=5)) as sim:
        ids = catalog_ids(0, 5)[:2000]  # 50 batch calls
        inp = write_input(tmp_path / "in.parquet", ids)
        settings = job_settings(
            tmp_path,
            sim.url,
            input=inp,
            max_retries=3,
            backoff_base_s=0.01,
            backoff_max_s=0.02,
            chunk_concurrency=2,
        )

        def outage() -> None:  # the API goes down for good after 10 ID lookups
            while sim.counters()["by_endpoint"]["tracks"]["requests"] < 10:
                time.sleep(0.002)
            sim.core.faults = FaultInjector(SimulatorConfig(error_rate=1.0, seed=5))

        threading.Thread(target=outage, daemon=True).start()
        report = run_job(settings, RUN_DATE, progress=False)
        served = sim.counters()

    fig = report.figures
    assert report.exit_code == EXIT_PARTIAL
    messages = fig["failures"]["messages"]
    assert any("API unavailable" in m for m in messages), messages
    # Stops after its retry budget: DOWN_AFTER_FAILED_REQUESTS requests in a row spend
    # (3 + 1) attempts each, plus those already in flight (at most the pool's size: the stages
    # overlap, so features and recommendations may be in flight too), then no call is made;
    # not 4 attempts for each of the 50 batch calls and every feature/seed call.
    by_ep = fig["requests"]["by_endpoint"]
    attempts = sum(ep["attempts"] for ep in by_ep.values())
    ok_calls = sum(ep["successes"] for ep in by_ep.values())
    assert attempts == served["requests_total"]
    assert attempts - ok_calls <= (DOWN_AFTER_FAILED_REQUESTS + settings.max_concurrency) * 4
    assert by_ep["tracks"]["attempts"] < 50 * 4
    # What it had is saved: the answers before the outage are in the registry and output.
    tracks = load_enriched(tmp_path / "output", RUN_DATE)
    assert len(tracks) == len(ids)
    answered = tracks["reccobeats_id"].notna() | (tracks["status"] == "not_found")
    assert answered.sum() >= 8 * 40  # at least the calls served before the outage
    registry = pq.read_table(tmp_path / "state" / "registry.parquet")
    assert registry.num_rows == answered.sum()
    assert (tracks["status"] == "failed").sum() >= fig["ids"]["failed"]
    lost = attempts - ok_calls
    print(json.dumps({"api_down_attempts": lost, "failed_ids": fig["ids"]["failed"]}))
