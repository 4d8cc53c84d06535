"""ReccoBeatsClient against `responses`, with the REAL limiter on a fake clock.

No real sleeps: the limiter's waits (429 cool-downs) advance a fake clock, and the
client's retry backoff goes to an injected recorder.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import responses
from responses import matchers

from pipeline.api.client import ReccoBeatsClient, RetryPolicy
from pipeline.api.limiter import RateLimiter
from pipeline.api.metrics import RequestMetrics
from pipeline.errors import (
    Cancelled,
    ClientRequestError,
    NotFoundError,
    RateLimitedError,
    ResponseFormatError,
    ServerError,
    TransportError,
)
from pipeline.settings import Settings
from tests.fakes import FakeClock, FixedRandom

BASE = "https://api.reccobeats.test"
SP1, SP2, SP3 = "00vJzaoxM3Eja1doBUhX0P", "1111111111111111111111", "2222222222222222222222"
RID = "878dadea-33c5-4c08-bdb9-e2b117475a99"
AID = "3dce03ac-93bc-4696-a6d6-fa8a579e3913"


def track_json(spotify_id: str = SP1, rid: str = RID, **extra: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "trackTitle": "All Too Well",
        "artists": [
            {
                "id": AID,
                "name": "Taylor Swift",
                "href": "https://open.spotify.com/artist/06HL4z0CvFAxyc27GXpf02",
            }
        ],
        "durationMs": 329160,
        "isrc": "USCJY1231021",
        "ean": None,
        "upc": None,
        "href": f"https://open.spotify.com/track/{spotify_id}",
        "availableCountries": "AR,AU",
        "popularity": 34,
        **extra,
    }


def features_json(spotify_id: str = SP1, rid: str = RID, **extra: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "href": f"https://open.spotify.com/track/{spotify_id}",
        "isrc": "USUM72104140",
        "acousticness": 0.123,
        "danceability": 0.654,
        "energy": 0.789,
        "instrumentalness": 0.001,
        "key": 5,
        "liveness": 0.111,
        "loudness": -8.2,
        "mode": 1,
        "speechiness": 0.045,
        "tempo": 121.4,
        "valence": 0.612,
        **extra,
    }


def paged(items: list[dict[str, Any]], page: int = 0, total_pages: int = 1) -> dict[str, Any]:
    return {
        "content": items,
        "page": page,
        "size": 25,
        "totalElements": len(items),
        "totalPages": total_pages,
    }


ERROR_4002 = {
    "timestamp": "2025-01-12T07:09:10.228+00:00",
    "error": "Size must be a greater than zero",
    "path": "uri=/v1/track/recommendation",
    "status": 4002,
}
ERROR_4004 = {
    "status": 4004,
    "errors": [{"path": "getRecommendation.size", "message": "must be less than or equal to 100"}],
}


# -- fakes ----------------------------------------------------------------------------------


class RecordingLimiter(RateLimiter):
    """The real limiter, recording what it was told (a spy, not a replacement)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.told: list[tuple[str, int, float | None]] = []

    def on_response(
        self, endpoint: str, status: int, retry_after_s: float | None = None, **kw: Any
    ) -> None:
        self.told.append((endpoint, status, retry_after_s))
        super().on_response(endpoint, status, retry_after_s, **kw)


@dataclass
class Harness:
    client: ReccoBeatsClient
    limiter: RecordingLimiter
    metrics: RequestMetrics
    clock: FakeClock
    backoffs: list[float]

    def ep(self, endpoint: str) -> dict[str, Any]:
        return self.metrics.snapshot()["endpoints"][endpoint]


def make_harness(
    metrics: RequestMetrics | None = None,
    rng: random.Random | None = None,
    use_sleep: bool = True,
    **overrides: Any,
) -> Harness:
    settings = Settings(
        **{
            "base_url": BASE,
            "max_retries": 2,
            "backoff_base_s": 1.0,
            "backoff_max_s": 8.0,
            "max_retry_after_s": 60.0,
            **overrides,
        }
    )
    clock = FakeClock(start=1000.0)
    limiter = RecordingLimiter(
        rate_per_window=10_000,
        window_s=60.0,
        max_concurrency=16,
        max_retry_after_s=settings.max_retry_after_s,
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(1),
    )
    metrics = metrics or RequestMetrics(clock=clock)
    backoffs: list[float] = []
    client = ReccoBeatsClient(
        settings,
        limiter,
        metrics,
        sleep=backoffs.append if use_sleep else None,
        rng=rng or random.Random(7),
    )
    return Harness(client, limiter, metrics, clock, backoffs)


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = make_harness()
    yield harness
    harness.client.close()


