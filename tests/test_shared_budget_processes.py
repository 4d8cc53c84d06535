"""Issue 13's must-show, with real processes: several CLI runs spending ONE budget in Redis.

Every job is a separate ``python -m pipeline run`` (own input, state dir, output dir) against
one in-process simulator that enforces the limit globally; a real redis-server holds the
budget. The simulator's counters are the judge. Time is compressed (windows of 1 s, leases
of 2 s) so the file stays around a minute; the wall-clock figure against C/R is printed by
tests/benchmarks/shared_budget.py, not asserted here.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import redis

from pipeline.errors import EXIT_OK, EXIT_SHARED_BUDGET
from pipeline.simulator import SimulatorConfig, SimulatorServer
from tests.redis_support import RedisServer
from tests.reliability_support import (
    assert_outputs_readable,
    assert_state_readable,
    read_dataset,
)
from tests.shared_budget_support import CounterSampler, FleetSpec, Job, make_jobs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

R = 20  # starts per window, at the simulator and in the shared budget alike
WINDOW_S = 1.0
JOBS = 4
IDS_PER_JOB = 40  # chunks of 2: ~40 requests per job, ~160 in all (~8 windows of work)


def run_fleet(jobs: list[Job], timeout: float = 180) -> list[int]:
    for job in jobs:
        job.start()
    return [job.wait(timeout) for job in jobs]


def budget_sim(**overrides: object) -> SimulatorConfig:
    values: dict[str, object] = {
        "rate_per_window": R,
        "window_s": WINDOW_S,
        "burst": 0,
        "latency_s": 0.02,
    }
    values.update(overrides)
    return SimulatorConfig(**values)  # type: ignore[arg-type]


#: Admission (Redis) and arrival (simulator) differ by scheduling delays of 5 processes on 2
#: cores: ~10 ms idle, but 100+ ms were seen while other suites loaded the machine (load 6.5:
#: one window of 21/20 with a 0.1 s margin). The zero-429 tests keep 0.3 s of margin, so a
#: 429 there means the budget leaked, not that the machine was busy; throughput is the
#: benchmark's business (tests/benchmarks/shared_budget.py, 0.1 s on 4 s windows).
ZERO_429_MARGIN_S = 0.3


def test_four_processes_share_one_budget_with_no_429(tmp_path: Path, redis_url: str) -> None:
    with SimulatorServer(budget_sim()) as server:
        spec = FleetSpec(rate_per_window=R, window_s=WINDOW_S, jitter_margin_s=ZERO_429_MARGIN_S)
        jobs = make_jobs(
            tmp_path, server, spec, count=JOBS, ids_per_job=IDS_PER_JOB, redis_url=redis_url
        )
        t0 = time.monotonic()
        codes = run_fleet(jobs)
        wall = time.monotonic() - t0
        sim = server.counters()
    logs = {job.name: job.output_text()[-800:] for job in jobs}
    assert codes == [EXIT_OK] * JOBS, logs
    total = sim["requests_total"]
    print(
        f"\nshared budget: {JOBS} processes, {total} requests, 429s={sim['rejected_429']}, "
        f"max starts in a window {sim['max_in_window']}/{R}, wall {wall:.1f}s "
        f"(C/R = {total / R * WINDOW_S:.1f}s, process start-up included)"
    )
    assert sim["rejected_429"] == 0
    assert sim["max_in_window"] <= R
    assert total >= JOBS * IDS_PER_JOB // 2  # each job did its work (no cache in between)
    for job in jobs:
        tracks = read_dataset(job.output, "tracks")
        assert (tracks["status"] == "ok").sum() > 0


def test_without_the_shared_budget_the_same_fleet_gets_429s(tmp_path: Path) -> None:
    """The reason for the feature: four limiters of R each offer 4R to a server allowing R."""
    with SimulatorServer(budget_sim()) as server:
        spec = FleetSpec(rate_per_window=R, window_s=WINDOW_S)
        jobs = make_jobs(
            tmp_path, server, spec, count=JOBS, ids_per_job=IDS_PER_JOB, redis_url=None
        )
        codes = run_fleet(jobs)
        sim = server.counters()
    print(
        f"\nno shared budget: {JOBS} processes, {sim['requests_total']} requests, "
        f"429s={sim['rejected_429']}, max arrivals in a window {sim['max_in_window']}/{R}, "
        f"exit codes {codes}"
    )
    assert sim["rejected_429"] > 0
    assert sim["max_in_window"] > R


def test_a_retry_after_seen_by_one_process_pauses_all(tmp_path: Path, redis_url: str) -> None:
    """Clients told twice the server's rate: the first 429 (a 5 s block, ``Retry-After: 5``)
    must silence every process until it has passed."""
    block_s = 5.0
    config = budget_sim(model="block", block_after=1, block_seconds=block_s)
    with SimulatorServer(config) as server:
        # Adaptive: the first 429 halves the learned rate of the whole budget (to R), so the
        # fleet finishes after one or two blocks instead of hitting one every few windows.
        spec = FleetSpec(rate_per_window=2 * R, window_s=WINDOW_S, adaptive=True)
        jobs = make_jobs(tmp_path, server, spec, count=JOBS, ids_per_job=30, redis_url=redis_url)
        with CounterSampler(server) as sampler:
            codes = run_fleet(jobs)
        sim = server.counters()
    first = sampler.first(lambda s: s[2] > 0)
    assert first is not None, "no 429 happened: the test did not test anything"
    t429 = first[0]
    # Requests already admitted when the 429 came back may still arrive (a few ms): allow 0.25 s.
    before = sampler.total_at(t429 + 0.25)
    during = sampler.total_at(t429 + block_s - 0.1) - before
    resumed = sampler.total_at(t429 + block_s + 3.0) - sampler.total_at(t429 + block_s - 0.1)
    print(
        f"\n429 at t={t429 - sampler.samples[0][0]:.2f}s: {during} requests started during "
        f"the {block_s:.0f}s Retry-After (all {JOBS} processes), {resumed} in the 3 s after; "
        f"429s in all {sim['rejected_429']}, blocks {sim['blocks_started']}"
    )
    assert during == 0
    assert resumed > 0
    assert all(code in (EXIT_OK, 3) for code in codes), codes
    # The 429 also lowered the rate of the whole budget (the admission caps every process at
    # it: tests/test_shared_budget_backend.py::test_a_learned_rate_caps_every_process).
    with redis.Redis.from_url(redis_url) as r:
        learned = r.hget("reccobeats:budget:{fleet}:learned", "rate")
    assert learned is not None and float(learned) < 2 * R


def test_kill_9_frees_the_slots_within_the_lease(tmp_path: Path, redis_url: str) -> None:
    """A SIGKILLed holder's leases expire: the survivor gets the whole concurrency back."""
    lease_s, slots = 2.0, 4
    ids = 120  # ~240 calls of 0.3 s on 4 slots: the survivor outlives kill + lease
    with SimulatorServer(budget_sim(rate_per_window=10_000, latency_s=0.3)) as server:
        spec = FleetSpec(rate_per_window=10_000, window_s=WINDOW_S, lease_s=lease_s)
        victim, survivor = make_jobs(
            tmp_path, server, spec, count=2, ids_per_job=ids, redis_url=redis_url
        )
        r = redis.Redis.from_url(redis_url)
        leases_key = "reccobeats:budget:{fleet}:leases"

        def holders() -> dict[str, int]:
            now_s, now_us = r.time()
            live = r.zrangebyscore(leases_key, now_s * 1_000_000 + now_us, "+inf")
            out: dict[str, int] = {}
            for member in live:
                pid = member.decode().split(":")[1]
                out[pid] = out.get(pid, 0) + 1
            return out

        victim.start()
        survivor.start()
        assert victim.proc is not None and survivor.proc is not None
        vpid, spid = str(victim.proc.pid), str(survivor.proc.pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # both running, the victim holding slots
            h = holders()
            if h.get(vpid, 0) >= 2 and h.get(spid, 0) >= 1:
                break
            time.sleep(0.01)
        else:
            raise AssertionError(f"never saw both processes hold slots: {holders()}")
        victim.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        victim.wait()
        leaked = holders().get(vpid, 0)
        regained = None
        while time.monotonic() < killed_at + lease_s + 5:
            h = holders()
            if h.get(vpid, 0) == 0 and h.get(spid, 0) == slots:
                regained = time.monotonic() - killed_at
                break
            time.sleep(0.01)
        survivor_code = survivor.wait()
        r.close()
        print(
            f"\nkill -9 with {leaked} slots held: survivor at full concurrency ({slots}) after "
            f"{regained}s (lease {lease_s}s)"
        )
        assert leaked >= 1
        # Leases were renewed at most 0.5 s before the kill, so they expire within lease_s of
        # it; the survivor then needs one slot poll (0.05 s) per slot it takes back.
        assert regained is not None and regained <= lease_s + 0.5
        assert survivor_code == EXIT_OK, survivor.output_text()[-800:]
        # The killed job resumes as today: its state dir is intact and a rerun completes.
        assert_state_readable(victim.state)
        rerun = Job("rerun", victim.input, victim.output, victim.state, tmp_path / "rerun.log",
                    victim.args)  # fmt: skip
        assert rerun.start().wait() == EXIT_OK, rerun.output_text()[-800:]
        tracks = read_dataset(victim.output, "tracks")
        assert len(tracks) == ids


def test_redis_lost_mid_run_stops_every_process(tmp_path: Path, private_redis: RedisServer) -> None:
    with SimulatorServer(budget_sim(rate_per_window=R)) as server:
        spec = FleetSpec(rate_per_window=R, window_s=WINDOW_S)
        jobs = make_jobs(
            tmp_path, server, spec, count=JOBS, ids_per_job=200, redis_url=private_redis.url
        )
        with CounterSampler(server) as sampler:
            for job in jobs:
                job.start()
            deadline = time.monotonic() + 60
            while server.counters()["requests_total"] < 3 * R and time.monotonic() < deadline:
                time.sleep(0.01)  # every process under way (~3 windows of requests)
            private_redis.stop()
            stopped_at = time.monotonic()
            codes = [job.wait(timeout=30) for job in jobs]
            exited = max(job.ended_at or 0.0 for job in jobs) - stopped_at
            time.sleep(0.5)
        last = sampler.last_arrival_after(stopped_at)
        quiet_after = 0.0 if last is None else last - stopped_at
        sim = server.counters()
    print(
        f"\nRedis stopped: last request arrived {quiet_after:.2f}s later, all {JOBS} processes "
        f"exited within {exited:.2f}s, codes {codes}; {sim['requests_total']} requests in all"
    )
    assert codes == [EXIT_SHARED_BUDGET] * JOBS, [job.output_text()[-500:] for job in jobs]
    assert quiet_after <= 1.5
    for job in jobs:
        text = job.output_text()
        assert "shared budget lost" in text, text[-800:]
        assert "Traceback" not in text, text[-2000:]
        assert_state_readable(job.state)
        assert_outputs_readable(job.output)


@pytest.mark.soak
@pytest.mark.timeout(900)
def test_soak_eight_processes_longer_windows_no_429(tmp_path: Path, redis_url: str) -> None:
    """The long variant: 8 processes, 5 s windows, ~1,600 requests (~2.5 min)."""
    rate, window = 50, 5.0
    with SimulatorServer(budget_sim(rate_per_window=rate, window_s=window)) as server:
        spec = FleetSpec(
            rate_per_window=rate,
            window_s=window,
            max_concurrency=6,
            jitter_margin_s=ZERO_429_MARGIN_S,
        )
        jobs = make_jobs(tmp_path, server, spec, count=8, ids_per_job=200, redis_url=redis_url)
        codes = run_fleet(jobs, timeout=800)
        sim = server.counters()
    print(
        f"\nsoak: 8 processes, {sim['requests_total']} requests, 429s={sim['rejected_429']}, "
        f"max starts in a window {sim['max_in_window']}/{rate}"
    )
    assert codes == [EXIT_OK] * 8
    assert sim["rejected_429"] == 0
    assert sim["max_in_window"] <= rate
