"""``ReccoBeatsClient``: typed methods for the endpoints the stages use.

Layers of one call: the endpoint method validates its arguments client-side (a 400 costs a
rate-limit slot) and shapes the request; identical concurrent logical requests share one call
(``SingleFlight``); ``Transport`` (transport.py) sends it through the limiter with retries;
``records`` parses the body.

* Batch endpoints: a 404 or ``content: []`` both mean "none found" -> ``[]``. Results are
  keyed by the Spotify ID parsed from ``href``, never by position; records nobody asked
  for are dropped and counted.
* Only the endpoints a stage calls are here (tracks, audio features, recommendations). The
  single-track, artist-search and artist-tracks endpoints had no caller and went in issue 9;
  the simulator still serves them, and git history has the client code.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import requests

from pipeline.api import records
from pipeline.api.limiter import RateLimiter
from pipeline.api.metrics import RequestMetrics
from pipeline.api.records import AudioFeatures, ParsedList, Track
from pipeline.api.singleflight import SingleFlight
from pipeline.api.transport import NOT_FOUND, Transport
from pipeline.clock import Clock, utc_now
from pipeline.config import http_config, retry_policy
from pipeline.errors import APIError
from pipeline.settings import API_MAX_RECOMMENDATION_SIZE, API_MAX_SEEDS, Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

# Recommendation targets: API name -> (min, max, integer?). Keyword arguments may use the
# API's camelCase or snake_case (``feature_weight``, ``negative_seeds``).
_TARGETS: dict[str, tuple[float, float, bool]] = {
    "acousticness": (0.0, 1.0, False),
    "danceability": (0.0, 1.0, False),
    "energy": (0.0, 1.0, False),
    "instrumentalness": (0.0, 1.0, False),
    "liveness": (0.0, 1.0, False),
    "speechiness": (0.0, 1.0, False),
    "valence": (0.0, 1.0, False),
    "key": (-1, 11, True),
    "loudness": (-60.0, 2.0, False),
    "mode": (0, 1, True),
    "tempo": (0.0, 250.0, False),
    "popularity": (0, 100, True),
    "featureWeight": (1.0, 5.0, False),
}
_SNAKE_TO_API = {"feature_weight": "featureWeight", "negative_seeds": "negativeSeeds"}


class Batch(list[T]):
    """The records of one batch call that parsed; ``bad_items`` counts those that did not.

    An ID absent from a batch with ``bad_items > 0`` may be one whose record was broken, so
    callers must not record it as "not found" (14 days): they leave it to be asked again.
    """

    def __init__(self, items: Iterable[T] = (), bad_items: int = 0) -> None:
        super().__init__(items)
        self.bad_items = bad_items


def dedup_key(endpoint: str, params: Mapping[str, Any]) -> Hashable:
    """The one key of a logical request: identical keys in flight share one call."""
    return (endpoint, tuple(sorted((k, str(v)) for k, v in params.items())))


class ReccoBeatsClient:
    """Typed access to the ReccoBeats endpoints the pipeline uses (thread-safe).

    ``settings`` is read once, through ``pipeline.config`` (``http_config``,
    ``retry_policy``). The stop signal is the limiter's (``limiter.stop``); ``wall_clock``
    is the run's (an HTTP-date ``Retry-After`` is read against it).
    """

    def __init__(
        self,
        settings: Settings,
        limiter: RateLimiter,
        metrics: RequestMetrics | None = None,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
        wall_clock: Clock = utc_now,
    ) -> None:
        self.limiter = limiter
        self.metrics = metrics if metrics is not None else RequestMetrics()
        self.http = http_config(settings)
        self.policy = retry_policy(settings)
        self.transport = Transport(
            self.http,
            self.policy,
            limiter,
            self.metrics,
            session=session,
            sleep=sleep,
            rng=rng if rng is not None else random.Random(),
            wall_clock=wall_clock,
        )
        self._flight: SingleFlight[Any] = SingleFlight(
            on_shared=lambda key: self.metrics.dedup_hit(key[0])  # type: ignore[index]
        )

    @property
    def session(self) -> requests.Session:
        return self.transport.session

    def close(self) -> None:
        """Close the session if we created it (an injected one belongs to the caller)."""
        self.transport.close()

    def __enter__(self) -> ReccoBeatsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- endpoint methods -------------------------------------------------------------------

    def get_tracks(self, ids: Sequence[str]) -> Batch[Track]:
        """Tracks for up to 40 IDs (Spotify, ReccoBeats or ISRC); unknown IDs are absent."""
        return self._batch("tracks", "/v1/track", ids, records.parse_tracks)

    def get_audio_features(self, ids: Sequence[str]) -> Batch[AudioFeatures]:
        """Audio features for up to 40 IDs; unknown IDs (or no features) are absent."""
        return self._batch("audio_features", "/v1/audio-features", ids, records.parse_features_list)

    def get_recommendations(
        self, seeds: Sequence[str], size: int | None = None, **targets: Any
    ) -> list[Track]:
        """Recommended tracks (in the API's order) for 1..5 seeds; ``size`` 1..100 (``None``:
        the ``recommendation_size`` setting)."""
        size = self.http.recommendation_size if size is None else size
        seed_ids = _clean_ids(seeds, API_MAX_SEEDS, "seeds")
        _check_int("size", size, 1, API_MAX_RECOMMENDATION_SIZE)
        params: dict[str, Any] = {"seeds": ",".join(seed_ids), "size": size}
        params.update(_clean_targets(targets))
        endpoint = "recommendation"

        def call() -> tuple[Track, ...]:
            body = self.transport.get(endpoint, "/v1/track/recommendation", params)
            if body is NOT_FOUND:
                return ()
            return self._account(endpoint, records.parse_tracks(body, endpoint)).items

        return list(self._shared(endpoint, params, call))

    # -- logical request shapes -------------------------------------------------------------

    def _batch(
        self,
        endpoint: str,
        path: str,
        ids: Sequence[str],
        parse: Callable[[object, str], ParsedList[T]],
    ) -> Batch[T]:
        asked = _clean_ids(ids, self.http.max_ids_per_call, "ids")
        params = {"ids": ",".join(asked)}

        def call() -> Batch[T]:
            body = self.transport.get(endpoint, path, params)
            if body is NOT_FOUND:
                return Batch()
            parsed = self._account(endpoint, parse(body, endpoint))
            return Batch(self._only_asked(endpoint, parsed.items, asked), parsed.bad_items)

        shared = self._shared(endpoint, params, call)
        return Batch(shared, shared.bad_items)  # a copy: callers may not mutate a shared one

    def _shared(self, endpoint: str, params: Mapping[str, Any], call: Callable[[], T]) -> T:
        """Run ``call`` once for all concurrent identical requests; count the outcome."""

        def counted() -> T:
            try:
                result = call()
            except APIError as exc:
                self.metrics.failure(endpoint, type(exc).__name__)
                raise
            self.metrics.success(endpoint)
            return result

        return self._flight.do(dedup_key(endpoint, params), counted)

    def _account(self, endpoint: str, parsed: ParsedList[T]) -> ParsedList[T]:
        if parsed.bad_items:
            log.warning("%s: skipped %d malformed item(s)", endpoint, parsed.bad_items)
        self.metrics.count_error(endpoint, "bad_item", parsed.bad_items)
        self.metrics.count_error(endpoint, "duplicate", parsed.duplicates)
        return parsed

    def _only_asked(
        self, endpoint: str, items: tuple[T, ...], asked: Sequence[str]
    ) -> tuple[T, ...]:
        """Drop records that match none of the asked IDs (Spotify, ReccoBeats or ISRC)."""
        wanted = set(asked)
        wanted_isrcs = {a.upper() for a in asked}  # ISRCs come back upper-cased
        kept = tuple(item for item in items if _matches(item, wanted, wanted_isrcs))
        dropped = len(items) - len(kept)
        if dropped:
            log.warning("%s: dropped %d record(s) nobody asked for", endpoint, dropped)
            self.metrics.count_error(endpoint, "unasked", dropped)
        return kept


# -- validation helpers -------------------------------------------------------------------


def _clean_ids(ids: Sequence[str], limit: int, what: str) -> list[str]:
    """Strip, de-duplicate and sort IDs, enforcing 1..limit.

    Sorted so that the same set always makes the same request (and shares one in flight).
    """
    if isinstance(ids, str | bytes):
        raise TypeError(f"{what} must be a sequence of IDs, not a single string")
    cleaned: list[str] = []
    for raw in ids:
        if not isinstance(raw, str) or not raw.strip():
            raise ValueError(f"{what}: every ID must be a non-empty string, got {raw!r}")
        value = raw.strip()
        if "," in value or any(ch.isspace() for ch in value):
            raise ValueError(f"{what}: ID {value!r} contains a comma or whitespace")
        cleaned.append(value)
    unique = sorted(set(cleaned))
    if not 1 <= len(unique) <= limit:
        raise ValueError(f"{what}: need 1..{limit} distinct IDs per call, got {len(unique)}")
    return unique


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")


def _clean_targets(targets: Mapping[str, Any]) -> dict[str, Any]:
    """Validate recommendation targets client-side: a 400 costs a rate-limit slot."""
    out: dict[str, Any] = {}
    for name, value in targets.items():
        api_name = _SNAKE_TO_API.get(name, name)
        if value is None:
            continue
        if api_name == "negativeSeeds":
            out[api_name] = ",".join(_clean_ids(value, API_MAX_SEEDS, "negative_seeds"))
            continue
        if api_name not in _TARGETS:
            raise ValueError(f"unknown recommendation parameter {name!r}")
        lo, hi, integer = _TARGETS[api_name]
        ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok_type or not lo <= value <= hi:
            kind = "an integer" if integer else "a number"
            raise ValueError(f"{name} must be {kind} in {lo}..{hi}, got {value!r}")
        out[api_name] = value
    return out


def _matches(item: object, wanted: set[str], wanted_isrcs: set[str]) -> bool:
    spotify_id = getattr(item, "spotify_id", None)
    reccobeats_id = getattr(item, "reccobeats_id", None)
    isrc = getattr(item, "isrc", None)
    return (
        spotify_id in wanted
        or reccobeats_id in wanted
        or (isinstance(isrc, str) and isrc.upper() in wanted_isrcs)
    )
