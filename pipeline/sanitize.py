"""One rule for text that came from outside before it reaches a terminal or a log line.

Why: a server's error body, a file name in an input directory or a column name in a user's
Parquet file can hold terminal escape sequences (``ESC [ 2 J`` clears the screen, OSC 8
forges links) and newlines that forge a line such as ``reccobeats-etl: error: ...``. So
every message the product builds from external text goes through ``clean_text``: control
characters (C0, DEL, C1), Unicode line/paragraph separators and bidirectional overrides are
replaced by a visible escape (``\\x1b``, ``\\n``, ``\\u202e``), so nothing is lost for the
reader and nothing is executed by the terminal. Plain text, including non-ASCII letters and
emoji, passes unchanged.

It is applied at the sources (every ``ReccoBeatsError`` message, parsed error bodies) and at
the sinks (the CLI's text log formatter, ``logs.UtcTextFormatter``, and its ``error:``
line), so a message is safe whichever
path it takes; applying it twice changes nothing more (the escapes are printable).
"""

from __future__ import annotations

import re

#: C0 controls (incl. \t \n \r ESC), DEL, C1 controls (incl. NEL and CSI), line and paragraph
#: separators, and the bidi embeddings/overrides/isolates used to disguise text.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean_text(text: object, limit: int | None = None) -> str:
    """``str(text)`` with every unsafe character escaped, cut to ``limit`` characters.

    The cut is made before escaping (so ``limit`` bounds what was received, not the escaped
    length) and marked with ``...``.
    """
    value = text if isinstance(text, str) else str(text)
    if limit is not None and len(value) > limit:
        value = value[:limit] + "..."
    return _UNSAFE.sub(_escape, value)


def has_unsafe(text: str) -> bool:
    """True when ``clean_text`` would change ``text`` (tests, and cheap checks)."""
    return _UNSAFE.search(text) is not None


def clean_lines(text: str) -> str:
    """``text`` with each of its own lines cleaned (for multi-line summaries we print)."""
    return "\n".join(clean_text(line) for line in text.splitlines())
