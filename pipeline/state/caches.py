"""The entity caches in the state dir, each a ``TtlTable`` with an explicit Arrow schema.

Keyed per entity, not per HTTP request (design.md section 4): a batch request's composition
changes from run to run, so request-level caches would miss. Tracks and features are keyed
by ReccoBeats ID and kept long; recommendations are keyed by the sorted seed set plus
parameters and kept just under a day, so a nightly job gets fresh ones each night.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipeline.api.fields import FEATURE_COLUMNS
from pipeline.api.fields import INT_FEATURES as _INT_FEATURES
from pipeline.clock import Clock, utc_now
from pipeline.config import TtlConfig
from pipeline.io.storage import Storage, open_storage
from pipeline.state.registry import FOUND, MISSING, IdRegistry
from pipeline.state.ttl_columns import CHECKED_AT_TYPE
from pipeline.state.ttl_table import TableBacked, TtlTable

TRACKS_FILE = "tracks.parquet"
FEATURES_FILE = "features.parquet"
RECOMMENDATIONS_FILE = "recommendations.parquet"
EMPTY = "empty"  # a recommendation request that returned no tracks

_STRINGS = pa.list_(pa.string())

#: A track as the cache keeps it (from ``/v1/track`` and recommendation responses alike);
#: not to be confused with ``io.schemas.TRACK_FIELDS``, the columns of the output dataset.
CACHED_TRACK_FIELDS = [
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
    [*CACHED_TRACK_FIELDS, ("status", pa.string()), ("checked_at", CHECKED_AT_TYPE)]  # found
)

FEATURES_SCHEMA = pa.schema(
    [("reccobeats_id", pa.string()), ("spotify_id", pa.string())]
    + [(c, pa.int64() if c in _INT_FEATURES else pa.float64()) for c in FEATURE_COLUMNS]
    + [("status", pa.string()), ("checked_at", CHECKED_AT_TYPE)]  # found | missing
)

RECOMMENDATIONS_SCHEMA = pa.schema(
    [
        ("request_key", pa.string()),
        ("rank", pa.int32()),  # 1-based; 0 on the single row of an empty result
        *CACHED_TRACK_FIELDS,
        ("status", pa.string()),  # found | empty
        ("checked_at", CHECKED_AT_TYPE),
    ]
)


StateRoot = Storage | Path | str  # a state dir, file:// URI or object-store prefix


def tracks_cache(state_dir: StateRoot, ttl: TtlConfig, clock: Clock = utc_now) -> TtlTable:
    """Track metadata by ReccoBeats ID (``status`` is always ``found``)."""
    store = open_storage(state_dir)
    by_status = {FOUND: ttl.tracks}
    return TtlTable(TRACKS_FILE, "reccobeats_id", TRACKS_SCHEMA, by_status, clock, store=store)


def features_cache(state_dir: StateRoot, ttl: TtlConfig, clock: Clock = utc_now) -> TtlTable:
    """Audio features by ReccoBeats ID; ``missing`` (API has none) uses the missing TTL."""
    by_status = {FOUND: ttl.features, MISSING: ttl.registry_missing}
    store = open_storage(state_dir)
    return TtlTable(FEATURES_FILE, "reccobeats_id", FEATURES_SCHEMA, by_status, clock, store=store)


class RecommendationCache(TableBacked):
    """Recommendation results, several rows per ``request_key`` (one per recommended track).

    A multi-row ``TtlTable``: putting a result replaces every row of its key; a request
    that returned nothing is cached as one ``empty`` row with null track fields (see
    ``rows_from_records.recommendation_rows``), so it is not asked again tonight either.
    Rows come back ordered by key (asked order) then rank.
    """

    def __init__(self, state_dir: StateRoot, ttl: TtlConfig, clock: Clock = utc_now) -> None:
        self.table = TtlTable(
            RECOMMENDATIONS_FILE,
            "request_key",
            RECOMMENDATIONS_SCHEMA,
            {FOUND: ttl.recommendations, EMPTY: ttl.recommendations},
            clock,
            multi_row=True,
            store=open_storage(state_dir),
        )

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


@dataclass
class Caches:
    """Registry + entity caches of one state dir, loaded and checkpointed together."""

    registry: IdRegistry
    tracks: TtlTable
    features: TtlTable
    recommendations: RecommendationCache
    remote: bool = False  # on object storage: journal the tables concurrently
    fenced: bool = False  # the state lock was lost: see ``fence``

    @classmethod
    def load(cls, state_dir: StateRoot, ttl: TtlConfig, clock: Clock = utc_now) -> Caches:
        """Load every table (missing files are empty, corrupt ones quarantined)."""
        state_dir = open_storage(state_dir)
        return cls(
            registry=IdRegistry(state_dir, ttl, clock),
            tracks=tracks_cache(state_dir, ttl, clock),
            features=features_cache(state_dir, ttl, clock),
            recommendations=RecommendationCache(state_dir, ttl, clock),
            remote=state_dir.remote,
        )

    def checkpoint_all(self) -> dict[str, int]:
        """Rewrite every changed table (and drop its journal); rows written per table.

        Once ``fenced``, only appends what is unsaved to the journals instead; the flag is
        read again before each table, so a fence set during a checkpoint spares the tables
        not yet rewritten (one in progress finishes: closing that needs fencing tokens).
        """
        return {
            name: table.journal() if self.fenced else table.checkpoint()
            for name, table in self._tables().items()
        }

    def fence(self) -> None:
        """From now on never rewrite a table: the state lock was lost (``lease.py``).

        Why: a checkpoint deletes every journal entry it lists, and the run that took the
        lock over appends its own there, so a rewrite would lose them. Appending still keeps
        this run's answers, and touches no file of the new owner. Safe from any thread; a
        checkpoint already running stops rewriting at its next table.
        """
        self.fenced = True

    def journal_all(self) -> dict[str, int]:
        """Append each table's unsaved rows to its journal: cheap, so after every chunk.

        On object storage each append is a PUT of ~10 ms (a local one ~2 ms), and answers
        that land while the stage loop saves are lost to a kill; so there the changed
        tables are written concurrently (the save takes one PUT's time, not one per table).
        """
        tables = self._tables()
        if not self.remote:
            return {name: table.journal() for name, table in tables.items()}
        with ThreadPoolExecutor(max_workers=len(tables), thread_name_prefix="journal") as pool:
            futures = {name: pool.submit(table.journal) for name, table in tables.items()}
        return {name: future.result() for name, future in futures.items()}

    def hit_counts(self) -> dict[str, tuple[int, int]]:
        """``{table: (hits, misses)}`` for the run report."""
        return {name: (t.hits, t.misses) for name, t in self._tables().items()}

    def _tables(self) -> dict[str, IdRegistry | TtlTable | RecommendationCache]:
        return {
            "registry": self.registry,
            "tracks": self.tracks,
            "features": self.features,
            "recommendations": self.recommendations,
        }