# -- one table drives the per-method tests -------------------------------------------------


@dataclass(frozen=True)
class Case:
    endpoint: str
    url: str
    call: Callable[[ReccoBeatsClient], Any]
    ok_body: Any
    check: Callable[[Any], None]
    not_found: Any  # value for a 404, or an exception class
    bad_shape: Any

    def __str__(self) -> str:
        return self.endpoint


def _check_tracks(result: Any) -> None:
    assert [t.spotify_id for t in result] == [SP1]
    assert result[0].reccobeats_id == RID


def _check_features(result: Any) -> None:
    assert [(f.spotify_id, f.tempo, f.key) for f in result] == [(SP1, 121.4, 5)]


def _check_track(result: Any) -> None:
    assert (result.spotify_id, result.reccobeats_id) == (SP1, RID)


def _check_page(result: Any) -> None:
    assert result.page == 0 and result.total_pages == 1
    assert [getattr(i, "spotify_id", None) for i in result.items] == [SP1]


CASES = [
    Case(
        "tracks",
        f"{BASE}/v1/track",
        lambda c: c.get_tracks([SP1]),
        {"content": [track_json()]},
        _check_tracks,
        [],
        {"content": {"id": RID}},
    ),
    Case(
        "audio_features",
        f"{BASE}/v1/audio-features",
        lambda c: c.get_audio_features([SP1]),
        {"content": [features_json()]},
        _check_features,
        [],
        {"content": None},
    ),
    Case(
        "track",
        f"{BASE}/v1/track/{RID}",
        lambda c: c.get_track(RID),
        track_json(),
        _check_track,
        None,
        [track_json()],
    ),
    Case(
        "track_audio_features",
        f"{BASE}/v1/track/{RID}/audio-features",
        lambda c: c.get_track_audio_features(RID),
        features_json(),
        lambda f: _check_features([f]),
        None,
        {"content": [features_json()]},
    ),
    Case(
        "recommendation",
        f"{BASE}/v1/track/recommendation",
        lambda c: c.get_recommendations([SP2], size=5),
        {"content": [track_json()]},
        _check_tracks,
        [],
        [track_json()],
    ),
    Case(
        "artist_search",
        f"{BASE}/v1/artist/search",
        lambda c: c.search_artists("queen"),
        paged([{"id": AID, "name": "Queen", "href": f"https://open.spotify.com/artist/{SP1}"}]),
        _check_page,
        NotFoundError,
        {"content": [], "page": 0},
    ),
    Case(
        "artist_tracks",
        f"{BASE}/v1/artist/{AID}/track",
        lambda c: c.get_artist_tracks(AID),
        paged([track_json()]),
        _check_page,
        NotFoundError,
        {"results": []},
    ),
]
ids = pytest.mark.parametrize("case", CASES, ids=str)


