"""The simulator's latency and capacity models (issue 10): lognormal service time, a server that
works on at most K requests at once (the rest queue), and 429s above M concurrent requests.

The HTTP tests run the real simulator over loopback with latencies of tens of milliseconds;
they assert counts and orderings (who was queued, who got 429), never how fast the host is.
"""

from __future__ import annotations

import argparse
import math
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests

from pipeline.simulator import Catalog, SimulatorConfig, SimulatorServer, add_simulate_arguments
from pipeline.simulator.capacity import ServerCapacity
from pipeline.simulator.cli import config_from_args
from pipeline.simulator.faults import FaultInjector


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.fixture(scope="module")
def known(catalog: Catalog) -> list[str]:
    return sorted(catalog.known_spotify_ids)


@contextmanager
def server(catalog: Catalog, **options: Any) -> Iterator[SimulatorServer]:
    options.setdefault("model", "none")
    with SimulatorServer(SimulatorConfig(**options), catalog=catalog) as s:
        yield s


def burst(url: str, n: int) -> list[requests.Response]:
    """``n`` requests released at the same instant (a barrier), one connection each."""
    gate = threading.Barrier(n)
    out: list[requests.Response | None] = [None] * n

    def one(i: int) -> None:
        with requests.Session() as h:
            gate.wait(10)
            out[i] = h.get(url, timeout=30)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(r is not None for r in out)
    return [r for r in out if r is not None]


# ---------------------------------------------------------------------- lognormal latency
def test_lognormal_service_time_has_the_median_and_sigma_asked_for() -> None:
    cfg = SimulatorConfig(latency_median_s=2.0, latency_sigma=0.5, seed=11)
    inj = FaultInjector(cfg)
    delays = [inj.plan().delay_s for _ in range(4000)]
    assert 1.9 < statistics.median(delays) < 2.1
    assert 0.47 < statistics.pstdev(math.log(d) for d in delays) < 0.53
    assert min(delays) > 0


def test_lognormal_is_seeded_and_leaves_the_fault_sequence_alone() -> None:
    def plans(**options: Any) -> list[tuple[float, str | None]]:
        inj = FaultInjector(SimulatorConfig(error_rate=0.3, **options))
        return [(p.delay_s, p.kind) for p in (inj.plan() for _ in range(200))]

    slow = plans(latency_median_s=0.5, seed=5)
    assert slow == plans(latency_median_s=0.5, seed=5)  # same seed, same latencies
    assert slow != plans(latency_median_s=0.5, seed=6)
    assert [k for _, k in slow] == [k for _, k in plans(seed=5)]  # faults unchanged
    assert {d for d, _ in plans(seed=5)} == {0.0}  # off by default
    inj = FaultInjector(SimulatorConfig(latency_median_s=0.5, seed=5))
    first = [inj.plan().delay_s for _ in range(5)]
    inj.reset()
    assert [inj.plan().delay_s for _ in range(5)] == first  # reset replays


def test_a_latency_seed_draws_other_latencies_and_nothing_else() -> None:
    """The matrix's ``--latency-seed``: another draw of a case's latencies, on the same
    catalog and the same fault sequence (one matrix run is one draw per case)."""

    def plans(**options: Any) -> list[tuple[float, str | None]]:
        inj = FaultInjector(SimulatorConfig(error_rate=0.3, latency_median_s=0.5, **options))
        return [(p.delay_s, p.kind) for p in (inj.plan() for _ in range(200))]

    base = plans(seed=5)
    assert plans(seed=5, latency_seed=5) == base  # unset is the seed's own stream
    other = plans(seed=5, latency_seed=1)
    assert [d for d, _ in other] != [d for d, _ in base]
    assert [k for _, k in other] == [k for _, k in base]
    assert plans(seed=9, latency_seed=1) != other  # faults follow the seed
    assert [d for d, _ in plans(seed=9, latency_seed=1)] == [d for d, _ in other]


def test_lognormal_latency_over_loopback(catalog: Catalog, known: list[str]) -> None:
    with server(catalog, latency_median_s=0.02, latency_sigma=0.5, seed=2) as s:
        with requests.Session() as h:
            elapsed = []
            for _ in range(40):
                t0 = time.perf_counter()
                assert h.get(s.url + "/v1/track", params={"ids": known[0]}).ok
                elapsed.append(time.perf_counter() - t0)
        lat = s.counters()["latency"]
    assert lat["served"] == 40
    assert 0.012 < lat["service_median_s"] < 0.035  # 40 draws around a 20 ms median
    assert lat["queue_wait_max_s"] < 0.005  # one at a time: nobody queues
    assert statistics.median(elapsed) >= lat["service_median_s"] * 0.95  # the client waited


# ---------------------------------------------------------------------- parallelism + queue
def test_parallelism_limit_queues_the_rest(catalog: Catalog, known: list[str]) -> None:
    with server(catalog, parallelism=2, latency_s=0.15) as s:
        url = s.url + "/v1/track?ids=" + known[0]
        t0 = time.perf_counter()
        responses = burst(url, 6)
        wall = time.perf_counter() - t0
        c = s.counters()
    assert [r.status_code for r in responses] == [200] * 6  # queued, never rejected
    cap, lat = c["capacity"], c["latency"]
    assert cap["peak_working"] == 2 and cap["peak_queued"] >= 3
    assert cap["working"] == 0 and cap["queued"] == 0
    assert wall >= 3 * 0.15 * 0.95  # 6 requests, 2 at a time, 0.15 s each
    assert lat["served"] == 6
    assert lat["queue_wait_max_s"] >= 2 * 0.15 * 0.9  # the last two waited two rounds
    assert lat["median_s"] > lat["service_median_s"] * 1.5  # loaded vs unloaded
    assert c["peak_in_flight"] == 6 and c["rejected_429"] == 0


