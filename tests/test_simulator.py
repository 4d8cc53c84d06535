"""The bundled ReccoBeats simulator: catalog, pure limit logic (fake clock), and the HTTP server
over loopback (shapes, codes, 429s, faults, counters)."""

from __future__ import annotations

import argparse
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
import requests

from pipeline.simulator import (
    FEATURE_NAMES,
    Catalog,
    LimitSpec,
    RateLimits,
    SimulatorConfig,
    SimulatorServer,
    add_simulate_arguments,
    catalog_loader,
    simulate_from_args,
)
from pipeline.simulator.catalog import id_sort_key
from pipeline.simulator.cli import config_from_args
from pipeline.simulator.limits import Decision

TRACK_KEYS = {
    "id",
    "trackTitle",
    "artists",
    "durationMs",
    "isrc",
    "ean",
    "upc",
    "href",
    "availableCountries",
    "popularity",
}
FEATURE_KEYS = {"id", "href", "isrc", *FEATURE_NAMES}
ERROR_KEYS = {"timestamp", "error", "path", "status"}
PAGE_KEYS = {"content", "page", "size", "totalElements", "totalPages"}
UUID_V4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
BASE62_22 = re.compile(r"^[0-9A-Za-z]{22}$")
UNKNOWN_ID = "kY9pF34Qy6nB3Wwd25rq4f"  # well-formed, not in the catalog


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.fixture(scope="module")
def sim(catalog: Catalog) -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorConfig(model="none"), catalog=catalog) as server:
        yield server


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@contextmanager
def server(catalog: Catalog, **options: Any) -> Iterator[SimulatorServer]:
    with SimulatorServer(SimulatorConfig(**options), catalog=catalog) as s:
        yield s


def get(s: SimulatorServer, path: str, **params: Any) -> requests.Response:
    return requests.get(s.url + path, params=params, timeout=10)


@pytest.fixture(scope="module")
def known(catalog: Catalog) -> list[str]:
    return sorted(catalog.known_spotify_ids)


@pytest.fixture(scope="module")
def with_features(catalog: Catalog, known: list[str]) -> list[str]:
    return [sid for sid in known if catalog.has_features(sid)]


@pytest.fixture(scope="module")
def without_features(catalog: Catalog, known: list[str]) -> list[str]:
    return [sid for sid in known if not catalog.has_features(sid)]


def assert_error(body: dict[str, Any], code: int, path: str) -> None:
    assert set(body) == ERROR_KEYS
    assert body["status"] == code
    assert body["path"] == f"uri={path}"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", body["timestamp"])


# ---------------------------------------------------------------------- catalog
def test_catalog_fractions_and_determinism(catalog: Catalog) -> None:
    rows = len(catalog.all_spotify_ids)
    assert rows == 5353
    assert 0.02 < len(catalog.unknown_spotify_ids) / rows < 0.06
    assert catalog.known_spotify_ids.isdisjoint(catalog.unknown_spotify_ids)
    no_feat = sum(1 for t in catalog.tracks() if t.features is None)
    assert 0.03 < no_feat / len(catalog) < 0.07
    uncached = Catalog.load(unknown_fraction=0.0401)  # a fresh build, not the memoised one
    t = catalog.track(next(iter(sorted(catalog.known_spotify_ids))))
    assert t is not None and uncached.track(t.spotify_id) == t
    assert UUID_V4.match(t.reccobeats_id)
    assert re.match(r"^[A-Z]{2}[A-Z0-9]{3}\d{7}$", t.isrc)
    assert BASE62_22.match(t.artist.spotify_id)
    assert catalog.track(UNKNOWN_ID) is None and catalog.features(UNKNOWN_ID) is None


def test_the_bundled_catalog_is_parsed_once_per_process() -> None:
    """Every simulator a test or benchmark starts builds a catalog; the gunzip + parse of the
    bundled rows happens once. (A timed assertion stood here and failed under load: speed
    belongs to the benchmarks, not to unit tests.)"""
    catalog_loader.bundled_rows.cache_clear()
    first = Catalog.load(no_features_fraction=0.0501)
    second = Catalog.load(no_features_fraction=0.0502)
    info = catalog_loader.bundled_rows.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    assert len(first) == len(second) > 0


