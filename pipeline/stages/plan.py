"""The dry run: what each endpoint will be asked and how long it takes, without a request.

Why a stage of its own: the plan asks the same cache questions the fetch stages ask (with
``count=False`` so hit rates stay honest) and must stay in step with them; it lives beside
them so a change to what a stage fetches is seen next to the plan that predicts it.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipeline.config import StageConfig
from pipeline.io.report import ceil_div
from pipeline.stages.recommend import plan_seed_chunks
from pipeline.stages.resolve import ids_to_resolve, resolved_ids
from pipeline.state.caches import Caches


def planned_calls(
    rows: pd.DataFrame, distinct: list[str], caches: Caches, config: StageConfig
) -> tuple[int, dict[str, int]]:
    """``(ids to resolve, calls per endpoint)``: upper bounds before the first run.

    Every new ID is assumed to resolve (its features and seeds are counted), because the
    registry cannot know yet which ones the API lacks.
    """
    ask = ids_to_resolve(distinct, caches, count=False)
    resolved = resolved_ids(caches, distinct)
    feats_unknown = len(
        caches.features.lookup(resolved["reccobeats_id"], count=False).stale_or_unknown
    )
    upper_found = set(resolved["spotify_id"]) | set(ask)
    plan = plan_seed_chunks(rows, upper_found, config) if config.recommendations else []
    fresh = caches.recommendations.fresh_keys([c.request_key for c in plan])
    calls = {
        "tracks": ceil_div(len(ask), config.chunk_size),
        "audio_features": ceil_div(feats_unknown + len(ask), config.chunk_size),
        "recommendation": len({c.request_key for c in plan} - set(fresh)),
    }
    return len(ask), calls


def plan_figures(
    rows: pd.DataFrame, distinct: list[str], caches: Caches, config: StageConfig
) -> dict[str, Any]:
    new, calls = planned_calls(rows, distinct, caches, config)
    return {
        "ids": {"distinct": len(distinct), "known": len(distinct) - new, "new": new},
        "calls_at_most": calls,
    }