def _json(
    rsps: responses.RequestsMock,
    url: str,
    body: Any,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> None:
    rsps.add(responses.GET, url, json=body, status=status, headers=headers)


@ids
def test_success(case: Case, h: Harness, rsps: responses.RequestsMock) -> None:
    _json(rsps, case.url, case.ok_body)
    case.check(case.call(h.client))
    assert len(rsps.calls) == 1
    ep = h.ep(case.endpoint)
    assert (ep["attempts"], ep["successes"], ep["retries"], ep["failures"]) == (1, 1, 0, 0)
    assert ep["bytes"] > 0
    assert h.limiter.told == [(case.endpoint, 200, None)]
    request = rsps.calls[0].request
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"].startswith("reccobeats-etl/")
    assert request.req_kwargs["timeout"] == (10.0, 90.0)
    assert request.req_kwargs["verify"] not in (False, None, "")  # True or a CA bundle path


@ids
@pytest.mark.parametrize(
    ("status", "body", "code", "text"),
    [
        (400, ERROR_4002, 4002, "Size must be a greater than zero"),
        (400, ERROR_4004, 4004, "getRecommendation.size: must be less than or equal to 100"),
        (403, {"status": 4031, "error": "forbidden"}, 4031, "forbidden"),
        (415, "<html>Unsupported</html>", None, "rejected with 415"),
    ],
)
def test_client_errors_are_not_retried(
    case: Case,
    status: int,
    body: Any,
    code: int | None,
    text: str,
    h: Harness,
    rsps: responses.RequestsMock,
) -> None:
    if isinstance(body, str):
        rsps.add(responses.GET, case.url, body=body, status=status, content_type="text/html")
    else:
        _json(rsps, case.url, body, status)
    with pytest.raises(ClientRequestError) as info:
        case.call(h.client)
    assert len(rsps.calls) == 1
    assert info.value.http_status == status
    assert info.value.api_code == code
    assert info.value.endpoint == case.endpoint
    assert text in str(info.value)
    assert h.ep(case.endpoint)["failures"] == 1
    assert h.backoffs == []


@ids
def test_not_found(case: Case, h: Harness, rsps: responses.RequestsMock) -> None:
    _json(rsps, case.url, {"error": "cannot find the entity given ID", "status": 4041}, 404)
    if isinstance(case.not_found, type):
        with pytest.raises(case.not_found):
            case.call(h.client)
    else:
        assert case.call(h.client) == case.not_found
        assert h.ep(case.endpoint)["successes"] == 1  # "not found" is an answer, not a failure
    assert len(rsps.calls) == 1


@ids
def test_404_for_missing_path_is_an_error_not_missing(
    case: Case, h: Harness, rsps: responses.RequestsMock
) -> None:
    _json(rsps, case.url, {"error": "No static resource", "status": 4042}, 404)
    with pytest.raises(ClientRequestError) as info:
        case.call(h.client)
    assert info.value.api_code == 4042


@ids
def test_429_with_retry_after_then_success(
    case: Case, h: Harness, rsps: responses.RequestsMock
) -> None:
    _json(rsps, case.url, {"status": 4291}, 429, headers={"Retry-After": "7"})
    _json(rsps, case.url, case.ok_body)
    start = h.clock()
    case.check(case.call(h.client))
    assert len(rsps.calls) == 2
    assert h.limiter.told == [(case.endpoint, 429, 7.0), (case.endpoint, 200, None)]
    # The limiter's shared cool-down did the waiting (on the fake clock), not the client.
    assert h.clock() - start == pytest.approx(7.0)
    assert h.backoffs == []
    ep = h.ep(case.endpoint)
    assert (ep["attempts"], ep["status_429"], ep["retries"], ep["successes"]) == (2, 1, 1, 1)
    assert ep["retry_reasons"] == {"429": 1}


@ids
def test_429_without_retry_after_then_success(
    case: Case, h: Harness, rsps: responses.RequestsMock
) -> None:
    _json(rsps, case.url, {"status": 4291}, 429)
    _json(rsps, case.url, case.ok_body)
    start = h.clock()
    case.check(case.call(h.client))
    assert len(rsps.calls) == 2
    assert h.limiter.told[0] == (case.endpoint, 429, None)
    assert 0.5 <= h.clock() - start <= 1.0  # the limiter's own first backoff step
    assert h.backoffs == []


@ids
def test_429_beyond_budget(case: Case, h: Harness, rsps: responses.RequestsMock) -> None:
    _json(rsps, case.url, {"status": 4291}, 429, headers={"Retry-After": "1"})
    with pytest.raises(RateLimitedError) as info:
        case.call(h.client)
    assert len(rsps.calls) == 3  # max_retries=2
    assert info.value.attempts == 3
    assert info.value.retry_after_s == 1.0


@ids
def test_retry_after_above_cap_raises_at_once(
    case: Case, h: Harness, rsps: responses.RequestsMock
) -> None:
    _json(rsps, case.url, {"status": 4291}, 429, headers={"Retry-After": "3600"})
    start = h.clock()
    with pytest.raises(RateLimitedError) as info:
        case.call(h.client)
    assert len(rsps.calls) == 1
    assert info.value.retry_after_s == 3600.0
    assert h.clock() == start  # reported, not slept through
    assert h.limiter.told == [(case.endpoint, 429, 3600.0)]
    # Every later request is refused by the limiter without touching the network.
    with pytest.raises(RateLimitedError):
        case.call(h.client)
    assert len(rsps.calls) == 1


@ids
def test_5xx_then_success(case: Case, h: Harness, rsps: responses.RequestsMock) -> None:
    rsps.add(responses.GET, case.url, body="<html>Bad gateway</html>", status=502)
    _json(rsps, case.url, case.ok_body)
    case.check(case.call(h.client))
    assert len(rsps.calls) == 2
    assert len(h.backoffs) == 1 and 0.0 <= h.backoffs[0] <= 1.0
    ep = h.ep(case.endpoint)
    assert ep["retry_reasons"] == {"http_502": 1}
    assert ep["errors"] == {"server": 1}


@ids
def test_persistent_5xx_raises_server_error(
    case: Case, h: Harness, rsps: responses.RequestsMock
) -> None:
    _json(rsps, case.url, {"status": 5001, "error": "boom"}, 503)
    with pytest.raises(ServerError) as info:
        case.call(h.client)
    assert len(rsps.calls) == 3  # max_retries + 1
    assert (info.value.http_status, info.value.api_code, info.value.attempts) == (503, 5001, 3)
    assert len(h.backoffs) == 2
    assert 0 <= h.backoffs[0] <= 1.0 and 0 <= h.backoffs[1] <= 2.0  # full jitter, doubling
    ep = h.ep(case.endpoint)
    assert (ep["attempts"], ep["retries"], ep["failures"], ep["successes"]) == (3, 2, 1, 0)


@ids
def test_malformed_json_then_success(case: Case, h: Harness, rsps: responses.RequestsMock) -> None:
    rsps.add(
        responses.GET, case.url, body='{"content": [', status=200, content_type="application/json"
    )
    _json(rsps, case.url, case.ok_body)
    case.check(case.call(h.client))
    assert len(rsps.calls) == 2
    assert h.ep(case.endpoint)["retry_reasons"] == {"malformed": 1}


@ids
def test_timeout_then_success(case: Case, h: Harness, rsps: responses.RequestsMock) -> None:
    rsps.add(responses.GET, case.url, body=requests.exceptions.ReadTimeout("slow"))
    _json(rsps, case.url, case.ok_body)
    case.check(case.call(h.client))
    assert len(rsps.calls) == 2
    ep = h.ep(case.endpoint)
    assert (ep["timeouts"], ep["retries"], ep["successes"]) == (1, 1, 1)
    assert ep["statuses"] == {"none": 1, "200": 1}
    # Transport errors carry no status, so the limiter hears only the real answer.
    assert h.limiter.told == [(case.endpoint, 200, None)]


@ids
def test_persistent_connection_error(case: Case, h: Harness, rsps: responses.RequestsMock) -> None:
    rsps.add(responses.GET, case.url, body=requests.exceptions.ConnectionError("refused"))
    with pytest.raises(TransportError) as info:
        case.call(h.client)
    assert info.value.attempts == 3
    assert h.ep(case.endpoint)["errors"] == {"connection": 3, "failed:TransportError": 1}


@ids
def test_wrong_shape_body_names_endpoint(
    case: Case, h: Harness, rsps: responses.RequestsMock
) -> None:
    _json(rsps, case.url, case.bad_shape)
    with pytest.raises(ResponseFormatError) as info:
        case.call(h.client)
    assert info.value.endpoint == case.endpoint
    assert f"endpoint={case.endpoint}" in str(info.value)
    assert len(rsps.calls) == 1  # the same answer would come back: not retried


@ids
def test_response_size_cap(case: Case, rsps: responses.RequestsMock) -> None:
    h = make_harness(max_response_bytes=64)
    _json(rsps, case.url, case.ok_body)
    with pytest.raises(ResponseFormatError, match="larger than 64 bytes"):
        case.call(h.client)
    assert len(rsps.calls) == 1
    assert h.ep(case.endpoint)["errors"]["too_large"] == 1


# -- batch specifics ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "item"),
    [
        ("get_tracks", f"{BASE}/v1/track", track_json),
        ("get_audio_features", f"{BASE}/v1/audio-features", features_json),
    ],
)
def test_batch_keys_by_href_and_drops_unasked(
    method: str, url: str, item: Callable, h: Harness, rsps: responses.RequestsMock
) -> None:
    body = {
        "content": [
            item(SP3, rid="r3"),  # order differs from the request
            item(SP1, rid="r1", href=f"https://open.spotify.com/track/{SP1}?si=abc#frag"),
            item("9999999999999999999999", rid="r9"),  # nobody asked for this one
            item(SP1, rid="r1-dup"),  # duplicate: first one wins
            {"id": "rx", "href": "https://open.spotify.com/album/71kWmMEYEnaabVomYXJUuk"},
        ]
    }
    rsps.add(
        responses.GET,
        url,
        json=body,
        match=[matchers.query_param_matcher({"ids": f"{SP1},{SP2},{SP3}"})],
    )
    result = getattr(h.client, method)([SP3, SP1, SP2, SP1])  # SP2 unknown; SP1 twice
    assert {(r.spotify_id, r.reccobeats_id) for r in result} == {(SP1, "r1"), (SP3, "r3")}
    # One comma-separated `ids` value with literal commas, de-duplicated.
    assert f"ids={SP1},{SP2},{SP3}" in rsps.calls[0].request.url
    endpoint = "tracks" if method == "get_tracks" else "audio_features"
    assert h.ep(endpoint)["errors"] == {"unasked": 1, "duplicate": 1, "bad_item": 1}


