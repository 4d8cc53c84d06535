"""JSON bodies exactly as the real API shapes them (api notes §3 and §4.3).

Kept apart from the catalog so the wire format lives in one place: if a recorded body ever
shows a different shape, this is the only module to change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pipeline.simulator.entities import CatalogArtist, CatalogTrack

# ReccoBeats error codes (the body's ``status`` field, not the HTTP status).
MISSING_PARAMETER = 4001
BAD_PARAMETER = 4002
VALIDATION = 4004
NOT_FOUND = 4041
NO_SUCH_PATH = 4042
RATE_LIMITED = 4291
INTERNAL = 5001

PROXY_502_HTML = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


PROXY_404_HTML = (
    "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
    "<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def timestamp() -> str:
    """``2025-01-12T07:09:10.228+00:00``: the format of the documented error bodies."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def artist_json(a: CatalogArtist) -> dict[str, Any]:
    return {"id": a.reccobeats_id, "name": a.name, "href": a.href}


def track_json(t: CatalogTrack) -> dict[str, Any]:
    return {
        "id": t.reccobeats_id,
        "trackTitle": t.title,
        "artists": [artist_json(t.artist)],
        "durationMs": t.duration_ms,
        "isrc": t.isrc,
        "ean": None,
        "upc": None,
        "href": t.href,
        "availableCountries": t.available_countries,
        "popularity": t.popularity,
    }


def features_json(t: CatalogTrack) -> dict[str, Any]:
    """AudioFeatures: ``id`` is the ReccoBeats UUID; the Spotify ID is only in ``href``."""
    if t.features is None:
        raise ValueError(f"{t.spotify_id} has no audio features")
    return {"id": t.reccobeats_id, "href": t.href, "isrc": t.isrc, **t.features.as_dict()}


def list_envelope(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"content": list(items)}


def page_envelope(
    items: Sequence[dict[str, Any]], page: int, size: int, total: int
) -> dict[str, Any]:
    return {
        "content": list(items),
        "page": page,
        "size": size,
        "totalElements": total,
        "totalPages": math.ceil(total / size) if size else 0,
    }


def error_body(code: int, message: str, path: str) -> dict[str, Any]:
    """The common error body; ``path`` is the request path, rendered ``uri=/v1/...``."""
    return {"timestamp": timestamp(), "error": message, "path": f"uri={path}", "status": code}


def validation_body(errors: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The 4004 body: ``[(\"getRecommendation.size\", \"must be ...\"), ...]``."""
    return {"status": VALIDATION, "errors": [{"path": p, "message": m} for p, m in errors]}