def test_unlimited_parallelism_by_default(catalog: Catalog, known: list[str]) -> None:
    with server(catalog, latency_s=0.1) as s:
        burst(s.url + "/v1/track?ids=" + known[0], 5)
        cap = s.counters()["capacity"]
    assert cap["peak_working"] == 5 and cap["peak_queued"] == 0


def test_queue_is_first_come_first_served() -> None:
    cap = ServerCapacity(parallelism=1)
    hold = threading.Event()
    order: list[int] = []
    first = threading.Thread(target=lambda: cap.serve(60.0, hold))  # holds until `hold` is set
    first.start()
    waiters = []
    for i in range(3):
        t = threading.Thread(
            target=lambda i=i: (cap.serve(0.0, threading.Event()), order.append(i))
        )
        t.start()
        waiters.append(t)
        deadline = time.monotonic() + 5
        while cap.snapshot()["queued"] < i + 1 and time.monotonic() < deadline:
            time.sleep(0.001)  # let thread i join the queue before i + 1 starts
    assert cap.snapshot()["queued"] == 3 and cap.snapshot()["working"] == 1
    hold.set()
    for t in (first, *waiters):
        t.join(5)
    assert order == [0, 1, 2]
    assert cap.snapshot()["working"] == 0 and cap.snapshot()["peak_queued"] == 3


def test_close_releases_queued_requests_without_service() -> None:
    cap = ServerCapacity(parallelism=1)
    stop = threading.Event()
    holder = threading.Thread(target=lambda: cap.serve(60.0, stop))
    holder.start()
    served: list[float] = []
    queued = threading.Thread(target=lambda: served.append(cap.serve(60.0, stop).service_s))
    queued.start()
    deadline = time.monotonic() + 5
    while cap.snapshot()["queued"] < 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    cap.close()
    queued.join(5)
    assert served == [0.0] and not queued.is_alive()
    stop.set()
    holder.join(5)
    assert not holder.is_alive()


# ---------------------------------------------------------------------- 429 above M concurrent
def test_max_concurrent_answers_429_to_the_excess(catalog: Catalog, known: list[str]) -> None:
    with server(catalog, max_concurrent=2, latency_s=0.3) as s:
        url = s.url + "/v1/track?ids=" + known[0]
        responses = burst(url, 5)
        codes = sorted(r.status_code for r in responses)
        c = s.counters()
        after = requests.get(url, timeout=10)  # the server is empty again
    assert codes == [200, 200, 429, 429, 429]
    rejected = [r for r in responses if r.status_code == 429]
    assert all(r.headers["Retry-After"] == "1" for r in rejected)
    assert all(r.json()["status"] == 4291 for r in rejected)  # the same body as a rate 429
    assert c["rejected_by_limit"] == {"concurrency": 3}
    assert c["capacity"]["peak_present"] == 2
    assert c["latency"]["served"] == 2  # 429s hold no worker
    assert after.status_code == 200


def test_max_concurrent_counts_queued_requests_too(catalog: Catalog, known: list[str]) -> None:
    # 1 worker + room for 2 more in the queue: the 4th and 5th concurrent requests get 429
    with server(catalog, parallelism=1, max_concurrent=3, latency_s=0.2) as s:
        codes = sorted(r.status_code for r in burst(s.url + "/v1/track?ids=" + known[0], 5))
        cap = s.counters()["capacity"]
    assert codes == [200, 200, 200, 429, 429]
    assert cap["peak_working"] == 1 and cap["peak_queued"] == 2


def test_counters_reset_clears_latency(catalog: Catalog, known: list[str]) -> None:
    with server(catalog, latency_median_s=0.005) as s:
        assert requests.get(s.url + "/v1/track", params={"ids": known[0]}, timeout=10).ok
        assert s.counters()["latency"]["served"] == 1
        s.reset()
        lat = s.counters()["latency"]
    assert lat["served"] == 0 and lat["median_s"] is None


# ---------------------------------------------------------------------- config and CLI
def test_capacity_flags_and_validation(capsys: pytest.CaptureFixture[str]) -> None:
    parser = add_simulate_arguments(argparse.ArgumentParser())
    argv = ["--latency-median", "2", "--latency-sigma", "0.7", "--parallelism", "16"]
    cfg = config_from_args(parser.parse_args([*argv, "--max-concurrent", "20"]))
    assert (cfg.latency_median_s, cfg.latency_sigma, cfg.parallelism, cfg.max_concurrent) == (
        2.0,
        0.7,
        16,
        20,
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--latency-median S", "--parallelism K", "--max-concurrent M"):
        assert flag in text
    assert "(default 0.5)" in text and "(default 0)" in text
    for bad in ({"parallelism": -1}, {"max_concurrent": -2}, {"latency_sigma": -0.1}):
        with pytest.raises(ValueError):
            SimulatorConfig(**bad)
    info = SimulatorServer(SimulatorConfig(parallelism=4, latency_median_s=1.0)).info()
    assert info["capacity"]["parallelism"] == 4 and info["capacity"]["latency_median_s"] == 1.0
