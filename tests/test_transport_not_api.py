"""Issue 11 (class 1 and "also seen"), the transport's rules for answers that are not the
API's own, with ``responses`` and the real limiter on a fake clock (tests/api_support.py):

* "not found" only from the API's not-found body (404 + code 4041); a proxy's HTML 404 page
  or an empty 404 is a failed request, never "none of these IDs exist";
* a 200 that is an HTML page, or JSON that is not an object (``null``, a list), is malformed
  like invalid JSON: retried, then failed;
* a failing request is retried for ``retry_window_s`` (a budget in time, not only in
  attempts), so a short outage of 503s is ridden out.
"""

from __future__ import annotations

import json

import pytest
import responses

from pipeline.errors import ClientRequestError, ResponseFormatError, ServerError
from tests.api_support import SP1, Case, Harness, add_json, ids, make_harness, track_json

PROXY_404 = "<html><head><title>404 Not Found</title></head><body>nginx</body></html>"


@ids
@pytest.mark.parametrize(
    ("body", "content_type"),
    [(PROXY_404, "text/html"), ("", "text/plain"), ('{"message": "no route"}', "application/json")],
    ids=["html-page", "empty", "foreign-json"],
)
def test_a_404_that_is_not_the_apis_is_an_error_not_not_found(
    case: Case, h: Harness, rsps: responses.RequestsMock, body: str, content_type: str
) -> None:
    rsps.add(responses.GET, case.url, body=body, status=404, content_type=content_type)
    with pytest.raises(ClientRequestError, match="not the API's not-found error"):
        case.call(h.client)


@ids
def test_the_apis_own_404_is_still_not_found(
    case: Case, h: Harness, rsps: responses.RequestsMock
) -> None:
    add_json(rsps, case.url, {"error": "cannot find the entity given ID", "status": 4041}, 404)
    assert list(case.call(h.client)) == case.not_found


@ids
@pytest.mark.parametrize(
    ("body", "content_type"),
    [("null", "application/json"), ("[]", "application/json"),
     ("<html><body>Sign in to the Wi-Fi</body></html>", "text/html")],
    ids=["json-null", "json-list", "html-200"],
)  # fmt: skip
def test_a_non_object_body_is_retried_like_invalid_json(
    case: Case, h: Harness, rsps: responses.RequestsMock, body: str, content_type: str
) -> None:
    rsps.add(responses.GET, case.url, body=body, status=200, content_type=content_type)
    add_json(rsps, case.url, case.ok_body)
    case.check(case.call(h.client))
    assert len(rsps.calls) == 2
    assert h.ep(case.endpoint)["retry_reasons"] == {"malformed": 1}


@ids
def test_a_body_that_stays_null_fails_after_the_retries(
    case: Case, h: Harness, rsps: responses.RequestsMock
) -> None:
    rsps.add(responses.GET, case.url, body="null", status=200, content_type="application/json")
    with pytest.raises(ResponseFormatError, match="not an object"):
        case.call(h.client)
    assert len(rsps.calls) == 3  # max_retries=2 in the harness: one rule for every malformation


def test_a_short_outage_of_503s_is_ridden_out(rsps: responses.RequestsMock) -> None:
    """503s for 12 s of (fake) time, then healthy: with a 30 s retry window the request
    succeeds although it needs more attempts than ``max_retries`` allows."""
    h = make_harness(
        sleep_on_clock=True, retry_window_s=30.0, backoff_base_s=1.0, backoff_max_s=8.0
    )
    clock = h.clock
    start = clock()
    url = "https://api.reccobeats.test/v1/track"

    def answer(request):  # type: ignore[no-untyped-def]
        if clock() - start < 12.0:
            return 503, {"Content-Type": "application/json"}, '{"status": 5001}'
        return 200, {"Content-Type": "application/json"}, json.dumps({"content": [track_json()]})

    rsps.add_callback(responses.GET, url, callback=answer)
    tracks = h.client.get_tracks([SP1])
    assert len(tracks) == 1
    assert len(rsps.calls) > 3  # more than max_retries + 1 attempts: the window kept going
    h.client.close()


def test_without_a_window_the_same_outage_fails(rsps: responses.RequestsMock) -> None:
    h = make_harness(sleep_on_clock=True, retry_window_s=0.0, backoff_base_s=1.0, backoff_max_s=4.0)
    rsps.add(responses.GET, "https://api.reccobeats.test/v1/track", status=503,
             json={"status": 5001})  # fmt: skip
    with pytest.raises(ServerError):
        h.client.get_tracks([SP1])
    assert len(rsps.calls) == 3
    h.client.close()
