"""Stage 3: audio features for resolved tracks, through ``GET /v1/audio-features?ids=``.

Only tracks whose features are not cached within TTL are asked, in batches of the largest
size the API accepts (one call per track was what made the old system take minutes). Tracks
the API has no features for are cached as ``missing`` with the short TTL, so they are not
asked again every night.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from pipeline.stages.context import StageContext
from pipeline.stages.runner import StageTally, chunked, run_stage
from pipeline.state.rows_from_records import features_frame, missing_features_frame

log = logging.getLogger(__name__)


@dataclass
class FeaturesOutcome(StageTally):
    """What the stage did (``failed``: ReccoBeats IDs)."""

    resolved: int = 0
    cached: int = 0
    asked: int = 0
    found: int = 0
    missing: int = 0


def fetch_features(resolved: pd.DataFrame, ctx: StageContext) -> FeaturesOutcome:
    """Fill the features cache for ``resolved`` (columns ``spotify_id``, ``reccobeats_id``)."""
    resolved = resolved.drop_duplicates("reccobeats_id")
    out = FeaturesOutcome(resolved=len(resolved))
    caches = ctx.caches
    ask_rids = caches.features.stale_or_unknown(resolved["reccobeats_id"])
    out.cached = out.resolved - len(ask_rids)
    out.asked = len(ask_rids)
    if not ask_rids:
        log.info("features: all %d resolved tracks cached within TTL", out.resolved)
        return out
    sp_of = dict(zip(resolved["reccobeats_id"], resolved["spotify_id"], strict=True))
    rid_of = {s: r for r, s in sp_of.items()}
    # Ask by Spotify ID (confirmed live for this endpoint) and key answers by href.
    ask = [sp_of[r] for r in ask_rids]

    def fetch(chunk: list[str]) -> tuple[int, int, list[str]]:
        """(found, recorded as without features, left unsure) for one chunk."""
        feats = ctx.client.get_audio_features(chunk)
        asked = set(chunk)
        got = features_frame([f for f in feats if f.spotify_id in asked], rid_of)
        have = set(got["reccobeats_id"])
        absent = [rid_of[s] for s in chunk if rid_of[s] not in have]
        if len(got):
            caches.features.put(got)
        if feats.bad_items:  # an absent ID may be the broken record: ask again next run
            return len(got), 0, absent
        if absent:
            caches.features.put(missing_features_frame(absent, sp_of))
        return len(got), len(absent), []

    def on_result(chunk: list[str], result: tuple[int, int, list[str]]) -> None:
        found, missing, unsure = result
        out.chunks += 1
        out.found += found
        out.missing += missing
        if unsure:
            out.failed.extend(unsure)
            out.errors.append(
                f"{len(unsure)} tracks' features left unknown: the batch held malformed "
                "records (asked again next run)"
            )

    chunks = chunked(ask, ctx.config.chunk_size)
    log.info(
        "features: %d resolved, %d cached, asking %d in %d chunks",
        out.resolved,
        out.cached,
        out.asked,
        len(chunks),
    )
    run_stage(
        chunks,
        fetch,
        on_result=on_result,
        on_failure=lambda chunk, error: out.failure([rid_of[s] for s in chunk], error, "features"),
        ctx=ctx,
        max_workers=ctx.config.chunk_concurrency,
        desc="audio features",
    )
    return out
