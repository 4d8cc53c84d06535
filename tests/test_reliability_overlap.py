"""Overlapping runs on one state dir: the second exits clearly (exit 4) or waits
(``--lock-wait``); the state is never corrupted and no registry row is lost.

Two real processes, so the lock is the real ``filelock`` on ``<state>/.lock``. The two
inputs overlap by half, so a run that overwrote the other's registry with its own view
would lose rows.
"""

from __future__ import annotations

import time

import pyarrow.parquet as pq
import pytest

from pipeline.simulator import SimulatorConfig, SimulatorServer
from tests.reliability_support import (
    assert_state_readable,
    catalog_ids,
    run_args,
    run_to_end,
    start,
    write_fast_config,
    write_input,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def slow_sim():
    with SimulatorServer(SimulatorConfig(model="none", latency_s=0.05, seed=2)) as sim:
        yield sim


def _two_inputs(tmp_path):
    ids = catalog_ids(0, 2)[:600]
    a = write_input(tmp_path / "a.parquet", ids[:400])
    b = write_input(tmp_path / "b.parquet", ids[200:])
    return a, b, ids


def _wait_until_running(sim, proc, log):
    deadline = time.monotonic() + 30
    while sim.counters()["requests_total"] == 0:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_second_run_exits_clearly_while_first_holds_the_lock(tmp_path, slow_sim):
    a, b, _ = _two_inputs(tmp_path)
    cfg = write_fast_config(tmp_path / "settings.toml")
    state = tmp_path / "state"
    first = start(run_args(a, tmp_path / "out-a", state, slow_sim.url, cfg), tmp_path / "a.log")
    _wait_until_running(slow_sim, first, tmp_path / "a.log")
    t0 = time.monotonic()
    rc = run_to_end(run_args(b, tmp_path / "out-b", state, slow_sim.url, cfg), tmp_path / "b.log")
    took = time.monotonic() - t0
    assert first.wait(timeout=120) == 0, (tmp_path / "a.log").read_text()
    log_b = (tmp_path / "b.log").read_text()
    assert rc == 4, log_b
    assert took < 10
    assert "another run holds" in log_b and "Traceback" not in log_b
    assert_state_readable(state)
    assert pq.read_table(state / "registry.parquet").num_rows == 400


def test_second_run_waits_with_lock_wait_and_no_row_is_lost(tmp_path, slow_sim):
    a, b, ids = _two_inputs(tmp_path)
    cfg = write_fast_config(tmp_path / "settings.toml")
    state = tmp_path / "state"
    first = start(run_args(a, tmp_path / "out-a", state, slow_sim.url, cfg), tmp_path / "a.log")
    _wait_until_running(slow_sim, first, tmp_path / "a.log")
    second = start(
        run_args(b, tmp_path / "out-b", state, slow_sim.url, cfg, "--lock-wait", "120"),
        tmp_path / "b.log",
    )
    assert first.wait(timeout=120) == 0, (tmp_path / "a.log").read_text()
    assert second.wait(timeout=120) == 0, (tmp_path / "b.log").read_text()
    assert_state_readable(state)
    registry = pq.read_table(state / "registry.parquet").to_pandas()
    assert sorted(registry["spotify_id"]) == sorted(ids)  # 600 = A's 400 + B's new 200
    # B waited for A, then asked only what A had not: 200 new IDs = 5 batch calls.
    tracks_calls = slow_sim.counters()["by_endpoint"]["tracks"]["requests"]
    assert tracks_calls == 10 + 5
