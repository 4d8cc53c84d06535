"""The attempt loop (transport.py) through the client, against `responses`, with the REAL
limiter on a fake clock: which answers are retried, how 429s and Retry-After feed the
limiter, backoff, the stop signal, the session.

No real sleeps: the limiter's waits (429 cool-downs) advance a fake clock, and the
transport's retry backoff goes to an injected recorder.
"""

from __future__ import annotations

import json
import random
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import requests
import responses

from pipeline.api.backoff import FULL_JITTER, backoff_s
from pipeline.api.client import ReccoBeatsClient
from pipeline.api.limiter import RateLimiter
from pipeline.errors import (
    Cancelled,
    ClientRequestError,
    RateLimitedError,
    ResponseFormatError,
    ServerError,
    TransportError,
)
from pipeline.settings import Settings
from tests.api_support import (
    BASE,
    ERROR_4002,
    ERROR_4004,
    SP1,
    Case,
    Harness,
    add_json,
    ids,
    make_harness,
    track_json,
)
from tests.fakes import FakeClock, FixedRandom, plain_limiter


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
        add_json(rsps, case.url, body, status)
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
    add_json(rsps, case.url, {"error": "cannot find the entity given ID", "status": 4041}, 404)
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
    add_json(rsps, case.url, {"error": "No static resource", "status": 4042}, 404)
    with pytest.raises(ClientRequestError) as info:
        case.call(h.client)
    assert info.value.api_code == 4042


@ids
def test_429_with_retry_after_then_success(
    case: Case, h: Harness, rsps: responses.RequestsMock
) -> None:
    add_json(rsps, case.url, {"status": 4291}, 429, headers={"Retry-After": "7"})
    add_json(rsps, case.url, case.ok_body)
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
    add_json(rsps, case.url, {"status": 4291}, 429)
    add_json(rsps, case.url, case.ok_body)
    start = h.clock()
    case.check(case.call(h.client))
    assert len(rsps.calls) == 2
    assert h.limiter.told[0] == (case.endpoint, 429, None)
    assert 0.5 <= h.clock() - start <= 1.0  # the limiter's own first backoff step
    assert h.backoffs == []


@ids
def test_429_beyond_budget(case: Case, h: Harness, rsps: responses.RequestsMock) -> None:
    add_json(rsps, case.url, {"status": 4291}, 429, headers={"Retry-After": "1"})
    with pytest.raises(RateLimitedError) as info:
        case.call(h.client)
    assert len(rsps.calls) == 3  # max_retries=2
    assert info.value.attempts == 3
    assert info.value.retry_after_s == 1.0


@ids
def test_retry_after_above_cap_raises_at_once(
    case: Case, h: Harness, rsps: responses.RequestsMock
) -> None:
    add_json(rsps, case.url, {"status": 4291}, 429, headers={"Retry-After": "3600"})
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


def test_an_http_date_retry_after_is_read_against_the_injected_wall_clock(
    h: Harness, rsps: responses.RequestsMock
) -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)  # not today: only the injected clock gives 3600
    settings = Settings(base_url=BASE, max_retries=0, max_retry_after_s=60.0)
    retry_at = format_datetime(now + timedelta(hours=1), usegmt=True)
    add_json(rsps, f"{BASE}/v1/track", {"status": 4291}, 429, headers={"Retry-After": retry_at})
    with (
        ReccoBeatsClient(settings, h.limiter, h.metrics, wall_clock=lambda: now) as client,
        pytest.raises(RateLimitedError) as info,
    ):
        client.get_tracks([SP1])
    assert info.value.retry_after_s == 3600.0


@ids
def test_5xx_then_success(case: Case, h: Harness, rsps: responses.RequestsMock) -> None:
    rsps.add(responses.GET, case.url, body="<html>Bad gateway</html>", status=502)
    add_json(rsps, case.url, case.ok_body)
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
    add_json(rsps, case.url, {"status": 5001, "error": "boom"}, 503)
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
    add_json(rsps, case.url, case.ok_body)
    case.check(case.call(h.client))
    assert len(rsps.calls) == 2
    assert h.ep(case.endpoint)["retry_reasons"] == {"malformed": 1}


@ids
def test_timeout_then_success(case: Case, h: Harness, rsps: responses.RequestsMock) -> None:
    rsps.add(responses.GET, case.url, body=requests.exceptions.ReadTimeout("slow"))
    add_json(rsps, case.url, case.ok_body)
    case.check(case.call(h.client))
    assert len(rsps.calls) == 2
    ep = h.ep(case.endpoint)
    assert (ep["timeouts"], ep["retries"], ep["successes"]) == (1, 1, 1)
    assert ep["statuses"] == {"none": 1, "200": 1}
    # Transport errors carry no status, so the limiter hears only the real answer.
    assert h.limiter.told == [(case.endpoint, 200, None)]


@ids
def test_persistent_connection_error(case: Case, h: Harness, rsps: responses.RequestsMock) -> None:
    """Once the API has answered this run, a refused connection is a blip: full retries."""
    add_json(rsps, case.url, case.ok_body)
    case.call(h.client)  # the API answered once
    rsps.replace(responses.GET, case.url, body=requests.exceptions.ConnectionError("refused"))
    with pytest.raises(TransportError) as info:
        case.call(h.client)
    assert info.value.attempts == 3
    assert h.ep(case.endpoint)["errors"] == {"connection": 3, "failed:TransportError": 1}


