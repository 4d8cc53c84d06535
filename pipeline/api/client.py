"""``ReccoBeatsClient``: typed methods per endpoint over one ``requests.Session``.

Design points (design.md sections 2, 8, 9):

* Every HTTP attempt, retries included, holds a limiter permit and reports its status
  back with ``limiter.on_response``. urllib3's own retries are off (``max_retries=0``) and
  redirects are not followed, so no request can slip past the limiter.
* 429: the limiter owns the shared cool-down, so the client never sleeps for
  ``Retry-After`` itself; it just retries and the next ``acquire`` waits. A ``Retry-After``
  longer than ``max_retry_after_s`` is raised at once as ``RateLimitedError``.
* Connection errors, timeouts, 5xx and malformed JSON are retried with full-jitter
  exponential backoff (sleeps are interruptible by cancellation).
* Outcomes are decided from the HTTP status and parsed body fields only, never from
  message text (a past system grepped "404" in messages that embedded URLs full of IDs).
* Batch endpoints: a 404 or ``content: []`` both mean "none found" -> ``[]``. Results are
  keyed by the Spotify ID parsed from ``href``, never by position; records nobody asked
  for are dropped and counted.
* Identical concurrent logical requests share one call (``SingleFlight``).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError

from pipeline.api import records
from pipeline.api.limiter import RateLimiter, parse_retry_after
from pipeline.api.metrics import AttemptToken, RequestMetrics
from pipeline.api.records import Artist, AudioFeatures, Page, ParsedList, Track
from pipeline.api.singleflight import SingleFlight
from pipeline.errors import (
    APIError,
    Cancelled,
    ClientRequestError,
    NotFoundError,
    RateLimitedError,
    ResponseFormatError,
    ServerError,
    TransportError,
)
from pipeline.settings import (
    API_MAX_IDS_PER_CALL,
    API_MAX_RECOMMENDATION_SIZE,
    API_MAX_SEEDS,
    Settings,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: ReccoBeats code for "URL path does not exist": a 404 that does NOT mean "not found".
CODE_NO_SUCH_PATH = 4042
_PAGE_MAX = 1000
_PAGE_SIZE_MAX = 50
_SEARCH_TEXT_MAX = 1000
_READ_CHUNK = 64 * 1024
_CANCEL_POLL_S = 0.25
#: After this many logical requests in a row spent their whole retry budget on 5xx,
#: transport errors or malformed bodies, the API is taken as down: every later request of
#: the run fails at once instead of hammering a dead API with (retries + 1) attempts each.
DOWN_AFTER_FAILED_REQUESTS = 3

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


# -- retry policy -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many extra attempts a logical request may make, and how long to back off.

    ``max_retries`` is the budget of *extra* attempts (so at most ``max_retries + 1`` HTTP
    attempts), shared by every retryable cause including 429s.
    """

    max_retries: int = 4
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    max_retry_after_s: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_retries=settings.max_retries,
            backoff_base_s=settings.backoff_base_s,
            backoff_max_s=settings.backoff_max_s,
            max_retry_after_s=settings.max_retry_after_s,
        )

    def backoff_s(self, retry_number: int, rng: random.Random) -> float:
        """Full jitter (AWS style): uniform in [0, min(cap, base * 2**(n-1))].

        Full jitter spreads threads that failed together, so they do not retry in lockstep.
        """
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** max(0, retry_number - 1))
        return rng.uniform(0.0, ceiling)


# -- attempt outcomes ---------------------------------------------------------------------


class _NotFound:
    """Sentinel: the server answered 404 (a normal, cacheable answer)."""


NOT_FOUND = _NotFound()


