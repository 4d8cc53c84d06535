"""Logging for the command line: UTC timestamps with their zone, text or JSON, under the bars.

Why this module: ``logging.basicConfig`` wrote local times without a zone (a log shipped to
another region could not be ordered), and a log line printed while a tqdm bar was drawn split
the bar and left a frozen copy behind. Here:

* text lines read ``2026-12-01T21:35:08.670Z WARNING pipeline.x: ...``: ISO 8601, always UTC,
  the zone spelled out (``Z``);
* ``--log-format json`` writes one JSON object per line (python-json-logger, a kept library:
  escaping, ``exc_info`` and extra fields are its job): ``{"ts": "...Z", "level": ...,
  "logger": ..., "message": ...}``, for log shippers;
* ``progress_safe_logging()`` routes every console handler through ``tqdm.write``
  (``tqdm.contrib.logging.logging_redirect_tqdm``), so a line is printed above the bars and
  the bars are redrawn below it, whole.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

from pythonjsonlogger.json import JsonFormatter
from tqdm.contrib.logging import logging_redirect_tqdm

from pipeline.sanitize import clean_text

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def utc_timestamp(created: float) -> str:
    """``2026-12-01T21:35:08.670Z`` for a record's ``created`` (epoch seconds)."""
    stamp = datetime.fromtimestamp(created, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


class UtcTextFormatter(logging.Formatter):
    """The text format with an ISO 8601 UTC ``asctime`` (the zone written as ``Z``)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_timestamp(record.created)

    def formatMessage(self, record: logging.LogRecord) -> str:
        # External text (error bodies, file names) must not reach a terminal raw: escape
        # control characters (issue 11). Tracebacks are appended after, unchanged.
        record.message = clean_text(record.message)
        return super().formatMessage(record)


class UtcJsonFormatter(JsonFormatter):
    """One JSON object per record: ``ts`` (UTC, ``Z``), ``level``, ``logger``, ``message``."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["ts"] = utc_timestamp(record.created)
        super().add_fields(log_data, record, message_dict)


def make_formatter(fmt: LogFormat) -> logging.Formatter:
    if fmt == "json":
        return UtcJsonFormatter()
    return UtcTextFormatter(TEXT_FORMAT)


_installed: list[logging.Handler] = []


class StderrHandler(logging.StreamHandler):
    """A stream handler writing to whatever ``sys.stderr`` is at the time of each record
    (a test's capture, a redirected stream), never to a stream closed since setup."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def setup_logging(verbose: int = 0, quiet: bool = False, fmt: LogFormat = "text") -> None:
    """Configure the root logger for a command: level, stderr handler, format.

    The handler an earlier call installed is replaced (a second ``main()`` in one process
    must not print every line twice); handlers others installed (pytest's, an embedding
    application's) are left alone.
    """
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    root = logging.getLogger()
    while _installed:
        root.removeHandler(_installed.pop())
    handler = StderrHandler()
    handler.setFormatter(make_formatter(fmt))
    root.addHandler(handler)
    _installed.append(handler)
    root.setLevel(level)
    if verbose < 2:
        logging.getLogger("urllib3").setLevel(logging.WARNING)


@contextmanager
def progress_safe_logging() -> Iterator[None]:
    """While inside, log records are written with ``tqdm.write``: above the bars, never
    through them (the formatter in use is kept)."""
    with logging_redirect_tqdm(loggers=[logging.getLogger()]):
        yield