def test_catalog_synthetic_extension(catalog: Catalog) -> None:
    big = Catalog.load(extra_synthetic=10_000, seed=7)
    assert len(big.all_spotify_ids) == 15_353
    assert len(big) > 14_000
    extra = big.all_spotify_ids[5353:]
    assert all(BASE62_22.match(s) for s in extra)
    assert extra[:5] == Catalog.load(extra_synthetic=10_000, seed=7).all_spotify_ids[5353:5358]
    assert extra[:5] != Catalog.load(extra_synthetic=10, seed=8).all_spotify_ids[5353:5358]
    assert any(big.has_features(s) for s in extra)


# ---------------------------------------------------------------------- limits (fake clock)
def test_budget_burst_and_sliding_window_exact() -> None:
    clock = FakeClock(0.0)
    lim = RateLimits(LimitSpec(model="budget", rate_per_window=10, window_s=60, burst=3), clock)
    admitted: list[float] = []
    rejected: list[Decision] = []
    for step in range(400):  # a greedy client: one attempt every 0.25 s for 100 s
        clock.t = step * 0.25
        d = lim.check("tracks")
        (admitted.append(clock.t) if d.allowed else rejected.append(d))
    # 3 per second (burst) until the budget of 10 is spent, then nothing until t=60
    assert admitted[:10] == [0.0, 0.25, 0.5, 1.0, 1.25, 1.5, 2.0, 2.25, 2.5, 3.0]
    assert admitted[10:13] == [60.0, 60.25, 60.5]
    assert len(admitted) == 20
    for i in range(len(admitted)):
        assert sum(1 for t in admitted if admitted[i] <= t < admitted[i] + 60) <= 10
    first = rejected[0]  # t=0.75: burst full, the t=0 start leaves the 1 s window at 1.0
    assert (first.reason, first.retry_after_s, first.retry_after_header) == ("burst", 0.25, 1)


def test_budget_retry_after_is_when_oldest_leaves_window() -> None:
    clock = FakeClock(0.0)
    lim = RateLimits(LimitSpec(rate_per_window=4, window_s=60, burst=0), clock)
    for t in (0.0, 10.0, 20.0, 30.0):
        clock.t = t
        assert lim.check().allowed
    clock.t = 45.5
    d = lim.check()
    assert not d.allowed and d.reason == "window"
    assert d.retry_after_s == pytest.approx(14.5) and d.retry_after_header == 15
    clock.t = 60.0  # a fixed per-minute counter would reset here; a sliding window admits one
    assert lim.check().allowed
    assert not lim.check().allowed
    clock.t = 70.0
    assert lim.check().allowed


def test_fractional_rates() -> None:
    clock = FakeClock(0.0)
    lim = RateLimits(LimitSpec(rate_per_window=300.0, window_s=60, burst=5), clock)
    ok = 0
    for step in range(100):  # a client pacing itself at exactly 0.2 s never sees a 429
        clock.t = step * 0.2
        ok += lim.check().allowed
    assert ok == 100
    half = RateLimits(LimitSpec(model="spacing", rate_per_window=7.5, window_s=60), clock)
    assert half.check().allowed and half.check().retry_after_header == 8


def test_spacing_model_exact() -> None:
    clock = FakeClock(0.0)
    lim = RateLimits(LimitSpec(model="spacing", rate_per_window=6, window_s=60), clock)
    assert lim.check().allowed
    clock.t = 3.0
    d = lim.check()
    assert (d.allowed, d.reason, d.retry_after_s, d.retry_after_header) == (
        False,
        "spacing",
        7.0,
        7,
    )
    clock.t = 10.0
    assert lim.check().allowed
    clock.t = 19.99
    assert lim.check().retry_after_header == 1
    clock.t = 20.0
    assert lim.check().allowed
    # a greedy client polling every 0.1 s for 60 s gets exactly 6
    clock2 = FakeClock(0.0)
    lim2 = RateLimits(LimitSpec(model="spacing", rate_per_window=6, window_s=60), clock2)
    ok = 0
    for step in range(600):
        clock2.t = step * 0.1
        ok += lim2.check().allowed
    assert ok == 6


