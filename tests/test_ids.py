"""Spotify ID parsing: every accepted spelling, every reject reason, scalar == vector."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from pipeline.io.spotify_ids import (
    MAX_ID_LENGTH,
    classify_spotify_track_id,
    invalid_spotify_ids,
    normalise_ids,
    parse_spotify_track_id,
)

ID = "21qnJAMtzC6S5SESuqQLEK"

ACCEPTED = [
    ID,
    f"spotify:track:{ID}",
    f"https://open.spotify.com/track/{ID}",
    f"http://open.spotify.com/track/{ID}",
    f"https://open.spotify.com/track/{ID}?si=abc123",
    f"https://open.spotify.com/track/{ID}?si=abc&utm_source=copy-link",
    f"https://open.spotify.com/track/{ID}#t=30",
    f"https://open.spotify.com/track/{ID}/",
    f"https://open.spotify.com/track/{ID}/?si=x",
    f"https://open.spotify.com/intl-de/track/{ID}",
    f"https://open.spotify.com/intl-pt-BR/track/{ID}?si=1",
    f"https://open.spotify.com/embed/track/{ID}",
    f"HTTPS://OPEN.SPOTIFY.COM/track/{ID}",
    f"open.spotify.com/track/{ID}",
    f"  {ID}\t",
    f"\nspotify:track:{ID}\n",
]

REJECTED = [
    (None, "null id"),
    (np.nan, "null id"),
    (pd.NA, "null id"),
    ("", "empty id"),
    ("   ", "empty id"),
    ("spotify:album:4aawyAB9vmqN3uQ7FjRGTy", "not a Spotify track id (album)"),
    (
        "https://open.spotify.com/album/4aawyAB9vmqN3uQ7FjRGTy?si=1",
        "not a Spotify track id (album)",
    ),
    (
        "https://open.spotify.com/intl-fr/artist/4aawyAB9vmqN3uQ7FjRGTy",
        "not a Spotify track id (artist)",
    ),
    ("spotify:playlist:37i9dQZF1DXcBWIGoYBM5M", "not a Spotify track id (playlist)"),
    ("spotify:episode:4aawyAB9vmqN3uQ7FjRGTy", "not a Spotify track id (episode)"),
    ("not-a-track-id", "malformed id"),
    (ID[:-1], "malformed id"),  # 21 characters
    (ID + "A", "malformed id"),  # 23 characters
    (ID[:-1] + "-", "malformed id"),  # not base62
    (f"spotify:track:{ID}?si=1", "malformed id"),  # a URI has no query
    (f"spotify:track:{ID[:-2]}", "malformed id"),
    (f"https://example.com/track/{ID}", "malformed id"),
    (f"https://open.spotify.com/track/{ID}x", "malformed id"),
    (f"https://open.spotify.com/track/{ID}/extra", "malformed id"),
    (f"ftp://open.spotify.com/track/{ID}", "malformed id"),
    (f"{ID} {ID}", "malformed id"),
    ("Ω" * 22, "malformed id"),
    ("x" * (MAX_ID_LENGTH + 1), "too long"),
    (f"https://open.spotify.com/track/{ID}?si=" + "a" * 300, "too long"),
    (42, "not a string (int)"),
    (4.2, "not a string (float)"),
    (b"21qnJAMtzC6S5SESuqQLEK", "not a string (bytes)"),
]


@pytest.mark.parametrize("value", ACCEPTED)
def test_accepted_forms_give_the_bare_id(value: str) -> None:
    assert parse_spotify_track_id(value) == ID
    assert classify_spotify_track_id(value) == (ID, None)


@pytest.mark.parametrize(("value", "reason"), REJECTED)
def test_rejects_say_why(value: object, reason: str) -> None:
    assert classify_spotify_track_id(value) == (None, reason)
    assert parse_spotify_track_id(value) is None


def test_vector_agrees_with_scalar_on_every_case() -> None:
    values = ACCEPTED + [v for v, _ in REJECTED]
    series = pd.Series(values, dtype=object, index=pd.RangeIndex(100, 100 + len(values)))
    ids, reasons = normalise_ids(series)
    assert ids.index.equals(series.index) and reasons.index.equals(series.index)
    for value, got_id, got_reason in zip(values, ids, reasons, strict=True):
        want_id, want_reason = classify_spotify_track_id(value)
        assert (None if pd.isna(got_id) else got_id) == want_id, value
        assert (None if pd.isna(got_reason) else got_reason) == want_reason, value


@pytest.mark.parametrize("dtype", ["str", "string", object])
def test_string_series_exactly_one_of_id_or_reason(dtype: object) -> None:
    series = pd.Series([ID, None, "spotify:album:4aawyAB9vmqN3uQ7FjRGTy", f"spotify:track:{ID}"])
    ids, reasons = normalise_ids(series.astype(dtype))
    assert ids.tolist()[0] == ID and ids.tolist()[3] == ID
    assert (ids.notna() ^ reasons.notna()).all()
    assert reasons.tolist()[1:3] == ["null id", "not a Spotify track id (album)"]


def test_typed_non_string_series_rejects_every_value() -> None:
    ids, reasons = normalise_ids(pd.Series([1, None, 3], dtype="Int64"))
    assert ids.isna().all()
    assert reasons.tolist() == ["not a string (Int64)", "null id", "not a string (Int64)"]
    _, reasons = normalise_ids(pd.Series([1, 2], dtype="int64"))
    assert reasons.tolist() == ["not a string (int64)"] * 2


def test_invalid_spotify_ids_helper() -> None:
    """The registry's guard: only bare IDs pass, no spelling is normalised."""
    assert invalid_spotify_ids([ID, "x", None, f"spotify:track:{ID}"]) == [
        "x",
        None,
        f"spotify:track:{ID}",
    ]


def test_empty_series() -> None:
    ids, reasons = normalise_ids(pd.Series([], dtype="str"))
    assert len(ids) == 0 and len(reasons) == 0


def test_vectorised_on_a_million_rows() -> None:
    base = [*ACCEPTED[:8], "not-a-track-id", None]
    series = pd.Series(base * 100_000, dtype="str")
    start = time.perf_counter()
    ids, reasons = normalise_ids(series)
    elapsed = time.perf_counter() - start
    print(f"\nnormalise_ids on {len(series):,} rows: {elapsed:.2f}s")
    assert int(ids.notna().sum()) == 800_000
    assert reasons.value_counts().to_dict() == {"malformed id": 100_000, "null id": 100_000}
