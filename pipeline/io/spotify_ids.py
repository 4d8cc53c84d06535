"""Spotify track ID parsing: pure functions, no I/O.

Track lists arrive with IDs in several spellings (bare IDs, ``spotify:track:`` URIs,
``open.spotify.com`` share links with ``?si=`` tracking parameters). The API only knows the
bare 22-character base62 ID, and the registry is keyed by it, so every spelling is
normalised to that form here, once, before anything is deduplicated or sent.

Accepted (after stripping surrounding whitespace):

* ``21qnJAMtzC6S5SESuqQLEK`` (22 characters of ``[0-9A-Za-z]``)
* ``spotify:track:21qnJAMtzC6S5SESuqQLEK``
* ``[http[s]://]open.spotify.com/[intl-xx[-yy]/][embed/]track/<id>[/][?query][#fragment]``
  (scheme and host are case-insensitive; the ID never is: base62 is case-sensitive)

Anything else is rejected with a human-readable reason (``REASON_*`` below), never dropped.

Two entry points that agree on every input (the tests check it):

* ``parse_spotify_track_id(value)``: one value, Python ``re``; for callers holding one ID.
* ``normalise_ids(series)``: a whole column, vectorised through pandas ``.str`` on Arrow
  strings (RE2 underneath), because the reader sees up to millions of rows and a per-row
  Python loop costs seconds per million.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import pandas as pd
import pyarrow as pa

#: Values longer than this are rejected unparsed: the longest valid form (a URL with a
#: tracking query) is well under 200 characters, and a cap keeps pathological cells (a
#: whole document pasted into a cell) away from the regex engine.
MAX_ID_LENGTH = 200

REASON_NULL = "null id"
REASON_EMPTY = "empty id"
REASON_TOO_LONG = "too long"
REASON_MALFORMED = "malformed id"
REASON_NOT_TRACK = "not a Spotify track id ({kind})"
REASON_NOT_STRING = "not a string ({type})"

#: A bare Spotify track ID: 22 characters of base62. The one definition of the pattern.
SPOTIFY_ID_PATTERN = r"[0-9A-Za-z]{22}"
_B62 = SPOTIFY_ID_PATTERN
_HOST = r"(?:(?i:https?)://)?(?i:open\.spotify\.com)/(?:intl-[A-Za-z]{2}(?:[-_][A-Za-z]{2})?/)?"
# One named group per spelling: RE2 (Arrow) and Python ``re`` report unmatched groups
# differently ("" vs NaN), so ``normalise_ids`` folds them together whatever the backend.
_TRACK_BODY = (
    rf"(?P<bare>{_B62})"
    rf"|spotify:track:(?P<uri>{_B62})"
    rf"|{_HOST}(?:embed/)?track/(?P<url>{_B62})/?(?:[?#].*)?"
)
_KINDS = "album|artist|playlist|episode|show|user|audiobook|chapter|local|collection"
_OTHER_KIND_BODY = rf"spotify:(?P<uri_kind>{_KINDS}):.*|{_HOST}(?:embed/)?(?P<url_kind>{_KINDS})/.*"

_TRACK_RE = re.compile(_TRACK_BODY, re.DOTALL)
_OTHER_KIND_RE = re.compile(_OTHER_KIND_BODY, re.DOTALL)

# Arrow's RE2 anchors: ``$`` matches only at the very end without the m flag, like \Z.
_TRACK_PATTERN_RE2 = rf"^(?:{_TRACK_BODY})$"
_OTHER_KIND_PATTERN_RE2 = rf"^(?:{_OTHER_KIND_BODY})$"
_TEXT = pd.ArrowDtype(pa.large_string())


def parse_spotify_track_id(value: Any) -> str | None:
    """The bare track ID in ``value``, or ``None`` if it is not a Spotify track reference."""
    return classify_spotify_track_id(value)[0]


def classify_spotify_track_id(value: Any) -> tuple[str | None, str | None]:
    """``(id, None)`` for a track reference, else ``(None, reason)``; scalar twin of
    ``normalise_ids`` for callers that need to say *why* one value was refused."""
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return None, REASON_NULL
    if not isinstance(value, str):
        return None, REASON_NOT_STRING.format(type=type(value).__name__)
    if len(value) > MAX_ID_LENGTH:
        return None, REASON_TOO_LONG
    text = value.strip()
    if not text:
        return None, REASON_EMPTY
    match = _TRACK_RE.fullmatch(text)
    if match:
        return match["bare"] or match["uri"] or match["url"], None
    other = _OTHER_KIND_RE.fullmatch(text)
    if other:
        return None, REASON_NOT_TRACK.format(kind=other["uri_kind"] or other["url_kind"])
    return None, REASON_MALFORMED


def invalid_spotify_ids(values: Iterable[object]) -> list[object]:
    """The values that are not bare 22-char base62 Spotify IDs (vectorised; no spelling is
    normalised here: a registry key must already be bare)."""
    s = pd.Series(list(values), dtype=object)
    ok = s.astype("string").str.fullmatch(SPOTIFY_ID_PATTERN).fillna(False).astype(bool)
    return s[~ok.to_numpy()].tolist()


def normalise_ids(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Normalise a column of Spotify track references without a per-row Python loop.

    Returns ``(ids, reasons)``, both aligned with ``series.index`` and of dtype
    ``ArrowDtype(large_string)``: exactly one of the two is non-null in every row, so a
    caller can split rows into valid and rejected without losing any.
    """
    text, reasons = _as_text(series)
    reasons = reasons.mask(reasons.isna() & text.isna(), REASON_NULL)
    too_long = text.str.len() > MAX_ID_LENGTH
    reasons = reasons.mask(too_long.fillna(False).astype(bool), REASON_TOO_LONG)
    text = text.where(reasons.isna())  # only plausible candidates reach the regex
    text = text.str.strip()
    empty = (text == "").fillna(False).astype(bool)
    reasons = reasons.mask(empty, REASON_EMPTY)
    text = text.mask(empty)

    ids = _extract_track_ids(text)
    unparsed = (text.notna() & ids.isna()).astype(bool)
    reasons = reasons.mask(unparsed, _explain_unparsed(text[unparsed]))
    return ids, reasons


