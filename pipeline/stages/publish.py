"""Stage 5: join the answers onto the input rows and publish the date's partitions.

Every valid input row becomes one output row, whatever its fate (``ok``, ``not_found``,
``no_features``, ``failed``), so a pandas user can count outcomes without a second source.
Nothing here asks the API: publish reads only the registry and the caches.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from pipeline.api.fields import FEATURE_COLUMNS
from pipeline.clock import Clock
from pipeline.io.contract import (
    RECOMMENDATIONS_SCHEMA,
    TRACKS_SCHEMA,
    rejects_for_contract,
    tracks_for_contract,
    with_lineage,
)
from pipeline.io.reader import InputBatch
from pipeline.io.writer import (
    Output,
    has_partition,
    published_ok_ids,
    write_partition,
    write_rejects,
)
from pipeline.stages.recommend import SeedChunk, assemble_recommendations
from pipeline.state.caches import Caches

log = logging.getLogger(__name__)


def enrich_rows(
    rows: pd.DataFrame,
    caches: Caches,
    spotify_ids: list[str],
    failed_spotify_ids: Collection[str] = (),
    failed_reccobeats_ids: Collection[str] = (),
) -> pd.DataFrame:
    """One output row per valid input row: registry + track metadata + features, joined.

    A row whose answer is not in the state is ``failed`` when this run asked for it and the
    request failed after its retries, and ``pending`` when it was not asked yet (a run stopped
    by its budget): the next run asks for it either way, but only ``failed`` is a fault.
    """
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
        default="pending",
    )
    failed = out["spotify_id"].isin(failed_spotify_ids) | out["reccobeats_id"].isin(
        failed_reccobeats_ids
    )
    out.loc[failed & out["status"].eq("pending"), "status"] = "failed"
    out.loc[out["_reg"].ne("found").fillna(True), "reccobeats_id"] = None
    return out.drop(columns=["_reg", "_feat"]).sort_values("row_number", kind="stable")


def publish(
    output_dir: Output,
    run_date: date,
    batch: InputBatch,
    caches: Caches,
    plan: list[SeedChunk],
    *,
    recommendations: bool,
    failed_spotify_ids: Collection[str] = (),
    failed_reccobeats_ids: Collection[str] = (),
    force: bool = False,
    run_id: str | None = None,
    clock: Clock,
) -> dict[str, Any]:
    """Write the tracks (and recommendations) partitions and the rejects; their figures.

    The published partitions (the rejects too) are kept, unless ``force`` (setting
    ``force_publish``, ``--force``), when this run would turn rows that are ``ok`` there
    into ``failed`` or ``pending`` ones: re-running a good date while the API is down must
    not replace enriched rows with failed ones. (A smaller or different input is no
    regression: rows only need to stay as enriched as they were.) The figures then say
    what was kept.

    The files follow the schema contract (``io/contract.py``): fixed product columns, the
    input's columns in ``input_extra``, ``run_id`` and ``loaded_at`` on every row.
    """
    loaded_at = clock()  # the run's injected wall clock, like every other stamp
    rejects = rejects_for_contract(batch.rejects, run_id, loaded_at)
    distinct = pd.unique(batch.rows["spotify_id"].dropna()).tolist()
    tracks = enrich_rows(batch.rows, caches, distinct, failed_spotify_ids, failed_reccobeats_ids)
    counts = tracks["status"].value_counts().to_dict()
    status_counts = {k: int(v) for k, v in counts.items()}
    published_ok = published_ok_ids(output_dir, run_date)
    worse = tracks["status"].isin(["failed", "pending"]) & tracks["spotify_id"].isin(
        published_ok or ()
    )
    if published_ok and worse.any() and not force:
        log.warning(
            "publish %s: kept the published partitions: this run would turn %d rows that are "
            "ok there into failed/pending (--force to replace them)",
            run_date, int(worse.sum()),
        )  # fmt: skip
        return {  # the rejects too: a date's rejects describe the input of its tracks
            "paths": {},
            "track_status": status_counts,
            "kept": {
                "datasets": ["tracks", "recommendations", "rejects"],
                "ids_ok_published": len(published_ok),
                "rows_ok_this_run": status_counts.get("ok", 0),
                "rows_that_would_regress": int(worse.sum()),
                "reason": "rows ok in the published partition would become failed/pending; "
                "--force (force_publish) replaces it",
            },
        }
    paths = {
        "tracks": str(
            write_partition(
                tracks_for_contract(tracks, batch.schema.names, run_id or "", loaded_at),
                output_dir,
                "tracks",
                run_date,
                TRACKS_SCHEMA,
                run_id=run_id,
            )
        ),
    }
    if recommendations:
        recs = with_lineage(
            assemble_recommendations(batch.rows, plan, caches), run_id or "", loaded_at
        )
        paths["recommendations"] = str(
            write_partition(
                recs, output_dir, "recommendations", run_date, RECOMMENDATIONS_SCHEMA, run_id=run_id
            )
        )
    paths["rejects"] = str(write_rejects(rejects, output_dir, run_date, run_id=run_id))
    log.info("published %s: %s", run_date, counts)
    return {"paths": paths, "track_status": status_counts}


def publish_rejects_only(
    batch: InputBatch, output_dir: Output, run_date: date, clock: Clock
) -> str:
    """Publish the rejects of an input with no usable row (the run stops there, exit 2);
    where the reasons are, for its one-line error.

    A date's rejects describe the input of its published tracks, so a date that has tracks
    keeps both as they are (as ``publish`` keeps them when a run would regress them): the
    error then names the first reason instead.
    """
    if has_partition(output_dir, "tracks", run_date):
        first = batch.rejects["reason"].iloc[0] if len(batch.rejects) else "-"
        return f"first reason: {first}; the published {run_date} partitions are kept"
    rejects = rejects_for_contract(batch.rejects, None, clock())  # no run id yet
    return f"reasons in {write_rejects(rejects, output_dir, run_date)}"
