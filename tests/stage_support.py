"""Building a real stage context for the per-stage tests: real client, limiter and caches.

The API behind it is either ``responses`` (unit tests of one stage's HTTP handling) or the
simulator over loopback; nothing in the pipeline is replaced.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.clock import utc_now
from pipeline.config import stage_config, ttl_config
from pipeline.orchestrator import ApiResources
from pipeline.settings import Settings
from pipeline.stages.context import StageContext
from pipeline.state.caches import Caches

API = "http://api.test"


def sid(n: int) -> str:
    """A well-formed 22-character Spotify track ID, distinct per ``n``."""
    return f"{n:022d}".replace("0", "A")


def track_json(spotify_id: str, rid: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": rid or f"rb-{spotify_id}",
        "trackTitle": f"title {spotify_id[-4:]}",
        "artists": [{"id": "a1", "name": "Artist", "href": "https://open.spotify.com/artist/x"}],
        "durationMs": 200_000,
        "isrc": "USRC17607839",
        "href": f"https://open.spotify.com/track/{spotify_id}",
        "popularity": 40,
        **extra,
    }


def features_json(spotify_id: str, rid: str | None = None) -> dict[str, Any]:
    return {
        "id": rid or f"rb-{spotify_id}",
        "href": f"https://open.spotify.com/track/{spotify_id}",
        "isrc": "USRC17607839",
        "acousticness": 0.1,
        "danceability": 0.5,
        "energy": 0.7,
        "instrumentalness": 0.0,
        "key": 5,
        "liveness": 0.1,
        "loudness": -6.0,
        "mode": 1,
        "speechiness": 0.05,
        "tempo": 120.0,
        "valence": 0.4,
    }


def content(items: list[dict[str, Any]]) -> tuple[int, dict[str, str], str]:
    return 200, {"Content-Type": "application/json"}, json.dumps({"content": items})


def asked_ids(request: Any) -> list[str]:
    from urllib.parse import parse_qs, urlparse

    return parse_qs(urlparse(request.url).query)["ids"][0].split(",")


@contextmanager
def stage_context(settings: Settings, state_dir: Path) -> Iterator[StageContext]:
    """The context ``run_job`` builds, minus the reading and publishing around it."""
    caches = Caches.load(state_dir, ttl_config(settings), utc_now)
    with ApiResources(settings, state_dir, threading.Event(), utc_now) as api:
        yield StageContext(api.client, caches, stage_config(settings), api.stop)
