"""The one exception hierarchy of reccobeats-etl.

Callers catch the narrowest class they can act on; the CLI maps each branch to an exit code
(see ``EXIT_CODES``)::

    ReccoBeatsError
    ├── ConfigError              a setting is invalid                         exit 2
    ├── InputError               the input cannot be read or has no usable IDs exit 2
    ├── StateError               the state dir is unusable                    exit 5
    │   └── StateLockedError     another run holds the state lock             exit 4
    ├── Cancelled                SIGINT/SIGTERM asked the run to stop         exit 130
    └── APIError                 an API call failed (after retries, if any)   exit 3
        ├── ClientRequestError   4xx the API will answer the same way again (400, 403, ...)
        ├── NotFoundError        404 on a single-resource path
        ├── RateLimitedError     429 and the retry budget or Retry-After cap ran out
        ├── ServerError          5xx after the retry budget
        ├── TransportError       connection error or timeout after the retry budget
        └── ResponseFormatError  a body that is not JSON or not of the endpoint's shape

``APIError`` carries the endpoint name, the HTTP status and the ReccoBeats 4-digit code from
the error body (``status`` field), so a message never has to be parsed to decide anything.
"""

from __future__ import annotations


class ReccoBeatsError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(ReccoBeatsError):
    """A setting is invalid; the message names it."""


class InputError(ReccoBeatsError):
    """The input cannot be used as a whole (missing file, not Parquet, no ID column...)."""


class StateError(ReccoBeatsError):
    """The state directory cannot be read or written."""


class StateLockedError(StateError):
    """Another run holds the state directory's lock."""


class Cancelled(ReccoBeatsError):
    """The run was asked to stop (signal); waits end early and state is checkpointed."""


class APIError(ReccoBeatsError):
    """An API call failed; ``endpoint``, ``http_status`` and ``api_code`` say how."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        http_status: int | None = None,
        api_code: int | None = None,
        attempts: int = 1,
    ) -> None:
        detail = [f"endpoint={endpoint}"]
        if http_status is not None:
            detail.append(f"http={http_status}")
        if api_code is not None:
            detail.append(f"code={api_code}")
        if attempts > 1:
            detail.append(f"attempts={attempts}")
        super().__init__(f"{message} ({', '.join(detail)})")
        self.endpoint = endpoint
        self.http_status = http_status
        self.api_code = api_code
        self.attempts = attempts


class ClientRequestError(APIError):
    """A 4xx (not 404/429): retrying the same request cannot succeed."""


class NotFoundError(APIError):
    """404 on a single-resource path (ReccoBeats code 4041/4042)."""


class RateLimitedError(APIError):
    """429s outlasted the retry budget, or a Retry-After was longer than the run may wait."""

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kw) -> None:
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s


class ServerError(APIError):
    """5xx after the retry budget."""


class TransportError(APIError):
    """Connection error or timeout after the retry budget."""


class ResponseFormatError(APIError):
    """The body is not JSON, or not the shape the endpoint documents."""


EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_LOCKED = 4
EXIT_STATE = 5
EXIT_CANCELLED = 130

EXIT_CODES: dict[type[ReccoBeatsError], int] = {
    ConfigError: EXIT_USAGE,
    InputError: EXIT_USAGE,
    StateLockedError: EXIT_LOCKED,
    StateError: EXIT_STATE,
    Cancelled: EXIT_CANCELLED,
    APIError: EXIT_PARTIAL,
}


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for ``exc`` (most specific class wins)."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]  # type: ignore[index]
    return EXIT_UNEXPECTED