def test_block_model_exact() -> None:
    clock = FakeClock(0.0)
    spec = LimitSpec(
        model="block", rate_per_window=2, window_s=60, burst=0, block_after=3, block_seconds=30
    )
    lim = RateLimits(spec, clock)
    assert lim.check().allowed and lim.check().allowed
    clock.t = 1.0
    assert lim.check().reason == "window"
    clock.t = 2.0
    assert lim.check().retry_after_header == 58
    clock.t = 3.0
    d = lim.check()  # the 3rd 429 within the window starts the block
    assert (d.allowed, d.reason, d.block_started, d.retry_after_header) == (
        False,
        "blocked",
        True,
        30,
    )
    clock.t = 10.0
    d = lim.check()
    assert (d.reason, d.retry_after_header, d.block_started) == ("blocked", 23, False)
    clock.t = 33.0  # block over; the window is still full (starts at t=0 leave at 60)
    d = lim.check()
    assert (d.reason, d.retry_after_header) == ("window", 27)
    clock.t = 60.0
    assert lim.check().allowed
    assert lim.snapshot()["*"]["blocks"] == 1


def test_rejected_requests_count_only_when_asked() -> None:
    for count_rejected, allowed_at_10 in ((False, True), (True, False)):
        clock = FakeClock(0.0)
        spec = LimitSpec(rate_per_window=2, window_s=10, burst=0, count_rejected=count_rejected)
        lim = RateLimits(spec, clock)
        assert lim.check().allowed and lim.check().allowed
        clock.t = 5.0
        assert not lim.check().allowed
        clock.t = 6.0
        d = lim.check()
        assert d.retry_after_s == pytest.approx(9.0 if count_rejected else 4.0)
        clock.t = 10.0
        assert lim.check().allowed is allowed_at_10


def test_per_endpoint_and_none_and_reset() -> None:
    clock = FakeClock()
    lim = RateLimits(LimitSpec(rate_per_window=1, burst=0, per_endpoint=True), clock)
    assert lim.check("tracks").allowed and lim.check("audio_features").allowed
    assert not lim.check("tracks").allowed
    lim.reset()
    assert lim.check("tracks").allowed
    glob = RateLimits(LimitSpec(rate_per_window=1, burst=0), clock)
    assert glob.check("tracks").allowed and not glob.check("audio_features").allowed
    free = RateLimits(LimitSpec(model="none", rate_per_window=1), clock)
    assert all(free.check().allowed for _ in range(100))
    with pytest.raises(ValueError):
        LimitSpec(model="leaky")


# ---------------------------------------------------------------------- batch endpoints
def test_tracks_shape_unknown_omitted_and_order(
    sim: SimulatorServer, catalog: Catalog, known: list[str], http: requests.Session
) -> None:
    picked = known[::400][:10]
    ask = [*reversed(picked), UNKNOWN_ID, "not-an-id!", "spotify:track:x"]
    r = http.get(sim.url + "/v1/track", params={"ids": ",".join(ask)})
    assert r.status_code == 200 and r.headers["X-ReccoBeats-Simulator"] == "1"
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"content"}
    items = body["content"]
    got = [i["href"].rsplit("/", 1)[1] for i in items]
    assert got == sorted(picked, key=id_sort_key) and got != ask[: len(picked)]
    for item in items:
        assert set(item) == TRACK_KEYS
        t = catalog.track(item["href"].rsplit("/", 1)[1])
        assert t is not None
        assert item["id"] == t.reccobeats_id and UUID_V4.match(item["id"])
        assert item["trackTitle"] == t.title and item["durationMs"] == t.duration_ms
        assert item["ean"] is None and item["upc"] is None
        assert isinstance(item["popularity"], int) and isinstance(item["availableCountries"], str)
        (artist,) = item["artists"]
        assert set(artist) == {"id", "name", "href"}
        assert artist["href"] == f"https://open.spotify.com/artist/{t.artist.spotify_id}"