def test_redirects_are_not_followed(h: Harness, rsps: responses.RequestsMock) -> None:
    """A followed redirect would be an HTTP request the limiter never admitted."""
    rsps.add(
        responses.GET,
        f"{BASE}/v1/track/{RID}",
        status=302,
        headers={"Location": f"{BASE}/elsewhere"},
    )
    rsps.add(responses.GET, f"{BASE}/elsewhere", json=track_json())
    with pytest.raises(ClientRequestError) as info:
        h.client.get_track(RID)
    assert info.value.http_status == 302
    assert len(rsps.calls) == 1


def test_batch_empty_content_means_all_missing(h: Harness, rsps: responses.RequestsMock) -> None:
    _json(rsps, f"{BASE}/v1/track", {"content": []})
    assert h.client.get_tracks([SP1, SP2]) == []


def test_batch_matches_reccobeats_ids_and_isrcs(h: Harness, rsps: responses.RequestsMock) -> None:
    body = {"content": [track_json(SP1, rid="rid-1"), track_json(SP2, rid="rid-2", isrc="USRC1")]}
    _json(rsps, f"{BASE}/v1/track", body)
    result = h.client.get_tracks(["rid-1", "usrc1"])
    assert [t.spotify_id for t in result] == [SP1, SP2]


def test_message_text_never_decides(h: Harness, rsps: responses.RequestsMock) -> None:
    """A 400 whose message mentions 404 (e.g. a URL full of IDs) is still a 400."""
    _json(
        rsps,
        f"{BASE}/v1/track",
        {"status": 4002, "error": "bad id 404abc in /v1/track?ids=404,404 Not Found"},
        400,
    )
    with pytest.raises(ClientRequestError):
        h.client.get_tracks(["404"])


