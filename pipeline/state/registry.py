"""``IdRegistry``: what each Spotify ID resolved to, remembered across runs.

One row per Spotify ID seen: ``found`` with its ReccoBeats ID (trusted 60 days by default)
or ``missing`` (14 days), so a nightly run only asks the API about new or expired IDs.

The guard against the old system's worst bug (design.md section 9): ReccoBeats IDs fed
back as Spotify IDs were recorded as "missing" and poisoned the registry for 14 days.
Here anything that is not a 22-character base62 Spotify ID is refused with ``ValueError``
before it can be recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipeline.clock import Clock, utc_now
from pipeline.config import TtlConfig
from pipeline.io.spotify_ids import invalid_spotify_ids
from pipeline.io.storage import Storage, open_storage
from pipeline.state.ttl_columns import CHECKED_AT_TYPE
from pipeline.state.ttl_table import Lookup, TableBacked, TtlTable

REGISTRY_FILE = "registry.parquet"
FOUND = "found"
MISSING = "missing"

REGISTRY_SCHEMA = pa.schema(
    [
        pa.field("spotify_id", pa.string()),
        pa.field("reccobeats_id", pa.string()),  # null when status == missing
        pa.field("status", pa.string()),  # found | missing
        pa.field("checked_at", CHECKED_AT_TYPE),
    ]
)


def _require_spotify_ids(values: Iterable[object]) -> None:
    bad = invalid_spotify_ids(values)
    if bad:
        sample = ", ".join(repr(v) for v in bad[:3])
        raise ValueError(
            f"refusing to record {len(bad)} value(s) that are not 22-char base62 Spotify IDs "
            f"as spotify_id (e.g. {sample}); a ReccoBeats ID is not a Spotify ID"
        )


class IdRegistry(TableBacked):
    """Spotify ID -> ReccoBeats ID (or missing) with TTLs, at ``<state>/registry.parquet``."""

    def __init__(
        self, state_dir: Storage | Path | str, ttl: TtlConfig, clock: Clock = utc_now
    ) -> None:
        by_status = {FOUND: ttl.registry_found, MISSING: ttl.registry_missing}
        self.table = TtlTable(
            REGISTRY_FILE,
            "spotify_id",
            REGISTRY_SCHEMA,
            by_status,
            clock,
            store=open_storage(state_dir),
        )

    def lookup(self, spotify_ids: Iterable[str] | pd.Series, *, count: bool = True) -> Lookup:
        """Fresh rows and the distinct IDs still to resolve, counting each ID once
        (``count=False`` for the dry-run plan and re-reads)."""
        return self.table.lookup(spotify_ids, count=count)

    def known(self, spotify_ids: Iterable[str] | pd.Series, *, count: bool = True) -> pd.DataFrame:
        """Fresh rows (found and missing) for ``spotify_ids``; ``count=False`` for re-reads."""
        return self.table.lookup(spotify_ids, count=count).fresh

    def record_found(self, mapping: Mapping[str, str]) -> None:
        """Record ``spotify_id -> reccobeats_id`` answers; ValueError on a non-Spotify key."""
        if not mapping:
            return
        _require_spotify_ids(mapping.keys())
        empty = [k for k, v in mapping.items() if not isinstance(v, str) or not v]
        if empty:
            raise ValueError(f"found IDs need a ReccoBeats ID: {empty[:3]}")
        rows = pd.DataFrame(
            {
                "spotify_id": list(mapping.keys()),
                "reccobeats_id": list(mapping.values()),
                "status": FOUND,
            }
        )
        self.table.put(rows)

    def record_missing(self, spotify_ids: Iterable[str]) -> None:
        """Record IDs the API does not know; raises ValueError on a non-Spotify value."""
        ids = list(dict.fromkeys(spotify_ids))
        if not ids:
            return
        _require_spotify_ids(ids)
        self.table.put(pd.DataFrame({"spotify_id": ids, "reccobeats_id": None, "status": MISSING}))
