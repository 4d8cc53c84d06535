"""Issue 11, class 2: every request and every run ends by itself.

The real simulator over loopback trickles every body one byte at a time (each byte well
inside the read timeout, so socket timeouts never fire). A request must still end at its
total deadline (``request_deadline_s``), and SIGTERM/SIGINT must end the process within a
few seconds while requests are in flight (they are abandoned; their IDs are asked next
run).
"""

from __future__ import annotations

import signal
import time

import pytest

from pipeline.simulator import SimulatorConfig, SimulatorServer
from tests.conftest import FAST_SIM_RATE
from tests.reliability_support import (
    catalog_ids,
    run_args,
    run_to_end,
    start,
    write_fast_config,
    write_input,
)

pytestmark = pytest.mark.integration

STOP_BUDGET_S = 5.0


@pytest.fixture
def trickling():
    config = SimulatorConfig(rate_per_window=FAST_SIM_RATE, burst=0, trickle_s_per_byte=0.5)
    with SimulatorServer(config) as sim:
        yield sim


def test_a_trickling_body_ends_at_the_total_deadline(tmp_path, trickling):
    inp = write_input(tmp_path / "in.parquet", catalog_ids(0, 0)[:40])
    cfg = write_fast_config(
        tmp_path / "settings.toml", request_deadline_s=1.0, max_retries=1, read_timeout_s=5.0,
        recommendations=False,
    )  # fmt: skip
    t0 = time.monotonic()
    rc = run_to_end(
        run_args(inp, tmp_path / "out", tmp_path / "state", trickling.url, cfg),
        tmp_path / "log",
        timeout=60,
    )
    took = time.monotonic() - t0
    log = (tmp_path / "log").read_text()
    assert rc in (3, 7), log  # failed requests, not a hang and not a crash
    assert "Traceback" not in log
    assert took < 20, f"a trickling body held the run for {took:.1f}s"
    assert "deadline" in log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_the_run_while_requests_are_in_flight(tmp_path, trickling, sig):
    inp = write_input(tmp_path / "in.parquet", catalog_ids(0, 0)[:160])
    cfg = write_fast_config(tmp_path / "settings.toml")  # default deadline: far away
    proc = start(
        run_args(inp, tmp_path / "out", tmp_path / "state", trickling.url, cfg), tmp_path / "log"
    )
    try:
        deadline = time.monotonic() + 30
        while trickling.counters()["requests_total"] < 1:
            assert proc.poll() is None, (tmp_path / "log").read_text()
            assert time.monotonic() < deadline, "no request reached the simulator"
            time.sleep(0.02)
        time.sleep(1.0)  # the requests are now reading their trickling bodies
        t0 = time.monotonic()
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
        stop_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = (tmp_path / "log").read_text()
    assert stop_s <= STOP_BUDGET_S, f"took {stop_s:.1f}s to stop: {log[-2000:]}"
    assert rc == 130, log
    assert "Traceback" not in log
