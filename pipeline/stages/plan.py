"""The dry run: what each endpoint will be asked and how long it takes, without a request.

Why a stage of its own: the plan asks the same cache questions the fetch stages ask (with
``count=False`` so hit rates stay honest) and must stay in step with them; it lives beside
them so a change to what a stage fetches is seen next to the plan that predicts it.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from pipeline.config import StageConfig
from pipeline.io.report import ceil_div
from pipeline.stages.recommend import plan_seed_chunks
from pipeline.stages.resolve import ids_to_resolve, resolved_ids
from pipeline.state.caches import Caches


def found_ratio(caches: Caches) -> float | None:
    """Share of the IDs the registry knows that the API had (``None``: nothing known yet)."""
    counts = caches.registry.table.status_counts()
    total = sum(counts.values())
    return counts.get("found", 0) / total if total else None


def plan_figures(
    rows: pd.DataFrame, distinct: list[str], caches: Caches, config: StageConfig
) -> dict[str, Any]:
    """Calls per endpoint: an upper bound, and the expected count once hit rates are known.

    The bound assumes every new ID resolves. The expected count scales the new IDs' feature
    calls by the registry's found ratio (the share of known IDs the API had); recommendation
    calls stay at the bound (a seed chunk vanishes only when all its tracks are missing).
    """
    ask = ids_to_resolve(distinct, caches, count=False)
    resolved = resolved_ids(caches, distinct)
    feats_unknown = len(
        caches.features.lookup(resolved["reccobeats_id"], count=False).stale_or_unknown
    )
    upper_found = set(resolved["spotify_id"]) | set(ask)
    plan = plan_seed_chunks(rows, upper_found, config) if config.recommendations else []
    fresh = caches.recommendations.fresh_keys([c.request_key for c in plan])
    size = config.chunk_size
    at_most = {
        "tracks": ceil_div(len(ask), size),
        "audio_features": ceil_div(feats_unknown + len(ask), size),
        "recommendation": len({c.request_key for c in plan} - set(fresh)),
    }
    ratio = found_ratio(caches)
    expected = dict(at_most)
    if ratio is not None:
        expected["audio_features"] = ceil_div(feats_unknown + math.ceil(len(ask) * ratio), size)
    return {
        "ids": {"distinct": len(distinct), "known": len(distinct) - len(ask), "new": len(ask)},
        "calls_at_most": at_most,
        "calls_expected": expected,
        "found_ratio": None if ratio is None else round(ratio, 4),
    }


def runs_needed(
    calls: int, eta_s: float, max_requests: int | None, time_budget_s: float | None
) -> int:
    """How many runs of the given budget the backlog takes (1 without a budget)."""
    runs = 1
    if max_requests:
        runs = max(runs, math.ceil(calls / max_requests))
    if time_budget_s:
        runs = max(runs, math.ceil(eta_s / time_budget_s))
    return runs if calls else 0
