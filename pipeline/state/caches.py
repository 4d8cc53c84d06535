"""The entity caches in the state dir, each a ``TtlTable`` with an explicit Arrow schema.

Keyed per entity, not per HTTP request (design.md section 4): a batch request's composition
changes from run to run, so request-level caches would miss. Tracks and features are keyed
by ReccoBeats ID and kept long; recommendations are keyed by the sorted seed set plus
parameters and kept just under a day, so a nightly job gets fresh ones each night.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.api.fields import FEATURE_COLUMNS
from pipeline.api.fields import INT_FEATURES as _INT_FEATURES
from pipeline.settings import Settings
from pipeline.state.registry import FOUND, MISSING, IdRegistry
from pipeline.state.ttl_table import CHECKED_AT_TYPE, Clock, Lookup, TableBacked, TtlTable, utc_now

TRACKS_FILE = "tracks.parquet"
FEATURES_FILE = "features.parquet"
RECOMMENDATIONS_FILE = "recommendations.parquet"
EMPTY = "empty"  # a recommendation request that returned no tracks

_STRINGS = pa.list_(pa.string())

#: A track as the API describes it (from ``/v1/track`` and recommendation responses alike).
_TRACK_COLUMNS = [
    ("reccobeats_id", pa.string()),
    ("spotify_id", pa.string()),
    ("title", pa.string()),
    ("artists", _STRINGS),
    ("artist_ids", _STRINGS),
    ("duration_ms", pa.int64()),
    ("popularity", pa.int64()),
    ("isrc", pa.string()),
]

TRACKS_SCHEMA = pa.schema(
    [*_TRACK_COLUMNS, ("status", pa.string()), ("checked_at", CHECKED_AT_TYPE)]  # found
)

FEATURES_SCHEMA = pa.schema(
    [("reccobeats_id", pa.string()), ("spotify_id", pa.string())]
    + [(c, pa.int64() if c in _INT_FEATURES else pa.float64()) for c in FEATURE_COLUMNS]
    + [("status", pa.string()), ("checked_at", CHECKED_AT_TYPE)]  # found | missing
)

RECOMMENDATIONS_SCHEMA = pa.schema(
    [
        ("request_key", pa.string()),
        ("rank", pa.int32()),  # 1-based; null on the single row of an empty result
        *_TRACK_COLUMNS,
        ("status", pa.string()),  # found | empty
        ("checked_at", CHECKED_AT_TYPE),
    ]
)


def tracks_cache(state_dir: Path | str, settings: Settings, clock: Clock = utc_now) -> TtlTable:
    """Track metadata by ReccoBeats ID (``status`` is always ``found``)."""
    ttl = {FOUND: timedelta(days=settings.tracks_ttl_days)}
    return TtlTable(Path(state_dir) / TRACKS_FILE, "reccobeats_id", TRACKS_SCHEMA, ttl, clock)


def features_cache(state_dir: Path | str, settings: Settings, clock: Clock = utc_now) -> TtlTable:
    """Audio features by ReccoBeats ID; ``missing`` (API has none) uses the missing TTL."""
    ttl = {
        FOUND: timedelta(days=settings.features_ttl_days),
        MISSING: timedelta(days=settings.registry_missing_ttl_days),
    }
    return TtlTable(Path(state_dir) / FEATURES_FILE, "reccobeats_id", FEATURES_SCHEMA, ttl, clock)


def request_key(seeds: Iterable[str], **params: object) -> str:
    """Canonical cache key of a recommendation request: ``'a,b,c|size=20'``.

    Seeds are de-duplicated and sorted (the API does not care about their order); params
    are sorted by name, ``None`` values dropped, so equal requests always share a key.
    """
    seed_part = ",".join(sorted(set(seeds)))
    param_part = "&".join(
        f"{name}={_param_text(value)}"
        for name, value in sorted(params.items())
        if value is not None
    )
    return f"{seed_part}|{param_part}"


def _param_text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class RecommendationCache(TableBacked):
    """Recommendation results, several rows per ``request_key`` (one per recommended track).

    A multi-row ``TtlTable``: recording a result replaces every row of its key; a request
    that returned nothing is cached as one ``empty`` row with null track fields, so it is
    not asked again tonight either. Rows come back ordered by key (asked order) then rank.
    """

    def __init__(self, state_dir: Path | str, settings: Settings, clock: Clock = utc_now) -> None:
        ttl = timedelta(hours=settings.recommendations_ttl_hours)
        self.table = TtlTable(
            Path(state_dir) / RECOMMENDATIONS_FILE,
            "request_key",
            RECOMMENDATIONS_SCHEMA,
            {FOUND: ttl, EMPTY: ttl},
            clock,
            multi_row=True,
        )

    def lookup(self, request_keys: Iterable[str]) -> Lookup:
        return self.table.lookup(request_keys)

    def fresh(self, request_keys: Iterable[str]) -> pd.DataFrame:
        """All rows of the fresh keys (an ``empty`` key yields its single null row)."""
        return self.table.fresh(request_keys)

    def stale_or_unknown(self, request_keys: Iterable[str]) -> list[str]:
        return self.table.stale_or_unknown(request_keys)

    def fresh_keys(self, request_keys: Iterable[str]) -> set[str]:
        """The distinct ``request_keys`` cached within TTL (counted as hits/misses)."""
        found = self.table.fresh(request_keys)
        return set(found["request_key"].tolist())

    def rows(self, request_keys: Iterable[str]) -> pd.DataFrame:
        """Fresh rows of ``request_keys`` without touching the hit/miss counters."""
        return self.table.lookup(request_keys, count=False).fresh

    def put(self, rows: pd.DataFrame) -> None:
        """Store ready-made rows (``request_key``, ``rank``, ``status`` ...); replaces keys."""
        self.table.put(rows)

    def record(self, key: str, tracks: pd.DataFrame | Sequence[Mapping[str, object]]) -> None:
        """Store the result of request ``key`` in rank order (``rank`` defaults to 1..n)."""
        rows = pd.DataFrame(tracks).copy() if len(tracks) else pd.DataFrame()
        if rows.empty:
            rows = pd.DataFrame({"rank": [None], "status": [EMPTY]})
        else:
            if "rank" not in rows:
                rows["rank"] = np.arange(1, len(rows) + 1, dtype=np.int32)
            rows["status"] = FOUND
        rows["request_key"] = key
        self.table.put(rows)


@dataclass
class Caches:
    """Registry + entity caches of one state dir, loaded and checkpointed together."""

    registry: IdRegistry
    tracks: TtlTable
    features: TtlTable
    recommendations: RecommendationCache

    @classmethod
    def load(cls, state_dir: Path | str, settings: Settings, clock: Clock = utc_now) -> Caches:
        """Load every table (missing files are empty, corrupt ones quarantined)."""
        return cls(
            registry=IdRegistry(state_dir, settings, clock),
            tracks=tracks_cache(state_dir, settings, clock),
            features=features_cache(state_dir, settings, clock),
            recommendations=RecommendationCache(state_dir, settings, clock),
        )

    def checkpoint_all(self) -> dict[str, int]:
        """Rewrite every changed table (and drop its journal); rows written per table."""
        return {name: table.checkpoint() for name, table in self._tables().items()}

    def journal_all(self) -> dict[str, int]:
        """Append each table's unsaved rows to its journal: cheap, so after every chunk."""
        return {name: table.journal() for name, table in self._tables().items()}

    def hit_counts(self) -> dict[str, tuple[int, int]]:
        """``{table: (hits, misses)}`` for the run report."""
        return {name: (t.hits, t.misses) for name, t in self._tables().items()}

    def stats(self) -> dict[str, dict[str, int]]:
        """Hits, misses and size per table, for the run report."""
        return {
            name: {"hits": t.hits, "misses": t.misses, "rows": len(t)}
            for name, t in self._tables().items()
        }

    def _tables(self) -> dict[str, IdRegistry | TtlTable | RecommendationCache]:
        return {
            "registry": self.registry,
            "tracks": self.tracks,
            "features": self.features,
            "recommendations": self.recommendations,
        }
