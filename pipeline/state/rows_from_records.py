"""Cache rows built from parsed API records (pandas frames with the caches' columns).

Kept apart from the parsers so that records stay plain data and the caches' column layout
lives in one place next to the code that fills it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

from pipeline.api.records import FEATURE_COLUMNS, AudioFeatures, Track
from pipeline.state.caches import CACHED_TRACK_FIELDS

#: Column order of ``_track_values``: the cache's track fields, defined once in ``caches``.
_TRACK_NAMES = [name for name, _type in CACHED_TRACK_FIELDS]


def _track_values(t: Track) -> tuple:
    return (
        t.reccobeats_id,
        t.spotify_id,
        t.title,
        [a.name for a in t.artists if a.name is not None],
        [a.reccobeats_id for a in t.artists if a.reccobeats_id is not None],
        t.duration_ms,
        t.popularity,
        t.isrc,
    )


def tracks_frame(tracks: Iterable[Track]) -> pd.DataFrame:
    """Rows for the tracks cache (status ``found``)."""
    df = pd.DataFrame([_track_values(t) for t in tracks], columns=_TRACK_NAMES)
    df["duration_ms"] = df["duration_ms"].astype("Int64")
    df["popularity"] = df["popularity"].astype("Int64")
    df["status"] = "found"
    return df


def features_frame(features: Iterable[AudioFeatures], id_map: dict[str, str]) -> pd.DataFrame:
    """Rows for the features cache keyed by *our* ReccoBeats ID for the track.

    ``id_map`` maps Spotify ID -> ReccoBeats ID from the registry: the features body's own
    ``id`` may name another release of the same recording, and the output joins on ours.
    """
    rows = []
    for f in features:
        rid = id_map.get(f.spotify_id or "")
        if rid is None:
            continue
        rows.append([rid, f.spotify_id, *(getattr(f, c) for c in FEATURE_COLUMNS)])
    df = pd.DataFrame(rows, columns=["reccobeats_id", "spotify_id", *FEATURE_COLUMNS])
    df = df.drop_duplicates("reccobeats_id", keep="first")
    for col in ("key", "mode"):
        df[col] = df[col].astype("Int64")
    df["status"] = "found"
    return df


def missing_features_frame(
    reccobeats_ids: Sequence[str], id_map_rev: dict[str, str]
) -> pd.DataFrame:
    """Rows recording that the API has no features for these tracks (cached, short TTL)."""
    df = pd.DataFrame(
        {
            "reccobeats_id": list(reccobeats_ids),
            "spotify_id": [id_map_rev.get(r) for r in reccobeats_ids],
        }
    )
    df["status"] = "missing"
    return df


def recommendation_rows(request_key: str, tracks: Sequence[Track]) -> pd.DataFrame:
    """One row per recommended track (rank from 1), or one ``empty`` row for no results."""
    if not tracks:
        return pd.DataFrame({"request_key": [request_key], "rank": [0], "status": ["empty"]})
    df = tracks_frame(tracks)
    df.insert(0, "request_key", request_key)
    df.insert(1, "rank", range(1, len(df) + 1))
    return df
