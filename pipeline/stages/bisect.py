"""Bisection of a batch the API rejects (400), with a request budget and a sanity rule.

Why: one ID the API refuses (HTTP 400 with its own validation body, codes 4001-4004) makes
the whole batch of 40 fail, so the resolve stage halves the batch until the offending IDs
stand alone, and the 39 good neighbours are answered. But an API (or a proxy) that answers
400 to *every* request would then cost 2N-1 requests per chunk and, worse, record every ID
as "not found" for 14 days (issue 11, class 1). So:

* only a 400 carrying a ReccoBeats validation body is bisected; any other 400 (HTML, an
  empty body, a code that is not a validation code) fails the chunk at once, recording
  nothing (``is_validation_rejection``);
* a single ID's rejection counts as the API's verdict on that ID only when some other part
  of the same chunk was answered: if no sub-request was answered at all, the endpoint
  rejects everything, and the chunk fails with nothing recorded (``RejectsEverything``);
  after that, no other chunk of the run is bisected (``Bisector.gave_up``);
* a chunk's bisection may send at most ``budget_for(n)`` requests (4 per halving level:
  enough to isolate two bad IDs in a chunk of 40 with 24 requests instead of 79); IDs not
  isolated within it are left unrecorded and asked again next run.
"""

from __future__ import annotations

import math
import threading

from pipeline.errors import ClientRequestError

HTTP_BAD_REQUEST = 400
#: ReccoBeats error codes of a request the API itself found invalid (api notes section 4.3):
#: 4001 missing parameter, 4002 bad parameter, 4003 bad date-time, 4004 validation failed.
VALIDATION_CODES = frozenset({4001, 4002, 4003, 4004})
REQUESTS_PER_LEVEL = 4


def is_validation_rejection(exc: ClientRequestError) -> bool:
    """True for a 400 whose body is the API's own validation error (worth bisecting)."""
    return exc.http_status == HTTP_BAD_REQUEST and exc.api_code in VALIDATION_CODES


def budget_for(n_ids: int) -> int:
    """Sub-requests one chunk of ``n_ids`` may spend on bisection."""
    return REQUESTS_PER_LEVEL * max(1, math.ceil(math.log2(max(2, n_ids))))


class RejectsEverything(ClientRequestError):
    """Bisection found no part of the chunk the API would answer: nothing is recorded."""


class Bisector:
    """Run-wide bisection state shared by the resolve stage's workers (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gave_up: RejectsEverything | None = None

    @property
    def gave_up(self) -> RejectsEverything | None:
        """The first ``RejectsEverything`` of the run, once one chunk proved it."""
        with self._lock:
            return self._gave_up

    def give_up(self, error: RejectsEverything) -> None:
        with self._lock:
            if self._gave_up is None:
                self._gave_up = error


class ChunkBudget:
    """The sub-requests left to one chunk's bisection."""

    def __init__(self, n_ids: int) -> None:
        self.left = budget_for(n_ids)

    def spend(self) -> bool:
        """Take one request from the budget; False when none is left."""
        if self.left <= 0:
            return False
        self.left -= 1
        return True


def rejects_everything(chunk_size: int, first: ClientRequestError) -> RejectsEverything:
    """The error of a chunk of which no part was answered (the endpoint rejects it all)."""
    return RejectsEverything(
        f"the API rejected every request for this chunk of {chunk_size} IDs, down to single "
        f"IDs ({first}); an endpoint that rejects everything says nothing about the IDs, so "
        "nothing was recorded (asked again next run)",
        endpoint=first.endpoint,
        http_status=first.http_status,
        api_code=first.api_code,
    )
