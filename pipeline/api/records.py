"""Typed, immutable records parsed from ReccoBeats JSON.

Why a parser layer at all: the API never echoes the IDs we sent, returns only the IDs it
knows, in no particular order, and carries the Spotify ID only inside ``href``. Every
downstream decision ("found", "missing", which row is which) depends on parsing that one
field correctly, so it happens here, once, with explicit rules:

* unknown fields are ignored; missing optional fields become ``None``;
* a *body* of the wrong shape (not an object, ``content`` not a list, paging fields not
  integers) raises :class:`~pipeline.errors.ResponseFormatError` naming the endpoint;
* an *item* of the wrong shape inside an otherwise good list (not an object, no ``id``,
  ``href`` not a Spotify track URL, a string where a number belongs,
  an integer that does not fit int64) is skipped and counted,
  so one bad record never sinks the other 39 of a batch. If *every* item of a non-empty
  list is bad the body is treated as wrong-shaped: that smells like an API change, and
  silently returning nothing would mark a whole batch "missing" for weeks;
* duplicates (same Spotify ID; same ReccoBeats ID for artists) keep the first occurrence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from pipeline.api.fields import FEATURE_COLUMNS
from pipeline.api.fields import INT_FEATURES as _INT_FEATURES
from pipeline.errors import ResponseFormatError

# Spotify IDs are base-62 (22 chars); fixtures use longer synthetic IDs with dashes, so we
# accept a conservative superset that still rejects anything path- or query-like.
_SPOTIFY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Integer fields are stored as Arrow int64: a value outside this range is a bad item.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

T = TypeVar("T")


class BadItem(ValueError):
    """One list item has the wrong shape; the caller skips and counts it."""


@dataclass(frozen=True, slots=True)
class Artist:
    reccobeats_id: str | None
    name: str | None
    spotify_id: str | None


@dataclass(frozen=True, slots=True)
class Track:
    reccobeats_id: str
    spotify_id: str
    title: str | None
    artists: tuple[Artist, ...]
    duration_ms: int | None
    isrc: str | None
    popularity: int | None
    #: ISO-3166 codes split from the API's comma-joined string; ``()`` for ``""``,
    #: ``None`` when the field is absent.
    available_countries: tuple[str, ...] | None
    href: str


@dataclass(frozen=True, slots=True)
class AudioFeatures:
    reccobeats_id: str
    spotify_id: str
    isrc: str | None
    acousticness: float | None
    danceability: float | None
    energy: float | None
    instrumentalness: float | None
    key: int | None
    liveness: float | None
    loudness: float | None
    mode: int | None
    speechiness: float | None
    tempo: float | None
    valence: float | None


@dataclass(frozen=True, slots=True)
class ParsedList(Generic[T]):
    """Items that parsed, plus how many were skipped and why (for metrics)."""

    items: tuple[T, ...]
    bad_items: int = 0
    duplicates: int = 0


# -- href ---------------------------------------------------------------------------------


def spotify_id_from_href(href: object, kind: str = "track") -> str | None:
    """The Spotify ID in ``https://open.spotify.com/<kind>/<id>[?...][#...]``, else ``None``.

    Only a URL whose second-to-last path segment is ``kind`` counts: an artist or album
    URL in a track's ``href`` must never become a track ID.
    """
    if not isinstance(href, str) or not href:
        return None
    try:
        parts = urlsplit(href.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc.endswith("spotify.com"):
        return None
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) < 2 or segments[-2] != kind:
        return None
    candidate = segments[-1]
    return candidate if _SPOTIFY_ID.fullmatch(candidate) else None


# -- field helpers (raise BadItem) --------------------------------------------------------


def _require_obj(item: object) -> Mapping[str, Any]:
    if not isinstance(item, Mapping):
        raise BadItem(f"item is {type(item).__name__}, not an object")
    return item


def _req_str(obj: Mapping[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadItem(f"{name!r} missing or not a non-empty string")
    return value.strip()


def _opt_str(obj: Mapping[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadItem(f"{name!r} is {type(value).__name__}, not a string")
    return value


def _opt_float(obj: Mapping[str, Any], name: str) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    # bool is an int subclass: True is not a tempo.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadItem(f"{name!r} is {type(value).__name__}, not a number")
    result = float(value)
    if not math.isfinite(result):
        raise BadItem(f"{name!r} is not finite")
    return result


def _opt_int(obj: Mapping[str, Any], name: str) -> int | None:
    """An integer that fits the 64-bit column it is stored in (issue 11: ``durationMs`` =
    10^30 used to pass here and crash the whole run with ``OverflowError`` at the cache)."""
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, bool) or not isinstance(value, int):
        raise BadItem(f"{name!r} is {type(value).__name__}, not an integer")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise BadItem(f"{name!r} does not fit a 64-bit integer")
    return value


def _countries(obj: Mapping[str, Any]) -> tuple[str, ...] | None:
    raw = _opt_str(obj, "availableCountries")
    if raw is None:
        return None
    return tuple(c.strip() for c in raw.split(",") if c.strip())


def _track_href(obj: Mapping[str, Any]) -> tuple[str, str]:
    href = _req_str(obj, "href")
    spotify_id = spotify_id_from_href(href, "track")
    if spotify_id is None:
        raise BadItem("'href' is not a Spotify track URL")
    return href, spotify_id


# -- item parsers (raise BadItem) ---------------------------------------------------------


def artist_item(item: object, *, id_required: bool = True) -> Artist:
    """An artist. Top-level ones (search results) need their ReccoBeats ID; artists nested in
    a track may lack every field (fixtures show name-only artists)."""
    obj = _require_obj(item)
    return Artist(
        reccobeats_id=_req_str(obj, "id") if id_required else _opt_str(obj, "id"),
        name=_opt_str(obj, "name"),
        spotify_id=spotify_id_from_href(obj.get("href"), "artist"),
    )


def track_item(item: object) -> Track:
    obj = _require_obj(item)
    href, spotify_id = _track_href(obj)
    raw_artists = obj.get("artists")
    if raw_artists is None:
        raw_artists = []
    if not isinstance(raw_artists, list):
        raise BadItem("'artists' is not a list")
    return Track(
        reccobeats_id=_req_str(obj, "id"),
        spotify_id=spotify_id,
        title=_opt_str(obj, "trackTitle"),
        artists=tuple(artist_item(a, id_required=False) for a in raw_artists),
        duration_ms=_opt_int(obj, "durationMs"),
        isrc=_opt_str(obj, "isrc"),
        popularity=_opt_int(obj, "popularity"),
        available_countries=_countries(obj),
        href=href,
    )


def features_item(item: object) -> AudioFeatures:
    obj = _require_obj(item)
    _, spotify_id = _track_href(obj)
    values: dict[str, Any] = {
        name: (_opt_int(obj, name) if name in _INT_FEATURES else _opt_float(obj, name))
        for name in FEATURE_COLUMNS
    }
    return AudioFeatures(
        reccobeats_id=_req_str(obj, "id"),
        spotify_id=spotify_id,
        isrc=_opt_str(obj, "isrc"),
        **values,
    )


# -- body parsers (raise ResponseFormatError) ---------------------------------------------


def _format_error(endpoint: str, what: str) -> ResponseFormatError:
    return ResponseFormatError(f"unexpected response shape: {what}", endpoint=endpoint)


def _content(body: object, endpoint: str) -> list[Any]:
    if not isinstance(body, Mapping):
        raise _format_error(endpoint, f"body is {type(body).__name__}, not an object")
    content = body.get("content")
    if not isinstance(content, list):
        raise _format_error(endpoint, "'content' missing or not a list")
    return content


def parse_list(
    body: object,
    endpoint: str,
    parse_item: Callable[[object], T],
    key: Callable[[T], Hashable],
) -> ParsedList[T]:
    """Parse ``{"content": [...]}``: skip bad items, keep the first item per ``key``."""
    content = _content(body, endpoint)
    items: list[T] = []
    seen: set[Hashable] = set()
    bad = duplicates = 0
    for raw in content:
        try:
            item = parse_item(raw)
        except BadItem:
            bad += 1
            continue
        k = key(item)
        if k in seen:
            duplicates += 1
            continue
        seen.add(k)
        items.append(item)
    if content and bad == len(content):
        raise _format_error(endpoint, f"all {bad} items malformed")
    return ParsedList(tuple(items), bad, duplicates)


def parse_tracks(body: object, endpoint: str) -> ParsedList[Track]:
    return parse_list(body, endpoint, track_item, lambda t: t.spotify_id)


def parse_features_list(body: object, endpoint: str) -> ParsedList[AudioFeatures]:
    return parse_list(body, endpoint, features_item, lambda f: f.spotify_id)
