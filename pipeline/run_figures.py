"""The figures of a run: what it did (IDs, stages, failures, budget), and the dry run's plan.

Why apart from the orchestrator: these are pure functions of the stages' outcomes and the
settings, with no I/O but the learned-rate read of the dry run; ``run_job`` stays the one
place that orders the steps of a run.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pipeline.api.binding import binding_limit
from pipeline.config import StageConfig, limiter_config, stage_config
from pipeline.errors import EXIT_OK, EXIT_PARTIAL
from pipeline.io.reader import InputBatch
from pipeline.io.report import RunReport, floor_seconds
from pipeline.io.storage import Storage
from pipeline.settings import Settings
from pipeline.stages.budget import RunBudget
from pipeline.stages.features import FeaturesOutcome
from pipeline.stages.plan import plan_figures, runs_needed
from pipeline.stages.recommend import RecommendOutcome, SeedChunk
from pipeline.stages.resolve import ResolveOutcome
from pipeline.state.caches import Caches
from pipeline.state.learned_rate import (
    load_learned_concurrency,
    load_learned_latency,
    load_learned_limit,
)


@dataclass
class Fetched:
    resolve: ResolveOutcome
    features: FeaturesOutcome
    recommendations: RecommendOutcome
    plan: list[SeedChunk]

    @property
    def failures(self) -> list[str]:
        return self.resolve.errors + self.features.errors + self.recommendations.errors


def planned_requests(
    batch: InputBatch, distinct: list[str], caches: Caches, config: StageConfig
) -> int:
    """The dry-run plan's upper bound of calls: the total of the ``requests`` bar."""
    return sum(plan_figures(batch.rows, distinct, caches, config)["calls_at_most"].values())


def budget_figures(budget: RunBudget, settings: Settings) -> dict[str, Any]:
    return {
        "max_requests": settings.max_requests,
        "time_budget_s": settings.time_budget,
        "reached": budget.reached,
        "requests_spent": budget.spent,
        "past_deadline_s": None
        if budget.past_deadline_s is None
        else round(budget.past_deadline_s, 3),
        "work_order": settings.work_order,
    }


def base_figures(
    run_id: str,
    run_date: date,
    started: datetime,
    stages: Collection[str],
    batch: InputBatch,
    distinct: list[str],
    fetched: Fetched,
    stages_order: Collection[str],
) -> dict[str, Any]:
    """The run's own figures (IDs, stages, failures); the report adds requests and timing."""
    res, feat, recs = fetched.resolve, fetched.features, fetched.recommendations
    failures = fetched.failures
    failed_ids = sorted(set(res.failed))
    return {
        "run_id": run_id,
        "run_date": run_date.isoformat(),
        "started_at": started.isoformat(),
        "stages": [s for s in stages_order if s in stages],
        "status": "partial" if failures else "ok",
        "exit_code": EXIT_PARTIAL if failures else EXIT_OK,
        "input": {"files": [str(p) for p in batch.files], "id_column": batch.id_column},
        "rows": {"valid": len(batch.rows), "rejected": len(batch.rejects)},
        "ids": {
            "distinct": len(distinct),
            "known": res.known,
            "new": res.asked,
            "found": res.found,
            "missing": res.missing,
            "rejected_by_api": len(res.rejected_by_api),
            "invalid_rows": len(batch.rejects),
            "failed": len(failed_ids),
        },
        "features": {
            k: getattr(feat, k) for k in ("resolved", "cached", "asked", "found", "missing")
        },
        "recommendations": {
            k: getattr(recs, k) for k in ("playlists", "chunks", "cached", "asked", "failed")
        },
        "failures": {
            "count": len(failures),
            "messages": failures[:50],
            "failed_ids": failed_ids[:1000],
            "failed_feature_reccobeats_ids": sorted(set(feat.failed))[:1000],
        },
        "outputs": {},
    }