def test_batch_id_validation(h: Harness, rsps: responses.RequestsMock) -> None:
    with pytest.raises(ValueError, match=r"1\.\.40"):
        h.client.get_tracks([f"id{i}" for i in range(41)])
    with pytest.raises(ValueError):
        h.client.get_audio_features([])
    with pytest.raises(TypeError):
        h.client.get_tracks(SP1)
    with pytest.raises(ValueError):
        h.client.get_tracks(["a,b"])
    with pytest.raises(ValueError):
        h.client.get_tracks([""])
    small = make_harness(chunk_size=10)
    with pytest.raises(ValueError, match=r"1\.\.10"):
        small.client.get_tracks([f"id{i}" for i in range(11)])
    _json(rsps, f"{BASE}/v1/track", {"content": []})
    assert h.client.get_tracks(["same"] * 41) == []  # 41 entries, 1 distinct ID
    assert len(rsps.calls) == 1


# -- recommendations, paging ----------------------------------------------------------------


def test_recommendation_params_and_validation(h: Harness, rsps: responses.RequestsMock) -> None:
    rsps.add(
        responses.GET,
        f"{BASE}/v1/track/recommendation",
        json={"content": []},
        match=[
            matchers.query_param_matcher(
                {
                    "seeds": "a,b",
                    "size": "10",
                    "energy": "0.5",
                    "key": "-1",
                    "featureWeight": "2.0",
                    "negativeSeeds": "c",
                }
            )
        ],
    )
    assert (
        h.client.get_recommendations(
            ["b", "a"], size=10, energy=0.5, key=-1, feature_weight=2.0, negative_seeds=["c"]
        )
        == []
    )
    for bad in (
        lambda: h.client.get_recommendations([f"s{i}" for i in range(6)]),
        lambda: h.client.get_recommendations(["a"], size=0),
        lambda: h.client.get_recommendations(["a"], size=101),
        lambda: h.client.get_recommendations(["a"], energy=1.5),
        lambda: h.client.get_recommendations(["a"], key=0.5),
        lambda: h.client.get_recommendations(["a"], mood="happy"),
    ):
        with pytest.raises(ValueError):
            bad()
    assert len(rsps.calls) == 1


