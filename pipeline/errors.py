"""The one exception hierarchy of reccobeats-etl.

Callers catch the narrowest class they can act on; the CLI maps each branch to an exit code
(see ``EXIT_CODES``)::

    ReccoBeatsError
    ├── ConfigError              a setting is invalid                         exit 2
    │   └── NothingResolvedError features/recommendations run alone before resolve
    ├── InputError               the input cannot be read or has no usable IDs exit 2
    ├── StateError               the state dir is unusable                    exit 5
    │   └── StateLockedError     another run holds the state lock             exit 4
    ├── OutputError              an output file cannot be written (disk full) exit 8
    ├── NothingFetchedError      the API never answered: not one request      exit 7
    │                            succeeded (connection refused, DNS, all failed);
    │                            nothing published, the message names the URL
    ├── Cancelled                SIGINT/SIGTERM asked the run to stop         exit 130
    │   ├── SharedBudgetError    the shared budget's Redis is unreachable      exit 6
    │   └── StateLockLostError   the state lock's lease was lost mid-run       exit 9
    └── APIError                 an API call failed (after retries, if any)   exit 3
        ├── ClientRequestError   4xx the API will answer the same way again (400, 403, ...)
        ├── NotFoundError        404 on a single-resource path
        ├── RateLimitedError     429 and the retry budget or Retry-After cap ran out
        ├── ServerError          5xx after the retry budget
        ├── TransportError       connection error or timeout after the retry budget
        └── ResponseFormatError  a body that is not JSON or not of the endpoint's shape

Exit codes of runs that raise nothing: 0 ok; 3 partial (some requests failed after their
retries: worth a retry); 10 budget reached (``max_requests``/``time_budget`` spent, the
partition published with the rest ``pending``: a success with more to do, not a failure).

``APIError`` carries the endpoint name, the HTTP status and the ReccoBeats 4-digit code from
the error body (``status`` field), so a message never has to be parsed to decide anything.
"""

from __future__ import annotations

from typing import Any

from pipeline.sanitize import clean_text


class ReccoBeatsError(Exception):
    """Base of every error this package raises on purpose.

    Its message is passed through ``clean_text``: messages quote server bodies, file and
    column names, and a terminal must never receive their control characters.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(clean_text(a) if isinstance(a, str) else a for a in args))


class ConfigError(ReccoBeatsError):
    """A setting is invalid; the message names it."""


class NothingResolvedError(ConfigError):
    """``--stage features`` / ``recommendations`` run alone on IDs the registry knows none of.

    For a user at a terminal it is a usage error: the resolve stage has not run. Its own
    class because the Airflow DAG meets it legitimately: a resolve task stopped by its budget
    before any answer came back succeeds with more to do, and the features task after it has
    nothing to fetch yet, which is no failure (``airflow_dags/``).
    """


class InputError(ReccoBeatsError):
    """The input cannot be used as a whole (missing file, not Parquet, no ID column...)."""


class StateError(ReccoBeatsError):
    """The state directory cannot be read or written."""


class OutputError(ReccoBeatsError):
    """An output file (partition, rejects, run report) cannot be written: disk full,
    permissions, an I/O error. The previous partition of the date stays published and the
    answers are in the state dir, so a re-run publishes without asking the API again."""


class StateLockedError(StateError):
    """Another run holds the state directory's lock."""


class NothingFetchedError(ReccoBeatsError):
    """Nothing could be fetched: the API at ``base_url`` never answered this run.

    Its own exit code (7), apart from "partial" (3): a scheduler retrying a partial run
    makes progress; retrying while the URL is wrong or the API is down does not, and no
    partition is published (an all-``failed`` one would replace a good day).
    """


class Cancelled(ReccoBeatsError):
    """The run was asked to stop (signal); waits end early and state is checkpointed.

    ``report_path`` is set by the job once it has written the interrupted run's report.
    """

    report_path: object = None


class SharedBudgetError(Cancelled):
    """The shared budget (``shared_budget``, Redis) cannot be reached, at start or mid-run.

    A ``Cancelled`` because the run must stop exactly as on a signal: every wait ends, no
    request starts, state is checkpointed. Never a fallback to an unshared limiter, which
    would multiply the rate by the number of processes. Its own exit code (6) lets a
    scheduler tell "Redis down, retry later" from a stop it asked for.
    """


class StateLockLostError(Cancelled):
    """The lease on an object-store state lock (``state/lease.py``) was lost mid-run.

    Another run took the lock over (this one was paused past ``lock_lease_s``), or the lease
    could not be renewed before it expired. The state now belongs to someone else, so the
    run stops at once through the stop event, as on a signal, and its saves after the loss
    only append to the journal (``Caches.fence``): a checkpoint would delete the new
    owner's journal entries. A ``Cancelled`` for that reason; its own exit code (9) because,
    unlike a stop a scheduler asked for, it says the lease is too short for the host.
    """


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

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kw: Any) -> None:
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
EXIT_SHARED_BUDGET = 6
EXIT_OUTPUT = 8
EXIT_NOTHING_FETCHED = 7
EXIT_LOCK_LOST = 9
EXIT_BUDGET_REACHED = 10
EXIT_CANCELLED = 130

EXIT_CODES: dict[type[BaseException], int] = {
    ConfigError: EXIT_USAGE,
    InputError: EXIT_USAGE,
    StateLockedError: EXIT_LOCKED,
    StateError: EXIT_STATE,
    OutputError: EXIT_OUTPUT,
    SharedBudgetError: EXIT_SHARED_BUDGET,
    StateLockLostError: EXIT_LOCK_LOST,
    NothingFetchedError: EXIT_NOTHING_FETCHED,
    Cancelled: EXIT_CANCELLED,
    APIError: EXIT_PARTIAL,
}


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for ``exc`` (most specific class wins)."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return EXIT_UNEXPECTED
