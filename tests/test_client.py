"""ReccoBeatsClient against `responses`, with the REAL limiter on a fake clock: endpoint
methods, request shaping, record matching and in-flight dedup. The attempt loop (retries,
429s, backoff, stop) is tested in tests/test_transport.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
import responses
from responses import matchers

from pipeline.api.metrics import RequestMetrics
from pipeline.errors import (
    ClientRequestError,
    ResponseFormatError,
)
from tests.api_support import (
    BASE,
    ERROR_4002,
    SP1,
    SP2,
    SP3,
    Case,
    Harness,
    add_json,
    features_json,
    ids,
    make_harness,
    track_json,
)


@ids
def test_success(case: Case, h: Harness, rsps: responses.RequestsMock) -> None:
    add_json(rsps, case.url, case.ok_body)
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
def test_wrong_shape_body_names_endpoint(
    case: Case, h: Harness, rsps: responses.RequestsMock
) -> None:
    add_json(rsps, case.url, case.bad_shape)
    with pytest.raises(ResponseFormatError) as info:
        case.call(h.client)
    assert info.value.endpoint == case.endpoint
    assert f"endpoint={case.endpoint}" in str(info.value)
    assert len(rsps.calls) == 1  # the same answer would come back: not retried


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


def test_batch_empty_content_means_all_missing(h: Harness, rsps: responses.RequestsMock) -> None:
    add_json(rsps, f"{BASE}/v1/track", {"content": []})
    assert h.client.get_tracks([SP1, SP2]) == []


def test_batch_matches_reccobeats_ids_and_isrcs(h: Harness, rsps: responses.RequestsMock) -> None:
    body = {"content": [track_json(SP1, rid="rid-1"), track_json(SP2, rid="rid-2", isrc="USRC1")]}
    add_json(rsps, f"{BASE}/v1/track", body)
    result = h.client.get_tracks(["rid-1", "usrc1"])
    assert [t.spotify_id for t in result] == [SP1, SP2]


def test_message_text_never_decides(h: Harness, rsps: responses.RequestsMock) -> None:
    """A 400 whose message mentions 404 (e.g. a URL full of IDs) is still a 400."""
    add_json(
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
    add_json(rsps, f"{BASE}/v1/track", {"content": []})
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
    add_json(rsps, f"{BASE}/v1/track/recommendation", body)
    assert [t.spotify_id for t in h.client.get_recommendations([SP2])] == [SP3, SP1]


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
