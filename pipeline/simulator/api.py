"""The simulated endpoints: routing, parameter validation and answers, with no HTTP in sight.

Paths, parameters, bounds, bodies and codes follow the real API (api notes §2-§4). Where the
real behaviour is unknown, ``SimulatorConfig`` picks (``max_ids``/``over_max_ids``,
``all_unknown_status``). Validation messages use the Jakarta wording the real (Spring) server
produces, e.g. ``must be less than or equal to 100``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.simulator import shapes
from pipeline.simulator.catalog import Catalog
from pipeline.simulator.config import SimulatorConfig
from pipeline.simulator.entities import CatalogTrack
from pipeline.simulator.recommender import TARGET_RANGES

Query = Mapping[str, Sequence[str]]

#: Canonical endpoint names (docs/architecture.md), in route-matching order.
ENDPOINTS = (
    "tracks",
    "audio_features",
    "track",
    "track_audio_features",
    "recommendation",
    "artist_search",
    "artist_tracks",
)
_ROUTES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^/v1/track$"), "tracks"),
    (re.compile(r"^/v1/audio-features$"), "audio_features"),
    (re.compile(r"^/v1/track/recommendation$"), "recommendation"),
    (re.compile(r"^/v1/track/([^/]+)$"), "track"),
    (re.compile(r"^/v1/track/([^/]+)/audio-features$"), "track_audio_features"),
    (re.compile(r"^/v1/artist/search$"), "artist_search"),
    (re.compile(r"^/v1/artist/([^/]+)/track$"), "artist_tracks"),
)
NOT_FOUND_MESSAGE = "cannot find the entity given ID"
INTEGER_TARGETS = frozenset({"key", "mode", "popularity"})


@dataclass(frozen=True, slots=True)
class Route:
    endpoint: str
    params: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ApiResponse:
    status: int
    body: Any  # JSON-serialisable


class _BadRequest(Exception):
    """Raised by the parameter parsers; carries the finished 400 response."""

    def __init__(self, response: ApiResponse) -> None:
        super().__init__(response.status)
        self.response = response


def route(method: str, path: str) -> Route | None:
    """Which endpoint a request is for; None for anything else (404, code 4042)."""
    if method != "GET":
        return None
    for pattern, endpoint in _ROUTES:
        m = pattern.match(path)
        if m:
            return Route(endpoint, m.groups())
    return None


def list_param(query: Query, name: str) -> list[str]:
    """Array parameters: repeated keys and comma-separated values both work (api notes §1)."""
    return [part.strip() for v in query.get(name, ()) for part in v.split(",") if part.strip()]


def no_such_path(path: str) -> ApiResponse:
    return ApiResponse(
        404, shapes.error_body(shapes.NO_SUCH_PATH, f"No static resource {path.lstrip('/')}.", path)
    )


class SimulatorApi:
    """Answers one routed request from the catalog."""

    def __init__(self, catalog: Catalog, config: SimulatorConfig) -> None:
        self.catalog = catalog
        self.config = config

    def handle(self, r: Route, path: str, query: Query) -> ApiResponse:
        handler = getattr(self, f"_{r.endpoint}")
        try:
            return handler(path, query, *r.params)
        except _BadRequest as exc:
            return exc.response

    # ------------------------------------------------------------------ batch endpoints
    def _batch_ids(self, path: str, query: Query, method: str) -> list[str]:
        ids = list_param(query, "ids")
        if not ids:
            raise _BadRequest(_missing(path, "ids", "List"))
        if len(ids) > self.config.max_ids:
            if self.config.over_max_ids == "truncate":
                return ids[: self.config.max_ids]
            raise _BadRequest(
                _invalid([(f"{method}.ids", f"size must be between 1 and {self.config.max_ids}")])
            )
        return ids

    def _batch_answer(self, path: str, items: list[dict[str, Any]]) -> ApiResponse:
        if not items and self.config.all_unknown_status == 404:
            return _not_found(path)
        return ApiResponse(200, shapes.list_envelope(items))

    def _tracks(self, path: str, query: Query) -> ApiResponse:
        ids = self._batch_ids(path, query, "getTracks")
        return self._batch_answer(
            path, [shapes.track_json(t) for t in self.catalog.lookup_many(ids)]
        )

    def _audio_features(self, path: str, query: Query) -> ApiResponse:
        ids = self._batch_ids(path, query, "getAudioFeatures")
        found = [t for t in self.catalog.lookup_many(ids) if t.features is not None]
        return self._batch_answer(path, [shapes.features_json(t) for t in found])

    # ------------------------------------------------------------------ single track
    def _single(self, track_id: str) -> CatalogTrack | None:
        return self.catalog.track_by_uuid(track_id)  # ReccoBeats UUID only (api notes §1)

    def _track(self, path: str, query: Query, track_id: str) -> ApiResponse:
        t = self._single(track_id)
        return _not_found(path) if t is None else ApiResponse(200, shapes.track_json(t))

    def _track_audio_features(self, path: str, query: Query, track_id: str) -> ApiResponse:
        t = self._single(track_id)
        if t is None or t.features is None:
            return _not_found(path)
        return ApiResponse(200, shapes.features_json(t))

    # ------------------------------------------------------------------ recommendation
    def _recommendation(self, path: str, query: Query) -> ApiResponse:
        seeds = list_param(query, "seeds")
        if not seeds:
            raise _BadRequest(_missing(path, "seeds", "List"))
        if not query.get("size"):
            raise _BadRequest(_missing(path, "size", "int"))
        size = _int_param(path, query, "size")
        if size < 1:
            # the documented 4002 example (api notes §6.9)
            raise _BadRequest(
                ApiResponse(
                    400,
                    shapes.error_body(
                        shapes.BAD_PARAMETER, "Size must be a greater than zero", path
                    ),
                )
            )
        negatives = list_param(query, "negativeSeeds")
        errors: list[tuple[str, str]] = []
        if size > 100:
            errors.append(("getRecommendation.size", "must be less than or equal to 100"))
        if len(seeds) > 5:
            errors.append(("getRecommendation.seeds", "size must be between 1 and 5"))
        if len(negatives) > 5:
            errors.append(("getRecommendation.negativeSeeds", "size must be between 0 and 5"))
        targets: dict[str, float] = {}
        for name, (lo, hi) in TARGET_RANGES.items():
            if query.get(name):
                value = _number_param(path, query, name, name in INTEGER_TARGETS)
                errors += _range_errors(f"getRecommendation.{name}", value, lo, hi)
                targets[name] = value
        weight = 1.0
        if query.get("featureWeight"):
            weight = _number_param(path, query, "featureWeight", False)
            errors += _range_errors("getRecommendation.featureWeight", weight, 1, 5)
        if errors:
            raise _BadRequest(_invalid(errors))
        found = self.catalog.recommend(
            seeds, size, negative_seeds=negatives, targets=targets, feature_weight=weight
        )
        return ApiResponse(200, shapes.list_envelope([shapes.track_json(t) for t in found]))

    # ------------------------------------------------------------------ artists
    def _artist_search(self, path: str, query: Query) -> ApiResponse:
        if "searchText" not in query:
            raise _BadRequest(_missing(path, "searchText", "String"))
        text = query["searchText"][0]
        errors: list[tuple[str, str]] = []
        if not 1 <= len(text) <= 1000:
            errors.append(("searchArtist.searchText", "size must be between 1 and 1000"))
        page, size, page_errors = _paging(path, query, "searchArtist")
        if errors + page_errors:
            raise _BadRequest(_invalid(errors + page_errors))
        found = self.catalog.search_artists(text)
        chunk = found[page * size : (page + 1) * size]
        return ApiResponse(
            200,
            shapes.page_envelope([shapes.artist_json(a) for a in chunk], page, size, len(found)),
        )

    def _artist_tracks(self, path: str, query: Query, artist_id: str) -> ApiResponse:
        page, size, errors = _paging(path, query, "getArtistTracks")
        if errors:
            raise _BadRequest(_invalid(errors))
        tracks = self.catalog.artist_tracks(artist_id)
        if tracks is None:
            return _not_found(path)
        chunk = tracks[page * size : (page + 1) * size]
        return ApiResponse(
            200,
            shapes.page_envelope([shapes.track_json(t) for t in chunk], page, size, len(tracks)),
        )


# ---------------------------------------------------------------------- helpers
def _missing(path: str, name: str, type_name: str) -> ApiResponse:
    message = (
        f"Required request parameter '{name}' for method parameter type {type_name} is not present"
    )
    return ApiResponse(400, shapes.error_body(shapes.MISSING_PARAMETER, message, path))


def _invalid(errors: list[tuple[str, str]]) -> ApiResponse:
    return ApiResponse(400, shapes.validation_body(errors))


def _not_found(path: str) -> ApiResponse:
    return ApiResponse(404, shapes.error_body(shapes.NOT_FOUND, NOT_FOUND_MESSAGE, path))


def _number_param(path: str, query: Query, name: str, integer: bool) -> float:
    raw = query[name][0].strip()
    try:
        return int(raw) if integer else float(raw)
    except ValueError:
        kind = "int" if integer else "double"
        message = (
            "Failed to convert value of type 'java.lang.String' to required type "
            f"'{kind}'; For input string: \"{raw}\""
        )
        raise _BadRequest(
            ApiResponse(400, shapes.error_body(shapes.BAD_PARAMETER, message, path))
        ) from None


def _int_param(path: str, query: Query, name: str) -> int:
    return int(_number_param(path, query, name, True))


def _range_errors(where: str, value: float, lo: float, hi: float) -> list[tuple[str, str]]:
    if value < lo:
        return [(where, f"must be greater than or equal to {lo:g}")]
    if value > hi:
        return [(where, f"must be less than or equal to {hi:g}")]
    return []


def _paging(path: str, query: Query, method: str) -> tuple[int, int, list[tuple[str, str]]]:
    """``page`` 0..1000 (default 0) and ``size`` 1..50 (default 25), as the real paged lists."""
    page = _int_param(path, query, "page") if query.get("page") else 0
    size = _int_param(path, query, "size") if query.get("size") else 25
    errors = _range_errors(f"{method}.page", page, 0, 1000) + _range_errors(
        f"{method}.size", size, 1, 50
    )
    return page, size, errors