def test_recommendation_keeps_api_order(h: Harness, rsps: responses.RequestsMock) -> None:
    body = {"content": [track_json(SP3, rid="r3"), track_json(SP1, rid="r1")]}
    _json(rsps, f"{BASE}/v1/track/recommendation", body)
    assert [t.spotify_id for t in h.client.get_recommendations([SP2])] == [SP3, SP1]


def test_search_validation(h: Harness) -> None:
    for bad in (
        lambda: h.client.search_artists(""),
        lambda: h.client.search_artists("x" * 1001),
        lambda: h.client.search_artists("queen", page=1001),
        lambda: h.client.search_artists("queen", size=51),
        lambda: h.client.get_artist_tracks("a/b"),
    ):
        with pytest.raises(ValueError):
            bad()


def test_iter_artist_tracks_pages_until_total(h: Harness, rsps: responses.RequestsMock) -> None:
    url = f"{BASE}/v1/artist/{AID}/track"
    pages = [
        [track_json(SP1, rid="r1")],
        [track_json(SP2, rid="r2"), track_json(SP1, rid="r1")],  # SP1 repeated
        [track_json(SP3, rid="r3")],
    ]
    for n, items in enumerate(pages):
        rsps.add(
            responses.GET,
            url,
            json=paged(items, page=n, total_pages=3),
            match=[matchers.query_param_matcher({"page": str(n), "size": "50"})],
        )
    assert [t.spotify_id for t in h.client.iter_artist_tracks(AID)] == [SP1, SP2, SP3]
    assert len(rsps.calls) == 3
    assert [t.spotify_id for t in h.client.iter_artist_tracks(AID, max_pages=2)] == [SP1, SP2]
    assert len(rsps.calls) == 5


def test_iter_artist_tracks_stops_on_empty_page(h: Harness, rsps: responses.RequestsMock) -> None:
    _json(rsps, f"{BASE}/v1/artist/{AID}/track", paged([], total_pages=99))
    assert list(h.client.iter_artist_tracks(AID)) == []
    assert len(rsps.calls) == 1


# -- single-flight --------------------------------------------------------------------------


