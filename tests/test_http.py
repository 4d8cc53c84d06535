"""The stateless HTTP helpers: Retry-After parsing, error bodies."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from pipeline.api.http import parse_error_body, parse_retry_after


def test_parse_retry_after_seconds() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 3 ") == 3.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("0") == 0.0


def test_parse_retry_after_http_date() -> None:
    when = datetime(2025, 10, 21, 7, 28, 0, tzinfo=UTC)
    header = format_datetime(when, usegmt=True)  # "Tue, 21 Oct 2025 07:28:00 GMT"
    assert parse_retry_after(header, now_wall=when.timestamp() - 30) == pytest.approx(30.0)
    assert parse_retry_after(header, now_wall=when.timestamp() + 30) == 0.0  # past


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1e3", "nan", "12 s", "Tue, 99 Foo"])
def test_parse_retry_after_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value, now_wall=0.0) is None


def test_error_body_documented_shapes_and_garbage() -> None:
    assert parse_error_body(b'{"status": 4002, "error": "Size must be > 0"}') == (
        parse_error_body(b'{"status": 4002, "error": "Size must be > 0"}')
    )
    one = parse_error_body(b'{"status": 4002, "error": "Size must be > 0"}')
    assert (one.code, one.message) == (4002, "Size must be > 0")
    many = parse_error_body(b'{"status": 4004, "errors": [{"path": "a.size", "message": "big"}]}')
    assert (many.code, many.message) == (4004, "a.size: big")
    for raw in (b"", b"<html>502</html>", b"[1, 2]", b'{"status": true}'):
        body = parse_error_body(raw)
        assert body.code is None