def test_tracks_accepts_repeated_ids_uuids_and_isrcs(
    sim: SimulatorServer, catalog: Catalog, known: list[str]
) -> None:
    a, b, c = (catalog.track(s) for s in known[10:13])
    assert a and b and c
    r = requests.get(
        sim.url + "/v1/track",
        params=[("ids", a.spotify_id), ("ids", b.reccobeats_id.upper()), ("ids", c.isrc)],
        timeout=10,
    )
    got = {i["href"].rsplit("/", 1)[1] for i in r.json()["content"]}
    assert {a.spotify_id, b.spotify_id, c.spotify_id} <= got
    lower = get(sim, "/v1/track", ids=c.isrc.lower()).json()["content"]
    assert lower == []  # lower-case ISRCs never match, as on the real API


def test_audio_features_shape_and_missing_features(
    sim: SimulatorServer, catalog: Catalog, with_features: list[str], without_features: list[str]
) -> None:
    ask = [*with_features[:3], without_features[0], UNKNOWN_ID]
    items = get(sim, "/v1/audio-features", ids=",".join(ask)).json()["content"]
    assert [i["href"].rsplit("/", 1)[1] for i in items] == sorted(
        with_features[:3], key=id_sort_key
    )
    for item in items:
        assert set(item) == FEATURE_KEYS
        sid = item["href"].rsplit("/", 1)[1]
        t = catalog.track(sid)
        assert t and t.features and item["id"] == t.reccobeats_id
        assert item["id"] != sid and item["isrc"] == t.isrc
        assert {k: item[k] for k in FEATURE_NAMES} == t.features.as_dict()
        assert isinstance(item["key"], int) and isinstance(item["mode"], int)


def test_all_unknown_batch_modes(catalog: Catalog) -> None:
    with server(catalog, model="none") as s:
        r = get(s, "/v1/audio-features", ids=UNKNOWN_ID)
        assert (r.status_code, r.json()) == (200, {"content": []})
    with server(catalog, model="none", all_unknown_status=404) as s:
        r = get(s, "/v1/track", ids=f"{UNKNOWN_ID},junk")
        assert r.status_code == 404
        assert_error(r.json(), 4041, "/v1/track")


def test_id_count_limits(
    sim: SimulatorServer, catalog: Catalog, known: list[str], http: requests.Session
) -> None:
    r = http.get(sim.url + "/v1/track", params={"ids": ",".join(known[:41])})
    assert r.status_code == 400
    assert r.json() == {
        "status": 4004,
        "errors": [{"path": "getTracks.ids", "message": "size must be between 1 and 40"}],
    }
    assert http.get(sim.url + "/v1/audio-features", params={"ids": ",".join(known[:40])}).ok
    for params in ({}, {"ids": ""}):
        r = http.get(sim.url + "/v1/track", params=params)
        assert r.status_code == 400
        assert_error(r.json(), 4001, "/v1/track")
    with server(catalog, model="none", over_max_ids="truncate", max_ids=5) as s:
        ask = [UNKNOWN_ID] * 5 + [known[0]]  # the known ID is the 6th: silently dropped
        assert get(s, "/v1/track", ids=",".join(ask)).json() == {"content": []}


# ---------------------------------------------------------------------- single-track paths
def test_single_track_paths(
    sim: SimulatorServer, catalog: Catalog, with_features: list[str], without_features: list[str]
) -> None:
    t = catalog.track(with_features[0])
    assert t
    r = get(sim, f"/v1/track/{t.reccobeats_id}")
    assert r.status_code == 200 and set(r.json()) == TRACK_KEYS
    r = get(sim, f"/v1/track/{t.reccobeats_id}/audio-features")
    assert r.status_code == 200 and set(r.json()) == FEATURE_KEYS
    for path in (
        f"/v1/track/{t.spotify_id}",  # a Spotify ID is not accepted on single paths
        f"/v1/track/{t.spotify_id}/audio-features",
        f"/v1/track/{catalog.track(without_features[0]).reccobeats_id}/audio-features",  # type: ignore[union-attr]
        "/v1/track/00000000-0000-4000-8000-000000000000",
    ):
        r = get(sim, path)
        assert r.status_code == 404, path
        assert_error(r.json(), 4041, path)


