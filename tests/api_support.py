"""What the client and transport tests share: JSON builders, a spy limiter, the harness and
the per-endpoint table (each test there runs once per endpoint the stages call)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import responses

from pipeline.api.client import ReccoBeatsClient
from pipeline.api.limiter import RateLimiter
from pipeline.api.metrics import RequestMetrics
from pipeline.config import LimiterConfig
from pipeline.settings import Settings
from tests.fakes import FakeClock, plain_limiter

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

    def __init__(self, config: LimiterConfig, **kw: Any) -> None:
        super().__init__(config, **kw)
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
    sleep_on_clock: bool = False,
    **overrides: Any,
) -> Harness:
    settings = Settings(
        **{
            "base_url": BASE,
            "max_retries": 2,
            "retry_window_s": 0.0,  # attempts counted exactly (the window has its own tests)
            "backoff_base_s": 1.0,
            "backoff_max_s": 8.0,
            "max_retry_after_s": 60.0,
            **overrides,
        }
    )
    clock = FakeClock(start=1000.0)
    limiter = RecordingLimiter(
        plain_limiter(
            rate_per_window=10_000,
            window_s=60.0,
            max_concurrency=16,
            max_retry_after_s=settings.max_retry_after_s,
        ),
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
        sleep=clock.sleep if sleep_on_clock else backoffs.append if use_sleep else None,
        rng=rng or random.Random(7),
    )
    return Harness(client, limiter, metrics, clock, backoffs)


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
        "recommendation",
        f"{BASE}/v1/track/recommendation",
        lambda c: c.get_recommendations([SP2], size=5),
        {"content": [track_json()]},
        _check_tracks,
        [],
        {"content": "not a list"},  # (a bare list or null is malformed: retried, issue 11)
    ),
]
ids = pytest.mark.parametrize("case", CASES, ids=str)


def add_json(
    rsps: responses.RequestsMock,
    url: str,
    body: Any,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> None:
    rsps.add(responses.GET, url, json=body, status=status, headers=headers)


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    """``responses`` for one test, not insisting that every registered URL is called."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def h() -> Iterator[Harness]:
    """A client harness (real client, transport and limiter), closed after the test."""
    harness = make_harness()
    yield harness
    harness.client.close()
