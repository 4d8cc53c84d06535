"""Benchmark workloads: input Parquet files of synthetic tracks, and the minimum calls C.

Every workload draws its Spotify IDs from the simulator's synthetic catalog (so N can exceed
the bundled sample); about 4 % of them are unknown to the API, as in the real catalog. Rows
are grouped into playlists of ``PLAYLIST_SIZE`` tracks, so recommendations are part of C.
The minimum C is computed from the catalog alone, not from the pipeline's own planning code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.simulator import Catalog

BATCH = 40  # IDs per batch call (the API's maximum)
SEEDS = 5  # seeds per recommendation call (the API's maximum)
MAX_CHUNKS = 4  # Settings.max_seed_chunks_per_playlist default
PLAYLIST_SIZE = 250
SYNTHETIC = 11_000  # enough for 10,000 + 5 % new
SEED = 7


def catalog() -> Catalog:
    return Catalog.load(extra_synthetic=SYNTHETIC, seed=SEED)


def synthetic_ids() -> list[str]:
    """The synthetic part of the catalog (known and unknown), in a fixed order."""
    return list(catalog().all_spotify_ids[-SYNTHETIC:])


@dataclass(frozen=True)
class Workload:
    rows: pd.DataFrame  # playlist_id, spotify_track_id

    def write(self, path: Path, repeat: int = 1) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(self.rows, preserve_index=False)
        if repeat > 1:
            table = pa.concat_tables([table] * repeat)
        pq.write_table(table, path)
        return path


def workload(ids: list[str], first_playlist: int = 0) -> Workload:
    playlists = [f"pl{first_playlist + i // PLAYLIST_SIZE:04d}" for i in range(len(ids))]
    return Workload(pd.DataFrame({"playlist_id": playlists, "spotify_track_id": ids}))


def min_calls(rows: pd.DataFrame, known_before: set[str] = frozenset()) -> dict[str, int]:
    """The fewest calls that enrich ``rows`` when ``known_before`` IDs (and their playlists'
    recommendations) are already cached: one batch call per 40 new IDs, one per 40 new
    resolvable IDs for features, one per 5 resolvable seeds (at most 4 per playlist) for
    playlists that have a new track."""
    known = catalog().known_spotify_ids
    ids = pd.unique(rows["spotify_track_id"])
    new = [s for s in ids if s not in known_before]
    new_found = [s for s in new if s in known]
    recs = 0
    for _, group in rows.groupby("playlist_id", sort=False):
        members = pd.unique(group["spotify_track_id"])
        if all(s in known_before for s in members):
            continue
        found = sum(1 for s in members if s in known)
        recs += min(math.ceil(found / SEEDS), MAX_CHUNKS)
    return {
        "tracks": math.ceil(len(new) / BATCH),
        "audio_features": math.ceil(len(new_found) / BATCH),
        "recommendation": recs,
    }