def test_unknown_path_and_header(sim: SimulatorServer) -> None:
    r = get(sim, "/v1/nothing/here")
    assert r.status_code == 404 and r.headers["X-ReccoBeats-Simulator"] == "1"
    assert_error(r.json(), 4042, "/v1/nothing/here")
    info = get(sim, "/__sim/info")
    assert info.headers["X-ReccoBeats-Simulator"] == "1"
    assert info.json()["simulator"] is True and info.json()["catalog_size"] == len(sim.catalog)


# ---------------------------------------------------------------------- recommendation
def test_recommendation(sim: SimulatorServer, catalog: Catalog, with_features: list[str]) -> None:
    seeds = with_features[100:102]
    seed_uuid = catalog.track(seeds[1]).reccobeats_id  # type: ignore[union-attr]
    r = get(sim, "/v1/track/recommendation", seeds=f"{seeds[0]},{seed_uuid}", size=15)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"content"} and len(body["content"]) == 15
    got = [i["href"].rsplit("/", 1)[1] for i in body["content"]]
    assert got == [t.spotify_id for t in catalog.recommend(seeds, 15)]
    assert not set(got) & set(seeds)
    assert all(set(i) == TRACK_KEYS for i in body["content"])
    again = get(sim, "/v1/track/recommendation", seeds=f"{seeds[0]},{seed_uuid}", size=15)
    assert again.json() == body  # deterministic
    targeted = get(sim, "/v1/track/recommendation", seeds=seeds[0], size=5, energy=0.95)
    assert targeted.status_code == 200 and len(targeted.json()["content"]) == 5


def test_recommendation_validation(sim: SimulatorServer, with_features: list[str]) -> None:
    path = "/v1/track/recommendation"
    r = get(sim, path, seeds=with_features[0], size=101)
    assert r.status_code == 400
    assert r.json() == {
        "status": 4004,
        "errors": [
            {"path": "getRecommendation.size", "message": "must be less than or equal to 100"}
        ],
    }
    r = get(sim, path, seeds=with_features[0], size=0)
    assert r.status_code == 400
    assert_error(r.json(), 4002, path)
    assert r.json()["error"] == "Size must be a greater than zero"
    r = get(sim, path, seeds=",".join(with_features[:6]), size=10)
    assert r.status_code == 400 and r.json()["errors"][0]["path"] == "getRecommendation.seeds"
    r = get(sim, path, seeds=with_features[0], size=10, energy=1.5)
    assert r.status_code == 400 and r.json()["status"] == 4004
    r = get(sim, path, size=10)
    assert r.status_code == 400 and r.json()["status"] == 4001
    r = get(sim, path, seeds=with_features[0], size="ten")
    assert r.status_code == 400 and r.json()["status"] == 4002


