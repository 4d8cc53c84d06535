"""The attempt loop: one logical GET -> limiter permits, HTTP attempts, retries, backoff.

Design points (design.md sections 2, 8, 9):

* Every HTTP attempt, retries included, holds a limiter permit and reports its status
  back with ``limiter.on_response``. urllib3's own retries are off (``max_retries=0``) and
  redirects are not followed, so no request can slip past the limiter.
* 429: the limiter owns the shared cool-down, so the transport never sleeps for
  ``Retry-After`` itself; it just retries and the next ``acquire`` waits. A ``Retry-After``
  longer than ``max_retry_after_s`` is raised at once as ``RateLimitedError``.
* Connection errors, timeouts, 5xx and malformed JSON are retried with full-jitter
  exponential backoff; the backoff is ``stop.wait(delay)`` on the limiter's stop signal, so
  a stop ends it at once.
* Outcomes are decided from the HTTP status and parsed body fields only, never from
  message text (a past system grepped "404" in messages that embedded URLs full of IDs).
* After ``DOWN_AFTER_FAILED_REQUESTS`` logical requests in a row spent their whole retry
  budget on 5xx, transport errors or malformed bodies, the API is taken as down: every later
  request of the run fails at once instead of hammering a dead API.

Over 350 lines on purpose: the attempt loop is one state machine (retry causes, 429s, the
API-down rule, the retry window, the total deadline) whose branches must be read together;
its stateless helpers live in ``http.py`` and the deadline bookkeeping in ``inflight.py``.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any
from urllib.parse import urlencode

import requests

from pipeline.api.backoff import FULL_JITTER, backoff_s
from pipeline.api.http import (
    CODE_NOT_FOUND,
    ErrorBody,
    TooLarge,
    describe,
    is_timeout,
    parse_error_body,
    parse_retry_after,
    read_capped,
    status_kind,
)
from pipeline.api.inflight import AbortableAdapter, Exchange, InFlight
from pipeline.api.limiter import RateLimiter
from pipeline.api.metrics import AttemptToken, RequestMetrics
from pipeline.clock import Clock, utc_now
from pipeline.config import HttpConfig, RetryPolicy
from pipeline.errors import (
    APIError,
    Cancelled,
    ClientRequestError,
    RateLimitedError,
    ResponseFormatError,
    ServerError,
    TransportError,
)

log = logging.getLogger(__name__)

DOWN_AFTER_FAILED_REQUESTS = 3
#: Attempts of a request whose connection fails while nothing has answered yet this run.
NEVER_ANSWERED_ATTEMPTS = 1
#: The retry window never stretches a request beyond this many times its attempt budget.
MAX_ATTEMPTS_FACTOR = 4


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


def new_session(config: HttpConfig) -> requests.Session:
    """A session whose pool holds one connection per slot and that never retries itself."""
    session = requests.Session()
    # AbortableAdapter: an HTTPAdapter whose sockets InFlight can shut down (deadline, stop)
    adapter = AbortableAdapter(
        pool_connections=config.pool_size, pool_maxsize=config.pool_size, max_retries=0
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers.update({"User-Agent": config.user_agent, "Accept": "application/json"})
    return session


class Transport:
    """Sends one logical GET as up to ``max_retries + 1`` limiter-admitted attempts.

    Two clocks: the limiter's (monotonic: latencies, the retry window) and ``wall_clock``,
    the run's injected wall clock, which an HTTP-date ``Retry-After`` is measured against.
    """

    def __init__(
        self,
        config: HttpConfig,
        policy: RetryPolicy,
        limiter: RateLimiter,
        metrics: RequestMetrics,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
        wall_clock: Clock = utc_now,
    ) -> None:
        self.config = config
        self.policy = policy
        self._wall_clock = wall_clock
        self.limiter = limiter
        self.metrics = metrics
        self.stop = limiter.stop  # the run's one stop signal
        self._owns_session = session is None
        self.session = session if session is not None else new_session(config)
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._down_lock = threading.Lock()
        self._down_streak = 0  # requests in a row that failed after all their retries
        self.inflight = InFlight(self.stop, config.request_deadline_s)
        # Has any attempt of this run got an HTTP answer? Until one has, a refused connection
        # is most likely a wrong --base-url or an API that is down, not a blip: not retried
        # max_retries times with growing backoff (issue 12: 28 s and 45 log lines).
        self._answered = False

    def close(self) -> None:
        """Close the session if we created it (an injected one belongs to the caller)."""
        self.inflight.close()
        if self._owns_session:
            self.session.close()

    def get(self, endpoint: str, path: str, params: Mapping[str, Any]) -> Any:
        """JSON body of a successful attempt, or ``NOT_FOUND``; retries per the policy."""
        url = self.config.base_url + path
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
        first = self.limiter.clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                body = self._attempt(endpoint, url, attempt)
            except _Retryable as failure:
                never_answered = failure.reason == "connection" and not self._answered
                if self._spent(failure, attempt, first) or (
                    never_answered and attempt >= NEVER_ANSWERED_ATTEMPTS
                ):
                    if failure.reason != "429":
                        self._note_exhausted(endpoint)
                    raise failure.final(attempts=attempt) from None
                self.metrics.retry(endpoint, failure.reason)
                delay = (
                    backoff_s(
                        attempt,
                        self.policy.backoff_base_s,
                        self.policy.backoff_max_s,
                        self._rng,
                        FULL_JITTER,
                    )
                    if failure.backoff
                    else 0.0
                )
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

    def _spent(self, failure: _Retryable, attempt: int, first: float) -> bool:
        """Is the request's retry budget spent? ``max_retries`` extra attempts AND (except
        for 429s, which the limiter paces) ``retry_window_s`` since the first attempt, so an
        outage of a few seconds is ridden out; never more than ``MAX_ATTEMPTS_FACTOR`` times
        the attempts ``max_retries`` allows."""
        allowed = self.policy.max_retries + 1
        if attempt < allowed:
            return False
        if failure.reason == "429" or attempt >= allowed * MAX_ATTEMPTS_FACTOR:
            return True
        return self.limiter.clock() - first >= self.policy.retry_window_s

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
        clock = self.limiter.clock
        with self.limiter.acquire(endpoint) as permit:
            token = self.metrics.start(endpoint)
            sent = clock()
            try:
                status, raw, retry_after, content_type = self._exchange(endpoint, url, token)
            finally:
                # _exchange finishes the token itself (then this is a no-op); this only
                # keeps in-flight honest if something unexpected escapes.
                self.metrics.finish(token, None, error="unexpected")
            # Reported while the permit is still held, so a 429's cool-down is in force
            # before any thread waiting on this slot can start. The latency and the in-flight
            # count it was sent at feed the concurrency controller.
            self.limiter.on_response(
                endpoint,
                status,
                retry_after,
                started_at=permit.started_at,
                latency_s=clock() - sent,
                in_flight=permit.in_flight,
            )
        log.debug("%s attempt %d: HTTP %d, %d bytes", endpoint, attempt, status, len(raw))
        return self._interpret(endpoint, status, raw, retry_after, content_type)

    def _exchange(
        self, endpoint: str, url: str, token: AttemptToken
    ) -> tuple[int, bytes, float | None, str]:
        """One HTTP GET, body read under the size cap; transport errors become outcomes."""
        cap = self.config.max_response_bytes
        ex: Exchange | None = None
        try:
            # inflight: a total deadline on the whole exchange, and abort on stop (class 2)
            with (
                self.inflight.exchange() as ex,
                self.session.get(
                    url, timeout=self.config.timeout, stream=True, allow_redirects=False
                ) as resp,
            ):
                raw = read_capped(resp, cap)
                status = resp.status_code
                content_type = resp.headers.get("Content-Type", "")
                retry_after = (
                    parse_retry_after(
                        resp.headers.get("Retry-After"), self._wall_clock().timestamp()
                    )
                    if status == 429
                    else None
                )
        except TooLarge:
            self.metrics.finish(token, None, error="too_large")
            raise ResponseFormatError(
                f"response larger than {cap} bytes", endpoint=endpoint
            ) from None
        except requests.exceptions.SSLError as exc:
            # A TLS failure will not fix itself on retry; never downgrade verification.
            self.metrics.finish(token, None, error="tls")
            raise TransportError(f"TLS error: {exc}", endpoint=endpoint) from None
        except requests.RequestException as exc:
            if self.stop.is_set():  # InFlight shut the socket down: abandon the request
                self.metrics.finish(token, None, error="connection")
                raise Cancelled(
                    "stopped with a request in flight: abandoned (its IDs are asked next run)"
                ) from None
            expired = ex is not None and ex.expired
            kind = "timeout" if expired or is_timeout(exc) else "connection"
            self.metrics.finish(token, None, error=kind)
            what = (
                f"request exceeded its total deadline of {self.config.request_deadline_s:g}s "
                "(connect + headers + body)"
                if expired
                else f"{'request timed out' if kind == 'timeout' else 'connection failed'} "
                f"({type(exc).__name__}: {_root_cause(exc)})"
            )
            raise _Retryable(kind, partial(TransportError, what, endpoint=endpoint)) from None
        self._answered = True
        error = None if status < 400 or status == 404 else status_kind(status)
        self.metrics.finish(token, status, len(raw), error=error)
        return status, raw, retry_after, content_type

    def _interpret(
        self,
        endpoint: str,
        status: int,
        raw: bytes,
        retry_after: float | None,
        content_type: str = "application/json",
    ) -> Any:
        """Map one HTTP answer to a body, ``NOT_FOUND``, a retry or a final error.

        ``NOT_FOUND`` ("none of these exist", cached for weeks) only from the API's own
        not-found body (code 4041); a 404 page of a proxy says nothing about the IDs
        (issue 11, class 1) and fails the request like any other 4xx.
        """
        if 200 <= status < 300:
            return self._json_body(endpoint, status, raw, content_type)
        err = parse_error_body(raw)
        if status == 404 and err.code == CODE_NOT_FOUND:
            return NOT_FOUND
        if status == 404 and err.code is None:
            raise ClientRequestError(
                f"HTTP 404 whose body is not the API's not-found error ({_kind_of(content_type)}"
                "): not an answer about these IDs, nothing recorded (is base_url right?)",
                endpoint=endpoint,
                http_status=status,
            )
        if status == 429:
            return self._rate_limited(endpoint, err, retry_after)
        if status >= 500:
            raise _Retryable(
                f"http_{status}",
                partial(
                    ServerError,
                    describe(f"server error {status}", err),
                    endpoint=endpoint,
                    http_status=status,
                    api_code=err.code,
                ),
            )
        raise ClientRequestError(
            describe(f"request rejected with {status}", err),
            endpoint=endpoint,
            http_status=status,
            api_code=err.code,
        )

    def _json_body(self, endpoint: str, status: int, raw: bytes, content_type: str) -> Any:
        """A success body: a JSON object, or a retry. A page (``text/html``), invalid JSON and
        JSON that is not an object (``null``, a list...) are all "malformed": one rule, one
        retry budget (issue 11: a one-off ``null`` was not retried while invalid JSON was)."""
        if status == 204 or not raw.strip():
            return {"content": []} if status == 204 else _malformed(endpoint, status)
        if _is_html(content_type):
            self.metrics.count_error(endpoint, "malformed")
            return _malformed(endpoint, status, f"body is {_kind_of(content_type)}, not JSON")
        try:
            body = json.loads(raw)
        except ValueError:
            self.metrics.count_error(endpoint, "malformed")
            return _malformed(endpoint, status)
        if not isinstance(body, Mapping):
            self.metrics.count_error(endpoint, "malformed")
            return _malformed(
                endpoint, status, f"body is JSON {type(body).__name__}, not an object"
            )
        return body

    def _rate_limited(self, endpoint: str, err: ErrorBody, retry_after: float | None) -> Any:
        final = partial(
            RateLimitedError,
            "rate limited (429) beyond the retry budget",
            endpoint=endpoint,
            http_status=429,
            api_code=err.code,
            retry_after_s=retry_after,
        )
        cap = self.policy.max_retry_after_s
        if retry_after is not None and retry_after > cap:
            # Reported, not slept through: the run cannot afford this wait.
            raise RateLimitedError(
                f"Retry-After {retry_after:.0f}s exceeds max_retry_after_s {cap:.0f}s",
                endpoint=endpoint,
                http_status=429,
                api_code=err.code,
                retry_after_s=retry_after,
            )
        # No backoff of our own: the limiter's shared cool-down does the waiting.
        raise _Retryable("429", final, backoff=False)

    def _pause(self, seconds: float) -> None:
        """Back off: ``stop.wait(seconds)`` (or the injected sleep); a stop ends it at once."""
        if self._sleep is not None:
            if seconds > 0:
                self._sleep(seconds)
        elif seconds > 0:
            self.stop.wait(seconds)
        if self.stop.is_set():
            raise Cancelled("cancelled during retry backoff")


def _root_cause(exc: BaseException) -> str:
    """The innermost reason (``[Errno 111] Connection refused``), not urllib3's pool repr."""
    seen: BaseException = exc
    while True:
        inner = seen.__cause__ or seen.__context__ or (seen.args[0] if seen.args else None)
        if not isinstance(inner, BaseException) or inner is seen:
            break
        seen = inner
    text = str(seen)
    return text.split(": ", 1)[-1] if "NewConnectionError" in type(seen).__name__ else text


def _is_html(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("text/html", "application/xhtml+xml")


def _kind_of(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower() or "no content type"


def _malformed(endpoint: str, status: int, what: str = "body is not valid JSON") -> Any:
    raise _Retryable(
        "malformed",
        partial(
            ResponseFormatError,
            what,
            endpoint=endpoint,
            http_status=status,
        ),
    )
