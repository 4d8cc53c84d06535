"""Stage 5: join the answers onto the input rows and publish the date's partitions.

Every valid input row becomes one output row, whatever its fate (``ok``, ``not_found``,
``no_features``, ``failed``), so a pandas user can count outcomes without a second source.
Nothing here asks the API: publish reads only the registry and the caches.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.api.fields import FEATURE_COLUMNS
from pipeline.io.reader import InputBatch
from pipeline.io.schemas import RECOMMENDATION_SCHEMA, tracks_schema
from pipeline.io.writer import write_partition, write_rejects
from pipeline.stages.recommend import SeedChunk, assemble_recommendations
from pipeline.state.caches import Caches

log = logging.getLogger(__name__)


def enrich_rows(rows: pd.DataFrame, caches: Caches, spotify_ids: list[str]) -> pd.DataFrame:
    """One output row per valid input row: registry + track metadata + features, joined."""
    reg = caches.registry.known(spotify_ids, count=False)[["spotify_id", "reccobeats_id", "status"]]
    reg = reg.rename(columns={"status": "_reg"})
    rids = reg.loc[reg["_reg"] == "found", "reccobeats_id"].tolist()
    tracks = caches.tracks.fresh(rids, count=False)[
        ["reccobeats_id", "title", "artists", "duration_ms", "popularity", "isrc"]
    ]
    feats = caches.features.fresh(rids, count=False)[["reccobeats_id", "status", *FEATURE_COLUMNS]]
    feats = feats.rename(columns={"status": "_feat"})
    out = rows.merge(reg, on="spotify_id", how="left")
    out = out.merge(tracks, on="reccobeats_id", how="left")
    out = out.merge(feats, on="reccobeats_id", how="left")
    out["status"] = np.select(
        [
            out["_reg"].eq("missing").fillna(False),
            out["_feat"].eq("found").fillna(False),
            out["_feat"].eq("missing").fillna(False),
        ],
        ["not_found", "ok", "no_features"],
        default="failed",
    )
    out.loc[out["_reg"].ne("found").fillna(True), "reccobeats_id"] = None
    return out.drop(columns=["_reg", "_feat"]).sort_values("row_number", kind="stable")


def publish(
    output_dir: Path,
    run_date: date,
    batch: InputBatch,
    caches: Caches,
    plan: list[SeedChunk],
    *,
    recommendations: bool,
) -> dict[str, Any]:
    """Write the tracks (and recommendations) partitions and the rejects; their figures."""
    distinct = pd.unique(batch.rows["spotify_id"].dropna()).tolist()
    tracks = enrich_rows(batch.rows, caches, distinct)
    paths = {
        "tracks": str(
            write_partition(tracks, output_dir, "tracks", run_date, tracks_schema(batch.schema))
        ),
    }
    if recommendations:
        recs = assemble_recommendations(batch.rows, plan, caches)
        paths["recommendations"] = str(
            write_partition(recs, output_dir, "recommendations", run_date, RECOMMENDATION_SCHEMA)
        )
    paths["rejects"] = str(write_rejects(batch.rejects, output_dir, run_date))
    counts = tracks["status"].value_counts().to_dict()
    log.info("published %s: %s", run_date, counts)
    return {"paths": paths, "track_status": {k: int(v) for k, v in counts.items()}}