# ---------------------------------------------------------------------- artists
def test_artist_search_and_tracks(sim: SimulatorServer, catalog: Catalog) -> None:
    r = get(sim, "/v1/artist/search", searchText="artist 1")
    body = r.json()
    assert r.status_code == 200 and set(body) == PAGE_KEYS
    expected = catalog.search_artists("artist 1")
    assert (body["page"], body["size"], body["totalElements"]) == (0, 25, len(expected))
    assert body["totalPages"] == -(-len(expected) // 25)
    assert [a["id"] for a in body["content"]] == [a.reccobeats_id for a in expected[:25]]
    assert all(set(a) == {"id", "name", "href"} for a in body["content"])
    page2 = get(sim, "/v1/artist/search", searchText="artist 1", page=2, size=50).json()
    assert [a["id"] for a in page2["content"]] == [a.reccobeats_id for a in expected[100:150]]

    artist = expected[0]
    tracks = catalog.artist_tracks(artist.reccobeats_id)
    assert tracks
    r = get(sim, f"/v1/artist/{artist.reccobeats_id}/track", size=2)
    body = r.json()
    assert set(body) == PAGE_KEYS and body["totalElements"] == len(tracks)
    assert [i["id"] for i in body["content"]] == [t.reccobeats_id for t in tracks[:2]]
    missing = "/v1/artist/00000000-0000-4000-8000-000000000000/track"
    assert_error(get(sim, missing).json(), 4041, missing)


def test_artist_search_validation(sim: SimulatorServer) -> None:
    assert get(sim, "/v1/artist/search").json()["status"] == 4001
    for params in (
        {"searchText": ""},
        {"searchText": "x", "size": 51},
        {"searchText": "x", "page": -1},
    ):
        r = get(sim, "/v1/artist/search", **params)
        assert r.status_code == 400 and r.json()["status"] == 4004, params


# ---------------------------------------------------------------------- 429 over HTTP
def test_http_429_header_body_and_counters(catalog: Catalog, known: list[str]) -> None:
    clock = FakeClock(0.0)
    with server(catalog, rate_per_window=2, window_s=60, burst=0, clock=clock) as s:
        with requests.Session() as h:
            assert h.get(s.url + "/v1/track", params={"ids": known[0]}).status_code == 200
            clock.advance(10)
            assert h.get(s.url + "/v1/audio-features", params={"ids": known[1]}).status_code == 200
            clock.advance(5)
            r = h.get(s.url + "/v1/track", params={"ids": known[2]})
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "45"
        assert r.headers["X-ReccoBeats-Simulator"] == "1"
        body = r.json()
        assert_error(body, 4291, "/v1/track")
        assert body["error"] == "Too many requests"
        c = s.counters()
        assert c["rejected_429"] == 1 and c["requests_total"] == 3
        assert c["by_endpoint"]["tracks"]["429"] == 1 and c["by_endpoint"]["tracks"]["ok"] == 1
        assert (c["max_in_window"], c["max_admitted_in_window"]) == (3, 2)
        assert c["ids_requested_total"] == 3


def test_http_block_model(catalog: Catalog, known: list[str]) -> None:
    clock = FakeClock(0.0)
    opts = {
        "model": "block",
        "rate_per_window": 1,
        "burst": 0,
        "block_after": 2,
        "block_seconds": 20,
    }
    with server(catalog, clock=clock, **opts) as s:
        statuses = [get(s, "/v1/track", ids=known[0]) for _ in range(4)]
        assert [r.status_code for r in statuses] == [200, 429, 429, 429]
        assert [r.headers.get("Retry-After") for r in statuses] == [None, "60", "20", "20"]
        c = s.counters()
        assert c["blocks_started"] == 1
        assert c["rejected_by_limit"] == {"window": 1, "blocked": 2}


# ---------------------------------------------------------------------- faults
def test_faults_at_rate_one(catalog: Catalog, known: list[str]) -> None:
    with server(catalog, reset_rate=1.0) as s:
        with pytest.raises(requests.ConnectionError):
            get(s, "/v1/track", ids=known[0])
        assert s.counters()["by_endpoint"]["tracks"]["resets"] == 1
    with server(catalog, error_rate=1.0, proxy_html_fraction=0.0) as s:
        r = get(s, "/v1/track", ids=known[0])
        assert r.status_code == 500
        assert_error(r.json(), 5001, "/v1/track")
    with server(catalog, error_rate=1.0, proxy_html_fraction=1.0) as s:
        r = get(s, "/v1/track", ids=known[0])
        assert r.status_code == 502 and r.headers["Content-Type"].startswith("text/html")
        with pytest.raises(ValueError):
            r.json()
        assert s.counters()["by_endpoint"]["tracks"]["5xx"] == 1
    with server(catalog, malformed_rate=1.0) as s, requests.Session() as h:
        for _ in range(2):  # the connection stays usable after a truncated body
            r = h.get(s.url + "/v1/track", params={"ids": known[0]})
            assert r.status_code == 200
            with pytest.raises(json.JSONDecodeError):
                json.loads(r.text)
        assert s.counters()["by_endpoint"]["tracks"]["malformed"] == 2
    with server(catalog, latency_s=0.15, spike_probability=1.0, spike_s=0.1) as s:
        t0 = time.perf_counter()
        assert get(s, "/v1/track", ids=known[0]).ok
        assert time.perf_counter() - t0 >= 0.25


def test_faults_are_reproducible(catalog: Catalog, known: list[str]) -> None:
    def statuses() -> list[int]:
        with server(catalog, error_rate=0.5, proxy_html_fraction=0.0, seed=42) as s:
            return [get(s, "/v1/track", ids=known[0]).status_code for _ in range(20)]

    first = statuses()
    assert first == statuses() and {200, 500} == set(first)


# ---------------------------------------------------------------------- counters, concurrency
def test_counters_reset_and_concurrency(catalog: Catalog, known: list[str]) -> None:
    with server(catalog, model="none") as s:
        sessions = [requests.Session() for _ in range(16)]

        def work(i: int) -> list[int]:
            h = sessions[i]
            return [
                h.get(s.url + "/v1/track", params={"ids": ",".join(known[k : k + 40])}).status_code
                for k in range(0, 1000, 25)
            ]

        with ThreadPoolExecutor(16) as pool:
            codes = [c for batch in pool.map(work, range(16)) for c in batch]
        for h in sessions:
            h.close()
        assert codes == [200] * 640
        c = requests.get(s.url + "/__sim/counters", timeout=5).json()
        assert c["requests_total"] == 640 and c["by_endpoint"]["tracks"]["ok"] == 640
        assert c["ids_requested_total"] == 640 * 40
        assert c["max_in_window"] == 640 and 1 <= c["peak_in_flight"] <= 16
        assert set(c["by_endpoint"]) >= {
            "tracks",
            "audio_features",
            "track",
            "track_audio_features",
            "recommendation",
            "artist_search",
            "artist_tracks",
        }
        assert requests.post(s.url + "/__sim/reset", timeout=5).json() == {"reset": True}
        assert s.counters()["requests_total"] == 0 and s.counters()["max_in_window"] == 0


def test_loopback_only_and_lifecycle(catalog: Catalog) -> None:
    with pytest.raises(ValueError):
        SimulatorConfig(host="0.0.0.0")
    s = SimulatorServer(SimulatorConfig(), catalog=catalog)
    url = s.start()
    assert url.startswith("http://127.0.0.1:") and s.url == url
    s.stop()
    s.stop()  # idempotent
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/__sim/info", timeout=2)


# ---------------------------------------------------------------------- CLI
def test_cli_arguments_and_serving(caplog: pytest.LogCaptureFixture) -> None:
    parser = add_simulate_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        ["--port", "0", "--rate-limit", "30", "--window", "10", "--burst", "2", "--model", "block",
         "--block-after", "4", "--block-seconds", "9", "--latency", "0.01", "--error-rate", "0.1",
         "--malformed-rate", "0.2", "--reset-rate", "0.05", "--max-ids", "20", "--all-unknown",
         "404", "--seed", "3"]
    )  # fmt: skip
    cfg = config_from_args(args)
    assert (cfg.rate_per_window, cfg.window_s, cfg.burst, cfg.model) == (30, 10.0, 2, "block")
    assert (cfg.block_after, cfg.block_seconds, cfg.max_ids, cfg.all_unknown_status) == (
        4,
        9,
        20,
        404,
    )
    assert (cfg.error_rate, cfg.malformed_rate, cfg.reset_rate, cfg.seed) == (0.1, 0.2, 0.05, 3)

    stop = threading.Event()
    caplog.set_level("INFO", logger="pipeline.simulator")
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(simulate_from_args(args, stop=stop)))
    t.start()
    deadline = time.monotonic() + 10
    while "listening on" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    t.join(10)
    assert result == [0]
    assert "ReccoBeats SIMULATOR (not the real API) listening on http://127.0.0.1:" in caplog.text


def test_a_busy_port_is_one_line_and_exit_2(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = add_simulate_arguments(argparse.ArgumentParser()).parse_args(["--port", str(port)])
        assert simulate_from_args(args, stop=threading.Event()) == 2  # was a traceback
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in caplog.text