def test_connection_refused_before_any_answer_is_not_retried(
    h: Harness, rsps: responses.RequestsMock
) -> None:
    """Nothing has answered yet: most likely a wrong --base-url or an API that is down."""
    rsps.add(responses.GET, f"{BASE}/v1/track", body=requests.exceptions.ConnectionError("no"))
    with pytest.raises(TransportError) as info:
        h.client.get_tracks([SP1])
    assert info.value.attempts == 1


@ids
def test_response_size_cap(case: Case, rsps: responses.RequestsMock) -> None:
    h = make_harness(max_response_bytes=64)
    add_json(rsps, case.url, case.ok_body)
    with pytest.raises(ResponseFormatError, match="larger than 64 bytes"):
        case.call(h.client)
    assert len(rsps.calls) == 1
    assert h.ep(case.endpoint)["errors"]["too_large"] == 1


def test_redirects_are_not_followed(h: Harness, rsps: responses.RequestsMock) -> None:
    """A followed redirect would be an HTTP request the limiter never admitted."""
    rsps.add(
        responses.GET,
        f"{BASE}/v1/track",
        status=302,
        headers={"Location": f"{BASE}/elsewhere"},
    )
    rsps.add(responses.GET, f"{BASE}/elsewhere", json=track_json())
    with pytest.raises(ClientRequestError) as info:
        h.client.get_tracks([SP1])
    assert info.value.http_status == 302
    assert len(rsps.calls) == 1


# -- cancellation, session, policy ---------------------------------------------------------


def test_cancelled_limiter_stops_retries(h: Harness, rsps: responses.RequestsMock) -> None:
    """A run stopped (its stop signal set) while a request fails makes no further attempt."""

    def callback(_request: Any) -> tuple[int, dict[str, str], str]:
        h.limiter.stop.set()  # e.g. SIGTERM arrives while this attempt is in flight
        return 500, {}, json.dumps({"status": 5001})

    rsps.add_callback(responses.GET, f"{BASE}/v1/track", callback=callback)
    with pytest.raises(Cancelled):
        h.client.get_tracks([SP1])
    assert len(rsps.calls) == 1
    with pytest.raises(Cancelled):
        h.client.get_tracks([SP1])
    assert len(rsps.calls) == 1


def test_cancel_interrupts_a_real_backoff(rsps: responses.RequestsMock) -> None:
    """Default (non-injected) backoff waits on the stop event: setting it ends a 30 s wait."""
    h = make_harness(use_sleep=False, rng=FixedRandom(1.0), backoff_base_s=30.0, backoff_max_s=30.0)
    first_call = threading.Event()

    def callback(_request: Any) -> tuple[int, dict[str, str], str]:
        first_call.set()
        return 503, {}, "busy"

    rsps.add_callback(responses.GET, f"{BASE}/v1/track", callback=callback)
    outcome: list[BaseException] = []

    def ask() -> None:
        try:
            h.client.get_tracks([SP1])
        except BaseException as exc:  # asserted below
            outcome.append(exc)

    worker = threading.Thread(target=ask)
    worker.start()
    assert first_call.wait(5)
    h.limiter.stop.set()
    worker.join(5)
    assert not worker.is_alive(), "backoff was not interrupted"
    assert isinstance(outcome[0], Cancelled)
    assert len(rsps.calls) == 1


def test_session_configuration() -> None:
    h = make_harness(max_concurrency=6)
    session = h.client.session
    adapter = session.get_adapter(BASE)
    assert adapter.max_retries.total == 0  # every attempt goes through our limiter
    assert adapter._pool_maxsize >= 6
    assert session.verify is True
    h.client.close()


def test_injected_session_is_used_and_not_closed(rsps: responses.RequestsMock) -> None:
    session = requests.Session()
    settings = Settings(base_url=BASE)
    clock = FakeClock()
    limiter = RateLimiter(plain_limiter(rate_per_window=1000), clock=clock, sleep=clock.sleep)
    client = ReccoBeatsClient(settings, limiter, session=session)
    add_json(rsps, f"{BASE}/v1/track", {"content": [track_json()]})
    assert client.get_tracks([SP1])
    client.close()
    assert client.metrics.snapshot()["endpoints"]["tracks"]["successes"] == 1


def test_retry_policy_backoff_is_full_jitter_capped() -> None:
    def full(n: int, rng: random.Random) -> float:
        return backoff_s(n, 1.0, 5.0, rng, FULL_JITTER)

    rng = FixedRandom(1.0)
    assert [full(n, rng) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert all(0.0 <= full(3, random.Random(s)) <= 4.0 for s in range(50))


def test_connection_pool_holds_one_connection_per_slot_of_the_cap() -> None:
    """requests keeps 10 connections per host by default and drops the rest: at a cap of 16
    in flight, 6 requests would open a throwaway connection each time."""
    h = make_harness()  # the default cap
    adapter = h.client.session.get_adapter(BASE)
    assert Settings().max_concurrency == 16
    assert adapter._pool_maxsize >= 16  # type: ignore[attr-defined]
    h.client.close()
