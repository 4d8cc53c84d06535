"""The nightly job: read -> resolve IDs -> features -> recommendations -> write -> report.

``run_job`` is the one function cron, Airflow and the CLI call. Stages are idempotent: the
registry and caches in the state dir remember every answer within its TTL, so running the
stages as separate calls (separate Airflow tasks) makes the same requests as one full run,
and a killed run resumes from its last checkpoint. ``publish`` runs whatever fetch stages
still have work, then writes the date partitions and the run report.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.api.client import ReccoBeatsClient
from pipeline.api.backends import open_shared_budget
from pipeline.api.limiter import RateLimiter
from pipeline.api.metrics import RequestMetrics
from pipeline.clock import Clock, utc_now
from pipeline.config import limiter_config, stage_config
from pipeline.errors import EXIT_OK, EXIT_PARTIAL, Cancelled, ConfigError, InputError
from pipeline.io.reader import InputBatch, read_input
from pipeline.io.report import RunReport, build_report, floor_seconds, write_report
from pipeline.io.writer import check_output_dir, sweep_stale_temp_files, write_rejects
from pipeline.settings import Settings
from pipeline.stages.context import StageContext
from pipeline.stages.features import FeaturesOutcome, FeaturesWork
from pipeline.stages.plan import plan_figures
from pipeline.stages.publish import publish
from pipeline.stages.recommend import RecommendOutcome, RecommendWork, SeedChunk, plan_seed_chunks
from pipeline.stages.resolve import ResolveOutcome, ResolveWork, resolved_ids
from pipeline.stages.runner import StageWork, run_stages
from pipeline.state.caches import Caches
from pipeline.state.learned_rate import load_learned_rate, save_learned_rate
from pipeline.state.lock import StateLock
from pipeline.stop import StopSignal

log = logging.getLogger(__name__)

STAGES = ("resolve", "features", "recommendations", "publish")


def _want_progress(flag: bool | None) -> bool:
    return sys.stderr.isatty() if flag is None else flag


def new_run_id(run_date: date, now: datetime) -> str:
    return f"{run_date.isoformat()}_{now.strftime('%Y%m%dT%H%M%SZ')}_{uuid.uuid4().hex[:6]}"


def run_job(
    settings: Settings,
    run_date: date,
    *,
    stages: Collection[str] = STAGES,
    dry_run: bool = False,
    progress: bool | None = None,
    cancel: threading.Event | None = None,
    clock: Clock = utc_now,
) -> RunReport:
    """Run the job for ``run_date``; see the module docstring for the stage semantics.

    Raises ``InputError``/``ConfigError`` for unusable input or settings and
    ``StateLockedError`` when another run holds the state dir. Requests that fail after
    their retries do not raise: the run finishes, writes what it has, and returns
    ``status="partial"`` with exit code 3 and the failures listed in the report.
    """
    _check_call(settings, stages, dry_run)
    started = clock()
    t0 = time.monotonic()
    show = _want_progress(settings.progress if progress is None else progress)
    batch = _read(settings, run_date)
    distinct = pd.unique(batch.rows["spotify_id"].dropna()).tolist()
    run_id = new_run_id(run_date, started)
    log.info(
        "run %s: %d rows (%d rejected), %d distinct IDs from %d file(s)",
        run_id, len(batch.rows), len(batch.rejects), len(distinct), len(batch.files),
    )  # fmt: skip
    state_dir = Path(settings.state_dir)
    with StateLock(state_dir, settings.lock_wait_s):
        caches = Caches.load(state_dir, settings, clock)
        if dry_run:
            return _dry_run(settings, run_date, run_id, batch, distinct, caches)
        with ApiResources(settings, state_dir, cancel or StopSignal(), clock) as api:
            ctx = StageContext(api.client, caches, stage_config(settings), api.stop, show)
            try:
                fetched = _fetch(set(stages), batch, distinct, ctx)
            except Cancelled as exc:
                log.warning("run %s: stop requested; checkpointing state", run_id)
                caches.checkpoint_all()
                lost = api.budget.lost if api.budget is not None else None
                if lost is not None and lost is not exc:
                    raise lost from exc  # Redis went away: exit 6, not 130
                raise
        base = _base_figures(run_id, run_date, started, stages, batch, distinct, fetched)
        if "publish" in stages:
            base["outputs"] = publish(
                Path(settings.output_dir),
                run_date,
                batch,
                caches,
                fetched.plan,
                recommendations=settings.recommendations,
            )
        figures = build_report(
            base=base,
            settings=settings,
            metrics=api.metrics.snapshot(),
            limiter=api.limiter.stats(),
            caches=caches.hit_counts(),
            wall_s=time.monotonic() - t0,
            api_wall_s=api.wall_s,
        )
        figures["timeline"] = api.metrics.timeline()
        path = write_report(figures, Path(settings.output_dir))
        figures["report_path"] = str(path)
    return RunReport(run_id, run_date, base["status"], base["exit_code"], path, figures)


def _check_call(settings: Settings, stages: Collection[str], dry_run: bool) -> None:
    unknown = set(stages) - set(STAGES)
    if unknown or not stages:
        raise ConfigError(f"setting 'stages': unknown {sorted(unknown)}; choose from {STAGES}")
    if settings.input is None:
        raise ConfigError("setting 'input': no input given (--input or RECCOBEATS_INPUT)")
    if not dry_run:
        check_output_dir(Path(settings.output_dir))  # before any request, not at publish
        sweep_stale_temp_files(Path(settings.output_dir))


def _read(settings: Settings, run_date: date) -> InputBatch:
    """The input, or ``InputError`` when not one row has a usable ID (rejects still written)."""
    batch = read_input(Path(settings.input or ""), settings.id_column)
    if batch.rows.empty:
        kept = write_rejects(batch.rejects, Path(settings.output_dir), run_date)
        raise InputError(
            f"no valid track IDs in {settings.input}: all {len(batch.rejects)} rows rejected "
            f"(reasons in {kept})"
        )
    return batch


class ApiResources:
    """The run's one limiter, client and metrics; on exit, the learned rate is saved.

    ``stop`` is the run's one stop signal: the limiter, the transport's backoffs and the
    stages all wait on it, so setting it ends every wait at once.
    """

    def __init__(
        self,
        settings: Settings,
        state_dir: Path,
        stop: threading.Event,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._state_dir = state_dir
        self._clock = clock
        self.stop = stop
        # Shared budget (issue 13): the limiter's state in Redis; unreachable -> exit 6 here.
        self.budget = open_shared_budget(settings, stop)
        learned = load_learned_rate(state_dir) if settings.adaptive else None
        if self.budget is not None and settings.adaptive:
            learned = self.budget.learned().rate or learned  # what every process learned
        self.limiter = RateLimiter(
            limiter_config(settings), stop=stop, initial_rate=learned, backend=self.budget
        )
        self.metrics = RequestMetrics()
        self.client = ReccoBeatsClient(settings, self.limiter, self.metrics)
        self.wall_s = 0.0

    def __enter__(self) -> ApiResources:
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.monotonic() - self._t0
        self.client.close()
        if self.budget is not None:
            self.budget.close()
        if self._settings.adaptive:
            save_learned_rate(self._state_dir, self.limiter.effective_rate, self._clock())


@dataclass
class _Fetched:
    resolve: ResolveOutcome
    features: FeaturesOutcome
    recommendations: RecommendOutcome
    plan: list[SeedChunk]

    @property
    def failures(self) -> list[str]:
        return self.resolve.errors + self.features.errors + self.recommendations.errors


def _fetch(stages: set[str], batch: InputBatch, distinct: list[str], ctx: StageContext) -> _Fetched:
    """Resolve -> features -> recommendations, each only if asked for (``publish``: all).

    The stages asked for run together on one pool (``run_stages``): a stage downstream starts
    on what is already answered while the stage upstream is still in flight. A stage not
    asked for works only from what the state dir already holds, so separate Airflow tasks
    make the same requests as one run.
    """
    if "publish" in stages:
        stages = stages | {"resolve", "features", "recommendations"}
    config = ctx.config
    res = ResolveWork(distinct, ctx) if "resolve" in stages else None
    upstream = set(res.ask) if res is not None else set()
    before = resolved_ids(ctx.caches, distinct)
    before = before[~before["spotify_id"].isin(upstream)]
    works: list[StageWork[Any, Any]] = []
    feat = None
    if "features" in stages:
        feat = FeaturesWork(ctx)
        feat.add(dict(zip(before["spotify_id"], before["reccobeats_id"], strict=True)))
        if res is not None:
            feat.upstream_done = lambda: res.done
            res.listeners.append(lambda found, _chunk: feat.add(found))
        works.append(feat)
    recs = None
    if config.recommendations and "recommendations" in stages:
        recs = RecommendWork(batch.rows, set(before["spotify_id"]), upstream, ctx)
        if res is not None:
            res.listeners.append(recs.on_resolved)
        works.append(recs)
    if res is not None:
        works.append(res)
    run_stages(works, ctx)
    if feat is not None:
        feat.log_plan()
    if recs is not None:
        recs.log_summary()
    resolved = resolved_ids(ctx.caches, distinct)
    plan = plan_seed_chunks(batch.rows, set(resolved["spotify_id"]), config)
    return _Fetched(
        res.out if res is not None else ResolveOutcome(distinct=len(distinct)),
        feat.out if feat is not None else FeaturesOutcome(),
        recs.out if recs is not None else RecommendOutcome(),
        plan,
    )


def _base_figures(
    run_id: str,
    run_date: date,
    started: datetime,
    stages: Collection[str],
    batch: InputBatch,
    distinct: list[str],
    fetched: _Fetched,
) -> dict[str, Any]:
    """The run's own figures (IDs, stages, failures); the report adds requests and timing."""
    res, feat, recs = fetched.resolve, fetched.features, fetched.recommendations
    failures = fetched.failures
    failed_ids = sorted(set(res.failed))
    return {
        "run_id": run_id,
        "run_date": run_date.isoformat(),
        "started_at": started.isoformat(),
        "stages": [s for s in STAGES if s in stages],
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


def _dry_run(
    settings: Settings,
    run_date: date,
    run_id: str,
    batch: InputBatch,
    distinct: list[str],
    caches: Caches,
) -> RunReport:
    """The plan without a request: what is known, what each endpoint will be asked, ETA."""
    plan = plan_figures(batch.rows, distinct, caches, stage_config(settings))
    figures = {
        "run_id": run_id,
        "run_date": run_date.isoformat(),
        "status": "dry_run",
        "rows": {"valid": len(batch.rows), "rejected": len(batch.rejects)},
        "ids": plan["ids"],
        "plan": {
            "calls_at_most": plan["calls_at_most"],
            "eta_s": round(floor_seconds(plan["calls_at_most"], settings), 1),
            "rate_limit_per_min": settings.rate_limit,
        },
    }
    return RunReport(run_id, run_date, "dry_run", EXIT_OK, None, figures)