def dry_run_report(
    settings: Settings,
    run_date: date,
    run_id: str,
    batch: InputBatch,
    distinct: list[str],
    caches: Caches,
    state_dir: Storage,
) -> RunReport:
    """The plan without a request: calls per endpoint, the ETA, and the runs a budget needs.

    The ETA is the larger of two bounds: calls over the rate each endpoint's limits allow
    (the rate the limiter learned after 429s, when it is lower), as ``floor_seconds``
    computes it, and, once a run has saved its median latency L, calls x L over the requests
    in flight the run will hold (the learned limit, else the cap; Little's law). Why the
    second: at production latencies (20-140 s) a 16-in-flight run is bound by 16 / L, and a
    rate-only ETA was 4-15x short of what the night took. Plus one latency (the last answer).
    Still a lower bound: the matrix's night 2 (docs/benchmarks.md) took 1.06-1.17x it.
    """
    plan = plan_figures(batch.rows, distinct, caches, stage_config(settings))
    expected = plan["calls_expected"]
    total = sum(expected.values())
    learned = _learned_rate_per_min(settings, state_dir)
    eta_s = floor_seconds(expected, settings, learned)
    latency = load_learned_latency(state_dir)
    in_flight = _planned_in_flight(settings, state_dir)
    if latency is not None and total:
        # ... and the last answer comes one latency after the last start
        eta_s = max(eta_s, total * latency / in_flight) + latency
    runs = runs_needed(total, eta_s, settings.max_requests, settings.time_budget)
    tonight = total if settings.max_requests is None else min(total, settings.max_requests)
    if settings.time_budget:
        tonight = min(tonight, math.floor(total * settings.time_budget / eta_s) if eta_s else total)
    figures = {
        "run_id": run_id,
        "run_date": run_date.isoformat(),
        "status": "dry_run",
        "rows": {"valid": len(batch.rows), "rejected": len(batch.rejects)},
        "ids": plan["ids"],
        "plan": {
            "calls_at_most": plan["calls_at_most"],
            "calls_expected": expected,
            "found_ratio": plan["found_ratio"],
            "eta_s": round(eta_s, 1),
            "latency_s": latency,  # the last run's median answer latency (None: not known)
            "in_flight": in_flight,
            "rate_limit_per_min": settings.rate_limit,
            # what the adaptive limiter learned (429s held it below its ceiling), if lower
            "learned_rate_per_min": learned,
            "budget": {
                "max_requests": settings.max_requests,
                "time_budget_s": settings.time_budget,
            },
            "runs_needed": runs,
            "calls_tonight": tonight,
            **binding_limit(
                limiter_config(settings),
                rate_per_window=None if learned is None else learned * settings.window_s / 60.0,
                in_flight_limit=in_flight,
                latency_s=latency,
                endpoints=[ep for ep, n in expected.items() if n],
            ),
        },
    }
    return RunReport(run_id, run_date, "dry_run", EXIT_OK, None, figures)


def _planned_in_flight(settings: Settings, state_dir: Storage) -> int:
    """What the run will hold in flight at most: the learned limit (it starts there), else the
    cap; always the cap without adaptive concurrency."""
    learned = load_learned_concurrency(state_dir) if settings.adaptive_concurrency else None
    return min(settings.max_concurrency, learned or settings.max_concurrency)


def _learned_rate_per_min(settings: Settings, state_dir: Storage) -> float | None:
    """The rate the adaptive limiter learned (``load_learned_limit``) when it is below
    tonight's configured one; ``None`` otherwise.

    Why not the saved rate as such: a run without a 429 saves the rate it was told, and
    taken as "learned" that planned a told 600/min at last night's told 120/min.
    """
    if not settings.adaptive:
        return None
    learned = load_learned_limit(state_dir)  # per window
    if learned is None:
        return None
    per_min = learned * 60.0 / settings.window_s
    return per_min if per_min < settings.rate_limit else None
