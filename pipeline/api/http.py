"""HTTP helpers with no state: error bodies, capped body reads, ``Retry-After``, status kinds.

Why apart from the transport: these are the rules for reading one HTTP answer defensively
(proxies answer with HTML, bodies may be huge, ``Retry-After`` may be a date or garbage).
They are pure functions of the response, tested one by one.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import requests
from urllib3.exceptions import ReadTimeoutError

#: ReccoBeats code for "URL path does not exist": a 404 that does NOT mean "not found".
CODE_NO_SUCH_PATH = 4042
#: ReccoBeats code for "no entity for the given ID": the only 404 that means "not found".
CODE_NOT_FOUND = 4041
_READ_CHUNK = 64 * 1024
_SECONDS = re.compile(r"\d+(?:\.\d+)?")


def parse_retry_after(value: str | None, now_wall: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value, or ``None`` if absent/unusable.

    Accepts delay-seconds (``"120"``, also ``"1.5"``) or an HTTP-date, which is converted
    against ``now_wall`` (epoch seconds; default ``time.time()``). A date in the past gives
    0.0. Anything else (negative, garbage) gives ``None`` so the caller falls back to its
    own backoff instead of trusting a value it cannot read.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _SECONDS.fullmatch(text):
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None or when.tzinfo is None:  # RFC 9110 dates are GMT; a naive one is garbage
        return None
    now = time.time() if now_wall is None else now_wall
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class ErrorBody:
    code: int | None
    message: str | None


def parse_error_body(raw: bytes) -> ErrorBody:
    """Read ``{status, error}`` or ``{status, errors:[{path, message}]}`` defensively.

    Proxies answer with HTML, so anything that is not the documented JSON yields
    ``(None, None)`` rather than an exception.
    """
    try:
        body = json.loads(raw.decode("utf-8", errors="replace")) if raw else None
    except ValueError:
        return ErrorBody(None, None)
    if not isinstance(body, Mapping):
        return ErrorBody(None, None)
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
    return ErrorBody(code, "; ".join(parts)[:500] or None)


class TooLarge(Exception):
    """The body exceeded the size cap (raised before all of it is read)."""


def read_capped(resp: requests.Response, cap: int) -> bytes:
    """Read the (decoded) body, stopping as soon as it exceeds ``cap`` bytes."""
    declared = resp.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise TooLarge
    buf = bytearray()
    for chunk in resp.iter_content(chunk_size=_READ_CHUNK):
        buf += chunk
        if len(buf) > cap:
            raise TooLarge
    return bytes(buf)


def is_timeout(exc: requests.RequestException) -> bool:
    """requests raises ConnectionError for a read timeout *while streaming* the body."""
    if isinstance(exc, requests.Timeout):
        return True
    return bool(exc.args) and isinstance(exc.args[0], ReadTimeoutError)


def status_kind(status: int) -> str:
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server"
    return "client"


def describe(prefix: str, err: ErrorBody) -> str:
    return f"{prefix}: {err.message}" if err.message else prefix