class _Retryable(Exception):
    """One attempt failed in a way another attempt may fix.

    ``final(attempts=n)`` builds the error to raise when the budget is spent, so its message
    can say how many attempts were made.
    """

    def __init__(
        self, reason: str, final: Callable[..., APIError], *, backoff: bool = True
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.final = final
        self.backoff = backoff


@dataclass(frozen=True, slots=True)
class _ErrorBody:
    code: int | None
    message: str | None


def parse_error_body(raw: bytes) -> _ErrorBody:
    """Read ``{status, error}`` or ``{status, errors:[{path, message}]}`` defensively.

    Proxies answer with HTML, so anything that is not the documented JSON yields
    ``(None, None)`` rather than an exception.
    """
    try:
        body = json.loads(raw.decode("utf-8", errors="replace")) if raw else None
    except ValueError:
        return _ErrorBody(None, None)
    if not isinstance(body, Mapping):
        return _ErrorBody(None, None)
    code = body.get("status")
    if isinstance(code, bool) or not isinstance(code, int):
        code = None
    parts: list[str] = []
    if isinstance(body.get("error"), str):
        parts.append(body["error"])
    errors = body.get("errors")
    if isinstance(errors, list):
        for err in errors:
            if isinstance(err, Mapping):
                path, msg = err.get("path"), err.get("message")
                parts.append(f"{path}: {msg}" if path else str(msg))
    return _ErrorBody(code, "; ".join(parts)[:500] or None)


class _TooLarge(Exception):
    pass


def _read_capped(resp: requests.Response, cap: int) -> bytes:
    """Read the (decoded) body, stopping as soon as it exceeds ``cap`` bytes."""
    declared = resp.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise _TooLarge
    buf = bytearray()
    for chunk in resp.iter_content(chunk_size=_READ_CHUNK):
        buf += chunk
        if len(buf) > cap:
            raise _TooLarge
    return bytes(buf)


def _is_timeout(exc: requests.RequestException) -> bool:
    """requests raises ConnectionError for a read timeout *while streaming* the body."""
    if isinstance(exc, requests.Timeout):
        return True
    return bool(exc.args) and isinstance(exc.args[0], ReadTimeoutError)


# -- the client ---------------------------------------------------------------------------


class ReccoBeatsClient:
    """Typed access to the ReccoBeats endpoints the pipeline uses (thread-safe)."""

    def __init__(
        self,
        settings: Settings,
        limiter: RateLimiter,
        metrics: RequestMetrics | None = None,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.limiter = limiter
        self.metrics = metrics if metrics is not None else RequestMetrics()
        self.policy = RetryPolicy.from_settings(settings)
        self._owns_session = session is None
        self._session = session if session is not None else self._new_session(settings)
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._stop = threading.Event()
        self._down_lock = threading.Lock()
        self._down_streak = 0  # requests in a row that failed after all their retries
        self._flight: SingleFlight[Any] = SingleFlight(
            on_shared=lambda key: self.metrics.dedup_hit(key[0])  # type: ignore[index]
        )

    @staticmethod
    def _new_session(settings: Settings) -> requests.Session:
        session = requests.Session()
        # One pooled connection per permit (+2 spare): more would never be used, fewer
        # would make threads that hold a permit open throwaway connections.
        pool = settings.max_concurrency + 2
        adapter = HTTPAdapter(pool_connections=pool, pool_maxsize=pool, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers.update({"User-Agent": settings.user_agent, "Accept": "application/json"})
        return session

    def close(self) -> None:
        """Close the session if we created it (an injected one belongs to the caller)."""
        if self._owns_session:
            self._session.close()

    def cancel(self) -> None:
        """Cut short any backoff sleep; the next ``limiter.acquire`` raises ``Cancelled``."""
        self._stop.set()

    def __enter__(self) -> ReccoBeatsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public endpoint methods ------------------------------------------------------------

    def get_tracks(self, ids: Sequence[str]) -> Batch[Track]:
        """Tracks for up to 40 IDs (Spotify, ReccoBeats or ISRC); unknown IDs are absent."""
        return self._batch("tracks", "/v1/track", ids, records.parse_tracks)

    def get_audio_features(self, ids: Sequence[str]) -> Batch[AudioFeatures]:
        """Audio features for up to 40 IDs; unknown IDs (or no features) are absent."""
        return self._batch("audio_features", "/v1/audio-features", ids, records.parse_features_list)

    def get_track(self, reccobeats_id: str) -> Track | None:
        """One track by ReccoBeats UUID; ``None`` on 404 (a Spotify ID here is a 404 too)."""
        rid = _path_id(reccobeats_id)
        return self._single("track", f"/v1/track/{rid}", records.track_item)

    def get_track_audio_features(self, reccobeats_id: str) -> AudioFeatures | None:
        """One track's features by ReccoBeats UUID; ``None`` on 404."""
        rid = _path_id(reccobeats_id)
        return self._single(
            "track_audio_features", f"/v1/track/{rid}/audio-features", records.features_item
        )

    def get_recommendations(
        self, seeds: Sequence[str], size: int = 20, **targets: Any
    ) -> list[Track]:
        """Recommended tracks (in the API's order) for 1..5 seeds; ``size`` 1..100."""
        seed_ids = _clean_ids(seeds, API_MAX_SEEDS, "seeds")
        _check_int("size", size, 1, API_MAX_RECOMMENDATION_SIZE)
        params: dict[str, Any] = {"seeds": ",".join(seed_ids), "size": size}
        params.update(_clean_targets(targets))
        endpoint = "recommendation"

        def call() -> tuple[Track, ...]:
            body = self._request(endpoint, "/v1/track/recommendation", params)
            if body is NOT_FOUND:
                return ()
            return self._account(endpoint, records.parse_tracks(body, endpoint)).items

        return list(self._shared(endpoint, params, call))

    def search_artists(self, text: str, page: int = 0, size: int = 25) -> Page[Artist]:
        """One page of artist search (not relevance-ordered: filter client-side)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("search text must be a non-empty string")
        if len(text) > _SEARCH_TEXT_MAX:
            raise ValueError(f"search text longer than {_SEARCH_TEXT_MAX} characters")
        _check_page(page, size)
        params = {"searchText": text.strip(), "page": page, "size": size}
        return self._paged("artist_search", "/v1/artist/search", params, records.parse_artists)

    def get_artist_tracks(self, artist_id: str, page: int = 0, size: int = 25) -> Page[Track]:
        """One page of an artist's tracks (artist by ReccoBeats UUID)."""
        aid = _path_id(artist_id)
        _check_page(page, size)
        return self._paged(
            "artist_tracks",
            f"/v1/artist/{aid}/track",
            {"page": page, "size": size},
            records.parse_tracks,
        )

    def iter_artist_tracks(
        self, artist_id: str, size: int = 50, max_pages: int | None = None
    ) -> Iterator[Track]:
        """All of an artist's tracks, page by page, until ``totalPages`` or ``max_pages``.

        Tracks repeated across pages (the catalogue may shift while we page) are yielded once.
        """
        seen: set[str] = set()
        page = 0
        while max_pages is None or page < max_pages:
            result = self.get_artist_tracks(artist_id, page=page, size=size)
            for track in result.items:
                if track.spotify_id not in seen:
                    seen.add(track.spotify_id)
                    yield track
            page += 1
            if not result.items or page >= result.total_pages or page > _PAGE_MAX:
                return

    # -- logical request shapes -------------------------------------------------------------

    def _batch(
        self,
        endpoint: str,
        path: str,
        ids: Sequence[str],
        parse: Callable[[object, str], ParsedList[T]],
    ) -> Batch[T]:
        asked = _clean_ids(ids, min(self.settings.chunk_size, API_MAX_IDS_PER_CALL), "ids")
        params = {"ids": ",".join(asked)}

        def call() -> Batch[T]:
            body = self._request(endpoint, path, params)
            if body is NOT_FOUND:
                return Batch()
            parsed = self._account(endpoint, parse(body, endpoint))
            return Batch(self._only_asked(endpoint, parsed.items, asked), parsed.bad_items)

        shared = self._shared(endpoint, params, call)
        return Batch(shared, shared.bad_items)  # a copy: callers may not mutate a shared one

    def _single(self, endpoint: str, path: str, parse_item: Callable[[object], T]) -> T | None:
        def call() -> T | None:
            body = self._request(endpoint, path, {})
            if body is NOT_FOUND:
                return None
            return records.parse_single(body, endpoint, parse_item)

        return self._shared(endpoint, {"path": path}, call)

    def _paged(
        self,
        endpoint: str,
        path: str,
        params: dict[str, Any],
        parse: Callable[[object, str], ParsedList[T]],
    ) -> Page[T]:
        def call() -> Page[T]:
            body = self._request(endpoint, path, params)
            if body is NOT_FOUND:
                raise NotFoundError("resource not found", endpoint=endpoint, http_status=404)
            parsed = self._account(endpoint, parse(body, endpoint))
            return records.parse_page(body, endpoint, parsed)

        return self._shared(endpoint, {"path": path, **params}, call)

    def _shared(self, endpoint: str, params: Mapping[str, Any], call: Callable[[], T]) -> T:
        """Run ``call`` once for all concurrent identical requests; count the outcome."""
        key: Hashable = (endpoint, tuple(sorted((k, str(v)) for k, v in params.items())))

        def counted() -> T:
            try:
                result = call()
            except APIError as exc:
                self.metrics.failure(endpoint, type(exc).__name__)
                raise
            self.metrics.success(endpoint)
            return result

        return self._flight.do(key, counted)

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

    # -- the retry loop ---------------------------------------------------------------------

    def _request(self, endpoint: str, path: str, params: Mapping[str, Any]) -> Any:
        """JSON body of a successful attempt, or ``NOT_FOUND``; retries per the policy."""
        url = self.settings.base_url + path
        if params:
            # Literal commas: the ID list goes out as ONE comma-separated value.
            url += "?" + urlencode(params, safe=",")
        attempts = self.policy.max_retries + 1
        if self._down_streak >= DOWN_AFTER_FAILED_REQUESTS:
            raise ServerError(
                f"API unavailable: {self._down_streak} requests in a row failed after all "
                "their retries; no further calls this run (their IDs are asked next run)",
                endpoint=endpoint,
            )
        for attempt in range(1, attempts + 1):
            try:
                body = self._attempt(endpoint, url, attempt)
            except _Retryable as failure:
                if attempt == attempts:
                    if failure.reason != "429":
                        self._note_exhausted(endpoint)
                    raise failure.final(attempts=attempt) from None
                self.metrics.retry(endpoint, failure.reason)
                delay = self.policy.backoff_s(attempt, self._rng) if failure.backoff else 0.0
                log.warning(
                    "%s: attempt %d/%d failed (%s); retrying %s",
                    endpoint,
                    attempt,
                    attempts,
                    failure.reason,
                    f"in {delay:.2f}s" if failure.backoff else "after the limiter's cool-down",
                )
                self._pause(delay)
            else:
                with self._down_lock:
                    self._down_streak = 0
                return body
        raise AssertionError("unreachable")  # pragma: no cover

    def _note_exhausted(self, endpoint: str) -> None:
        """Count a request that spent its retry budget on 5xx/transport/malformed answers."""
        with self._down_lock:
            self._down_streak += 1
            tripped = self._down_streak == DOWN_AFTER_FAILED_REQUESTS
        if tripped:
            log.error(
                "%s: %d requests in a row failed after %d attempts each: the API looks down; "
                "stopping all calls for this run (what was fetched is saved)",
                endpoint,
                DOWN_AFTER_FAILED_REQUESTS,
                self.policy.max_retries + 1,
            )

    def _attempt(self, endpoint: str, url: str, attempt: int) -> Any:
        with self.limiter.acquire(endpoint) as permit:
            token = self.metrics.start(endpoint)
            try:
                status, raw, retry_after = self._exchange(endpoint, url, token)
            finally:
                # _exchange finishes the token itself (then this is a no-op); this only
                # keeps in-flight honest if something unexpected escapes.
                self.metrics.finish(token, None, error="unexpected")
            # Reported while the permit is still held, so a 429's cool-down is in force
            # before any thread waiting on this slot can start.
            self.limiter.on_response(endpoint, status, retry_after, started_at=permit.started_at)
        log.debug("%s attempt %d: HTTP %d, %d bytes", endpoint, attempt, status, len(raw))
        return self._interpret(endpoint, status, raw, retry_after)

    def _exchange(
        self, endpoint: str, url: str, token: AttemptToken
    ) -> tuple[int, bytes, float | None]:
        """One HTTP GET, body read under the size cap; transport errors become outcomes."""
        try:
            with self._session.get(
                url, timeout=self.settings.timeout, stream=True, allow_redirects=False
            ) as resp:
                raw = _read_capped(resp, self.settings.max_response_bytes)
                status = resp.status_code
                retry_after = (
                    parse_retry_after(resp.headers.get("Retry-After"), time.time())
                    if status == 429
                    else None
                )
        except _TooLarge:
            self.metrics.finish(token, None, error="too_large")
            raise ResponseFormatError(
                f"response larger than {self.settings.max_response_bytes} bytes",
                endpoint=endpoint,
            ) from None
        except requests.exceptions.SSLError as exc:
            # A TLS failure will not fix itself on retry; never downgrade verification.
            self.metrics.finish(token, None, error="tls")
            raise TransportError(f"TLS error: {exc}", endpoint=endpoint) from None
        except requests.RequestException as exc:
            kind = "timeout" if _is_timeout(exc) else "connection"
            self.metrics.finish(token, None, error=kind)
            raise _Retryable(
                kind,
                partial(
                    TransportError,
                    f"{'request timed out' if kind == 'timeout' else 'connection failed'} "
                    f"({type(exc).__name__})",
                    endpoint=endpoint,
                ),
            ) from None
        error = None if status < 400 or status == 404 else _status_kind(status)
        self.metrics.finish(token, status, len(raw), error=error)
        return status, raw, retry_after

    def _interpret(self, endpoint: str, status: int, raw: bytes, retry_after: float | None) -> Any:
        """Map one HTTP answer to a body, ``NOT_FOUND``, a retry or a final error."""
        if 200 <= status < 300:
            return self._json_body(endpoint, status, raw)
        err = parse_error_body(raw)
        if status == 404 and err.code != CODE_NO_SUCH_PATH:
            return NOT_FOUND
        if status == 429:
            return self._rate_limited(endpoint, err, retry_after)
        if status >= 500:
            raise _Retryable(
                f"http_{status}",
                partial(
                    ServerError,
                    _describe(f"server error {status}", err),
                    endpoint=endpoint,
                    http_status=status,
                    api_code=err.code,
                ),
            )
        raise ClientRequestError(
            _describe(f"request rejected with {status}", err),
            endpoint=endpoint,
            http_status=status,
            api_code=err.code,
        )

    def _json_body(self, endpoint: str, status: int, raw: bytes) -> Any:
        if status == 204 or not raw.strip():
            return {"content": []} if status == 204 else self._malformed(endpoint, status)
        try:
            return json.loads(raw)
        except ValueError:
            self.metrics.count_error(endpoint, "malformed")
            return self._malformed(endpoint, status)

    @staticmethod
    def _malformed(endpoint: str, status: int) -> Any:
        raise _Retryable(
            "malformed",
            partial(
                ResponseFormatError,
                "body is not valid JSON",
                endpoint=endpoint,
                http_status=status,
            ),
        )

    def _rate_limited(self, endpoint: str, err: _ErrorBody, retry_after: float | None) -> Any:
        final = partial(
            RateLimitedError,
            "rate limited (429) beyond the retry budget",
            endpoint=endpoint,
            http_status=429,
            api_code=err.code,
            retry_after_s=retry_after,
        )
        if retry_after is not None and retry_after > self.policy.max_retry_after_s:
            # Reported, not slept through: the run cannot afford this wait.
            raise RateLimitedError(
                f"Retry-After {retry_after:.0f}s exceeds max_retry_after_s "
                f"{self.policy.max_retry_after_s:.0f}s",
                endpoint=endpoint,
                http_status=429,
                api_code=err.code,
                retry_after_s=retry_after,
            )
        # No backoff of our own: the limiter's shared cool-down does the waiting.
        raise _Retryable("429", final, backoff=False)

    # -- waiting ----------------------------------------------------------------------------

    def _cancelled(self) -> bool:
        # The limiter is where a run's cancel() lands (job.py); our own event covers
        # callers that cancel just the client.
        # (``cancelled`` is not in the limiter's contract yet: used only if it appears as a
        # bool attribute/property; until then a cancelled limiter stops us at ``acquire``.)
        return self._stop.is_set() or getattr(self.limiter, "cancelled", False) is True

    def _pause(self, seconds: float) -> None:
        """Back off, interruptibly: ``cancel()`` (ours or the limiter's) ends it early.

        An injected ``sleep`` (tests) is called once; the real wait is sliced so that a
        cancellation is noticed within ``_CANCEL_POLL_S`` even mid-backoff.
        """
        if self._sleep is not None and seconds > 0:
            self._sleep(seconds)
        else:
            deadline = time.monotonic() + seconds
            while not self._cancelled():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._stop.wait(min(left, _CANCEL_POLL_S))
        if self._cancelled():
            raise Cancelled("cancelled during retry backoff")


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


def _path_id(value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("ID must be a non-empty string")
    value = value.strip()
    if any(ch in value for ch in "/?#") or any(ch.isspace() for ch in value):
        raise ValueError(f"ID {value!r} cannot be used in a URL path")
    return quote(value, safe="")


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")


def _check_page(page: int, size: int) -> None:
    _check_int("page", page, 0, _PAGE_MAX)
    _check_int("size", size, 1, _PAGE_SIZE_MAX)


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


def _status_kind(status: int) -> str:
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server"
    return "client"


def _describe(prefix: str, err: _ErrorBody) -> str:
    return f"{prefix}: {err.message}" if err.message else prefix