def _as_text(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``series`` as Arrow strings (non-strings -> NA) plus the reasons for the non-strings.

    Arrow strings matter for speed: pandas runs ``.str`` regexes on them through RE2 in C.
    """
    reasons = pd.Series(pd.NA, index=series.index, dtype=_TEXT)
    if _is_string_dtype(series.dtype):
        return series.astype(_TEXT), reasons
    if series.dtype != object:
        # A typed non-string column (int64, float64, bool...): every value has that type.
        reasons = reasons.mask(series.notna(), REASON_NOT_STRING.format(type=series.dtype))
        return pd.Series(pd.NA, index=series.index, dtype=_TEXT), reasons
    inferred = pd.api.types.infer_dtype(series, skipna=True)
    if inferred in ("string", "empty"):
        return series.astype(_TEXT), reasons
    # Mixed object column: the only case that needs a per-value type check.
    is_str = series.map(lambda v: isinstance(v, str)).astype(bool)
    bad = series.notna() & ~is_str
    names = series[bad].map(lambda v: REASON_NOT_STRING.format(type=type(v).__name__))
    reasons = reasons.mask(bad, names.astype(_TEXT))
    return series.where(is_str).astype(_TEXT), reasons


def _is_string_dtype(dtype: Any) -> bool:
    if isinstance(dtype, pd.StringDtype):
        return True
    if isinstance(dtype, pd.ArrowDtype):
        return pa.types.is_string(dtype.pyarrow_dtype) or pa.types.is_large_string(
            dtype.pyarrow_dtype
        )
    return False


def _extract_track_ids(text: pd.Series) -> pd.Series:
    """The bare ID for rows matching one accepted spelling, NA elsewhere."""
    groups = text.str.extract(_TRACK_PATTERN_RE2, expand=True)
    matched = groups.notna().any(axis=1) & text.notna()
    joined = groups["bare"].fillna("") + groups["uri"].fillna("") + groups["url"].fillna("")
    return joined.astype(_TEXT).where(matched.astype(bool))


def _explain_unparsed(text: pd.Series) -> pd.Series:
    """Reasons for strings that are not track references (usually a handful of rows)."""
    if text.empty:
        return pd.Series(dtype=_TEXT, index=text.index)
    groups = text.str.extract(_OTHER_KIND_PATTERN_RE2, expand=True)
    kind = (groups["uri_kind"].fillna("") + groups["url_kind"].fillna("")).astype(_TEXT)
    not_track = ("not a Spotify track id (" + kind + ")").astype(_TEXT)
    return not_track.where(kind != "", REASON_MALFORMED).astype(_TEXT)
