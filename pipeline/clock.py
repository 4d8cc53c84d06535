"""The one wall clock the pipeline reads, so tests can inject another."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

#: A wall clock: returns an aware UTC ``datetime``. Everything that stamps time takes one.
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)
