"""The one wall clock the pipeline reads, so tests can inject another."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime

#: A wall clock: returns an aware UTC ``datetime``. Everything that stamps time takes one.
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([hms]?)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}


def parse_duration(value: str | float | int) -> float:
    """Seconds from ``"90m"``, ``"2h"``, ``"1h30m"``, ``"45s"`` or plain seconds (``"5400"``)."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().lower().replace(" ", "")
        pos, seconds = 0, 0.0
        for m in _PART.finditer(text):
            if m.start() != pos or not m.group(0):
                break
            if not m.group(2) and (pos or m.end() != len(text)):
                pos = -1  # a bare number only stands alone ("5400"), never after "5m"
                break
            seconds += float(m.group(1)) * _UNIT_S[m.group(2)]
            pos = m.end()
        if not text or pos != len(text):
            raise ValueError(f"{value!r} is not a duration (use e.g. 5400, 90m, 2h, 1h30m)")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{value!r}: a duration must be positive")
    return seconds