class GatedMetrics(RequestMetrics):
    """Sets ``joined`` once ``n`` callers have joined an in-flight request."""

    def __init__(self, n: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.n, self.seen, self.joined = n, 0, threading.Event()
        self._gate_lock = threading.Lock()

    def dedup_hit(self, endpoint: str) -> None:
        super().dedup_hit(endpoint)
        with self._gate_lock:
            self.seen += 1
            if self.seen >= self.n:
                self.joined.set()


def _blocking_callback(gate: threading.Event, status: int, body: Any) -> Callable:
    def callback(_request: Any) -> tuple[int, dict[str, str], str]:
        assert gate.wait(10), "the other threads never joined the in-flight call"
        return status, {"Content-Type": "application/json"}, json.dumps(body)

    return callback


def _ask_concurrently(fn: Callable[[int], Any], n: int) -> list[Any]:
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        try:
            results[i] = fn(i)
        except Exception as exc:  # collected and asserted by the caller
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return results


def test_concurrent_identical_requests_make_one_call(rsps: responses.RequestsMock) -> None:
    n = 10
    metrics = GatedMetrics(n - 1)
    h = make_harness(metrics=metrics)
    body = {"content": [track_json(SP1, rid="r1"), track_json(SP2, rid="r2")]}
    rsps.add_callback(
        responses.GET, f"{BASE}/v1/track", callback=_blocking_callback(metrics.joined, 200, body)
    )
    # Same set of IDs in different orders and with duplicates: one normalised request.
    results = _ask_concurrently(
        lambda i: h.client.get_tracks([SP2, SP1] if i % 2 else [SP1, SP2, SP1]), n
    )
    assert len(rsps.calls) == 1
    assert all(r == results[0] for r in results)
    assert {t.spotify_id for t in results[0]} == {SP1, SP2}
    assert results[0] is not results[1]  # each caller gets its own list
    ep = h.ep("tracks")
    assert (ep["attempts"], ep["successes"], ep["dedup_hits"]) == (1, 1, n - 1)


def test_concurrent_identical_requests_share_the_error(rsps: responses.RequestsMock) -> None:
    n = 10
    metrics = GatedMetrics(n - 1)
    h = make_harness(metrics=metrics)
    rsps.add_callback(
        responses.GET,
        f"{BASE}/v1/audio-features",
        callback=_blocking_callback(metrics.joined, 400, ERROR_4002),
    )
    results = _ask_concurrently(lambda _i: h.client.get_audio_features([SP1]), n)
    assert len(rsps.calls) == 1
    assert all(isinstance(r, ClientRequestError) and r.api_code == 4002 for r in results)
    ep = h.ep("audio_features")
    assert (ep["attempts"], ep["failures"], ep["dedup_hits"]) == (1, 1, n - 1)


# -- cancellation, session, policy ---------------------------------------------------------


def test_cancelled_limiter_stops_retries(h: Harness, rsps: responses.RequestsMock) -> None:
    """A run cancelled (limiter.cancel()) while a request fails makes no further attempt."""

    def callback(_request: Any) -> tuple[int, dict[str, str], str]:
        h.limiter.cancel()  # e.g. SIGTERM arrives while this attempt is in flight
        return 500, {}, json.dumps({"status": 5001})

    rsps.add_callback(responses.GET, f"{BASE}/v1/track/{RID}", callback=callback)
    with pytest.raises(Cancelled):
        h.client.get_track(RID)
    assert len(rsps.calls) == 1
    with pytest.raises(Cancelled):
        h.client.get_tracks([SP1])
    assert len(rsps.calls) == 1


def test_cancel_interrupts_a_real_backoff(rsps: responses.RequestsMock) -> None:
    """Default (non-injected) backoff waits on an event: cancel() ends a 30 s wait at once."""
    h = make_harness(use_sleep=False, rng=FixedRandom(1.0), backoff_base_s=30.0, backoff_max_s=30.0)
    first_call = threading.Event()

    def callback(_request: Any) -> tuple[int, dict[str, str], str]:
        first_call.set()
        return 503, {}, "busy"

    rsps.add_callback(responses.GET, f"{BASE}/v1/track/{RID}", callback=callback)
    outcome: list[BaseException] = []

    def ask() -> None:
        try:
            h.client.get_track(RID)
        except BaseException as exc:  # asserted below
            outcome.append(exc)

    worker = threading.Thread(target=ask)
    worker.start()
    assert first_call.wait(5)
    h.client.cancel()
    worker.join(5)
    assert not worker.is_alive(), "backoff was not interrupted"
    assert isinstance(outcome[0], Cancelled)
    assert len(rsps.calls) == 1


def test_session_configuration() -> None:
    h = make_harness(max_concurrency=6)
    session = h.client._session
    adapter = session.get_adapter(BASE)
    assert adapter.max_retries.total == 0  # every attempt goes through our limiter
    assert adapter._pool_maxsize >= 6
    assert session.verify is True
    h.client.close()


def test_injected_session_is_used_and_not_closed(rsps: responses.RequestsMock) -> None:
    session = requests.Session()
    settings = Settings(base_url=BASE)
    clock = FakeClock()
    limiter = RateLimiter(rate_per_window=1000, clock=clock, sleep=clock.sleep)
    client = ReccoBeatsClient(settings, limiter, session=session)
    _json(rsps, f"{BASE}/v1/track/{RID}", track_json())
    assert client.get_track(RID) is not None
    client.close()
    assert client.metrics.snapshot()["endpoints"]["track"]["successes"] == 1


def test_retry_policy_backoff_is_full_jitter_capped() -> None:
    policy = RetryPolicy(max_retries=5, backoff_base_s=1.0, backoff_max_s=5.0)
    rng = FixedRandom(1.0)
    assert [policy.backoff_s(n, rng) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert all(0.0 <= policy.backoff_s(3, random.Random(s)) <= 4.0 for s in range(50))
