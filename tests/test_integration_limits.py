"""Issue 4 over loopback: the real client + limiter against the simulator's real limits.

Real time here (the limiter sleeps for real); windows are short so the file stays well
under 30 s. The simulator is the judge: its counters see every arrival, 429s included.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from pipeline.api.client import ReccoBeatsClient
from pipeline.api.limiter import RateLimiter
from pipeline.config import limiter_config
from pipeline.settings import ENDPOINTS, EndpointLimit, Settings, load_settings
from pipeline.simulator import Catalog, SimulatorConfig, SimulatorServer
from tests.fakes import run_threads

pytestmark = pytest.mark.integration


def client_settings(base_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "base_url": base_url,
        "min_interval_s": 0.0,
        "endpoint_limits": {name: EndpointLimit() for name in ENDPOINTS},
        "adaptive": False,
        "progress": False,
        "max_retries": 4,
    }
    values.update(overrides)
    return load_settings(values)


def make_client(settings: Settings) -> ReccoBeatsClient:
    return ReccoBeatsClient(settings, RateLimiter(limiter_config(settings)))


def known_ids(catalog: Catalog) -> list[str]:
    return sorted(catalog.known_spotify_ids)


# -- told the server's limit: zero 429s, close to the limit ---------------------------------

RATE = 120  # requests per window, on the simulator and in the client alike
WINDOW_S = 1.0
#: The simulator runs in this process and shares the GIL with the 8 client threads, so the
#: time from the limiter's admission to the server's arrival count varies by up to ~20 ms
#: (measured p99 ~10 ms): the default 0.02 s margin is too tight here. 0.05 s let 95 % of
#: the limit through, but once in a full `make test` (2026-12-03) one arrival of 1,600 came
#: more than 50 ms late and was answered 429; 0.08 s lets 92.6 % through (measured 3 times,
#: also with both cores busy), still above the 90 % asserted.
JITTER_MARGIN_S = 0.08
THREADS = 8
PER_THREAD = 200


def test_told_the_limit_eight_threads_get_no_429_at_over_90_percent_of_it() -> None:
    config = SimulatorConfig(rate_per_window=RATE, window_s=WINDOW_S, burst=0)
    with SimulatorServer(config) as server:
        settings = client_settings(
            server.url,
            rate_limit=RATE * 60 / WINDOW_S,  # per minute, as settings speak
            window_s=WINDOW_S,
            max_concurrency=THREADS,
            jitter_margin_s=JITTER_MARGIN_S,
        )
        client = make_client(settings)
        ids = known_ids(server.catalog)
        total = THREADS * PER_THREAD

        def one(i: int) -> tuple[str, list[str]]:
            sid = ids[i % len(ids)]
            if i % 2:
                return sid, [f.spotify_id for f in client.get_audio_features([sid])]
            return sid, [t.spotify_id for t in client.get_tracks([sid])]

        t0 = time.monotonic()
        try:
            results = run_threads(THREADS, total, one, join_timeout=60)
        finally:
            client.close()
        wall = time.monotonic() - t0
        sim = server.counters()

    for i, (sid, got) in enumerate(results):
        if i % 2 == 0 or server.catalog.has_features(sid):
            assert got == [sid], (i, sid, got)
        else:
            assert got == []
    assert sim["requests_total"] == total  # no retries were needed
    assert sim["rejected_429"] == 0
    assert sim["max_in_window"] <= RATE

    starts = sorted(t for t, *_ in client.metrics.timeline())
    assert len(starts) == total
    # Throughput over whole windows: start k*RATE can only come k windows after start 0.
    k = (total - 1) // RATE
    steady = k * RATE / (starts[k * RATE] - starts[0])
    limit = RATE / WINDOW_S
    print(
        f"\n{total} requests in {wall:.1f}s, 429s={sim['rejected_429']}, "
        f"max_in_window={sim['max_in_window']}/{RATE}, steady rate {steady:.1f}/s "
        f"= {steady / limit:.1%} of the limit"
    )
    assert steady >= 0.9 * limit
    assert steady <= limit * 1.001


# -- identical concurrent requests: one upstream call ---------------------------------------


def test_ten_threads_asking_the_same_thing_make_one_request(catalog: Catalog) -> None:
    config = SimulatorConfig(model="none", latency_s=0.4)
    with SimulatorServer(config, catalog=catalog) as server:
        client = make_client(client_settings(server.url, rate_limit=6000.0))
        a, b = known_ids(catalog)[:2]
        barrier = threading.Barrier(10)

        def ask(i: int) -> list[str]:
            barrier.wait()
            # half of them list the IDs the other way round: still the same request
            return [t.spotify_id for t in client.get_tracks([a, b] if i % 2 else [b, a])]

        try:
            results = run_threads(10, 10, ask)
        finally:
            client.close()
        sim = server.counters()

    assert sim["requests_total"] == 1
    assert sim["by_endpoint"]["tracks"]["requests"] == 1
    assert all(sorted(r) == sorted([a, b]) for r in results)
    assert client.metrics.snapshot()["endpoints"]["tracks"]["dedup_hits"] == 9


# -- configured too high: a 429 pauses every thread, then the run completes ------------------


def test_retry_after_pauses_all_threads_and_the_run_completes(catalog: Catalog) -> None:
    server_rate, window = 10, 2.0
    config = SimulatorConfig(rate_per_window=server_rate, window_s=window, burst=0)
    threads, total = 4, 30
    with SimulatorServer(config, catalog=catalog) as server:
        settings = client_settings(
            server.url,
            rate_limit=2 * server_rate * 60 / window,  # twice what the server allows
            window_s=window,
            max_concurrency=threads,
            adaptive=True,  # halves its rate on the 429: exactly the server's then
        )
        limiter = RateLimiter(limiter_config(settings))
        client = ReccoBeatsClient(settings, limiter)
        ids = known_ids(catalog)

        def one(i: int) -> list[str]:
            return [t.spotify_id for t in client.get_tracks([ids[i]])]

        try:
            results = run_threads(threads, total, one, join_timeout=60)
        finally:
            client.close()
        sim = server.counters()

    assert results == [[ids[i]] for i in range(total)]  # completed, every answer right
    n429 = sim["rejected_429"]
    assert 1 <= n429 <= threads  # only requests already in flight when the first came back
    assert sim["requests_total"] == total + n429  # each 429 retried once, successfully
    snap = client.metrics.snapshot()["endpoints"]["tracks"]
    assert snap["status_429"] == n429
    assert limiter.stats()["cooldown_seconds"] >= 1.0

    # Retry-After is at least 1 s: after a 429 came back, no thread started for ~that long.
    timeline = client.metrics.timeline()
    for start, _ep, status, latency in timeline:
        if status != 429:
            continue
        back = start + latency
        early = [s for s, *_ in timeline if back + 0.05 < s < back + 0.95]
        assert early == [], f"requests started during the cool-down after a 429 at {back:.2f}"
