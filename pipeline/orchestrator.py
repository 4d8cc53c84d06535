"""The nightly job: read -> resolve IDs -> features -> recommendations -> write -> report.

``run_job`` is the one function cron, Airflow and the CLI call. Stages are idempotent: the
registry and caches in the state dir remember every answer within its TTL, so running the
stages as separate calls (separate Airflow tasks) makes the same requests as one full run,
and a killed run resumes from its last checkpoint. ``publish`` runs whatever fetch stages
still have work, then writes the date partitions and the run report.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
import uuid
from collections.abc import Collection
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.api.backends import open_shared_budget
from pipeline.api.binding import binding_limit
from pipeline.api.client import ReccoBeatsClient
from pipeline.api.limiter import RateLimiter
from pipeline.api.metrics import RequestMetrics
from pipeline.clock import Clock, utc_now
from pipeline.config import (
    StageConfig,
    StorageConfig,
    limiter_config,
    stage_config,
    storage_config,
    ttl_config,
)
from pipeline.errors import (
    EXIT_BUDGET_REACHED,
    EXIT_OK,
    EXIT_OUTPUT,
    EXIT_PARTIAL,
    Cancelled,
    ConfigError,
    InputError,
    OutputError,
    StateError,
)
from pipeline.io.contract import rejects_for_contract
from pipeline.io.paths import check_disjoint, describe_links, symlinks_below
from pipeline.io.reader import InputBatch, check_playlist_column, read_input
from pipeline.io.report import RunReport, build_report, floor_seconds, write_report
from pipeline.io.storage import RunStorage, Storage
from pipeline.io.writer import check_output_dir, sweep_stale_temp_files, write_rejects
from pipeline.run_guards import interrupted_base, nothing_fetched, stage_notes
from pipeline.settings import Settings
from pipeline.stages.budget import RunBudget
from pipeline.stages.context import StageContext
from pipeline.stages.features import FeaturesOutcome, FeaturesWork
from pipeline.stages.plan import plan_figures, runs_needed
from pipeline.stages.publish import publish
from pipeline.stages.recommend import RecommendOutcome, RecommendWork, SeedChunk, plan_seed_chunks
from pipeline.stages.resolve import ResolveOutcome, ResolveWork, resolved_ids
from pipeline.stages.runner import StageWork, run_stages
from pipeline.state.caches import Caches
from pipeline.state.learned_rate import (
    load_learned_concurrency,
    load_learned_rate,
    save_learned_rate,
)
from pipeline.state.lock import lock_state_dir
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
    offline: bool = False,
    progress: bool | None = None,
    cancel: threading.Event | None = None,
    clock: Clock = utc_now,
) -> RunReport:
    """Run the job for ``run_date``; see the module docstring for the stage semantics.

    Raises ``InputError``/``ConfigError`` for unusable input or settings and
    ``StateLockedError`` when another run holds the state dir. Requests that fail after
    their retries do not raise: the run finishes, writes what it has, and returns
    ``status="partial"`` with exit code 3 and the failures listed in the report. When
    requests were made and not one was answered, ``NothingFetchedError`` (exit 7) is raised
    and nothing is published. ``offline``: no request; publish from the state dir only.
    A dry run writes nothing (no state dir, lock or rejects). A stop (``Cancelled``) writes
    the run report with status ``interrupted`` first (its path on ``exc.report_path``).
    """
    storage = _open_storage(settings)
    _check_call(settings, stages, dry_run, storage)
    started = clock()
    t0 = time.monotonic()
    show = _want_progress(settings.progress if progress is None else progress)
    batch = _read(settings, run_date, storage, write=not dry_run)
    distinct = pd.unique(batch.rows["spotify_id"].dropna()).tolist()
    run_id = new_run_id(run_date, started)
    log.info(
        "run %s: %d rows (%d rejected), %d distinct IDs from %d file(s)",
        run_id, len(batch.rows), len(batch.rejects), len(distinct), len(batch.files),
    )  # fmt: skip
    state_dir = storage.state
    lock = nullcontext() if dry_run else _lock(storage, storage_config(settings), clock, cancel)
    with lock:
        caches = Caches.load(state_dir, ttl_config(settings), clock)
        if dry_run:
            return _dry_run(settings, run_date, run_id, batch, distinct, caches)
        with ApiResources(settings, state_dir, cancel or StopSignal(), clock) as api:
            budget = RunBudget(
                max_requests=settings.max_requests,
                time_budget_s=settings.time_budget,
                spent=lambda: api.metrics.attempts,
            )
            budget.start()
            config = stage_config(settings)
            planned = _planned_requests(batch, distinct, caches, config) if show else None
            ctx = StageContext(api.client, caches, config, api.stop, show, budget, planned)
            resolved_before = len(resolved_ids(caches, distinct))
            notes = stage_notes(stages, offline, len(distinct), resolved_before)
            try:
                fetched = _fetch(set(stages), batch, distinct, ctx, offline=offline)
            except Cancelled as exc:
                log.warning("run %s: stop requested; checkpointing state", run_id)
                caches.checkpoint_all()
                lost = api.shared_budget.lost if api.shared_budget is not None else None
                if lost is not None and lost is not exc:
                    raise lost from exc  # Redis went away: exit 6, not 130
                base = interrupted_base(
                    run_id, run_date, started, stages, batch, len(distinct), api.metrics.snapshot()
                )
                exc.report_path = _write_figures(
                    base, settings, api, caches, storage, time.monotonic() - t0
                )
                raise
            dead = nothing_fetched(api.metrics.snapshot(), fetched.failures, settings.base_url)
            if dead is not None:
                raise dead
        base = _base_figures(run_id, run_date, started, stages, batch, distinct, fetched)
        base["budget"] = _budget_figures(budget, settings)
        base["notes"] = notes
        if "publish" in stages:
            try:
                base["outputs"] = publish(
                    storage.output,
                    run_date,
                    batch,
                    caches,
                    fetched.plan,
                    recommendations=settings.recommendations,
                    failed_spotify_ids=set(fetched.resolve.failed),
                    failed_reccobeats_ids=set(fetched.features.failed),
                    force=settings.force_publish,
                    run_id=run_id,
                )
            except OSError as exc:  # disk full, permissions, I/O error: one line, exit 8
                failed = _write_failed(exc, base, settings, api, caches, storage, t0)
                raise failed from None
            base["pending"] = base["outputs"]["track_status"].get("pending", 0)
        base["pending_playlists"] = fetched.recommendations.pending_playlists
        if budget.reached is not None and base["status"] == "ok":
            base["status"], base["exit_code"] = "budget_reached", EXIT_BUDGET_REACHED
            log.warning(
                "run %s: %s reached after %d requests; %s rows and %d playlists' "
                "recommendations pending for the next run",
                run_id, budget.reached, budget.spent, base.get("pending", "?"),
                base["pending_playlists"],
            )  # fmt: skip
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
        ops = storage.object_store_ops()
        if ops is not None:
            figures["object_store"] = ops  # list/get/put/delete per root, up to the report
        try:
            path = write_report(figures, storage.output)
        except OSError as exc:
            raise OutputError(
                f"published, but cannot write the run report under {storage.output}: "
                f"{exc.strerror or exc}"
            ) from None
        figures["report_path"] = str(path)
    return RunReport(run_id, run_date, base["status"], base["exit_code"], path, figures)


def _open_storage(settings: Settings) -> RunStorage:
    """The run's input, output and state roots (local dirs or object-store prefixes)."""
    cfg = storage_config(settings)
    try:
        return RunStorage.open(
            cfg.input, cfg.output_dir, cfg.state_dir, s3_endpoint_url=cfg.s3_endpoint_url
        )
    except ValueError as exc:
        raise ConfigError(f"setting 'state_dir'/'output_dir'/'input': {exc}") from None


def _lock(
    storage: RunStorage, cfg: StorageConfig, clock: Clock, stop: threading.Event | None
) -> AbstractContextManager[Any]:
    return lock_state_dir(
        storage.state,
        lock_wait_s=cfg.lock_wait_s,
        lease_s=cfg.lock_lease_s,
        clock=clock,
        stop=stop,
    )


def _check_call(
    settings: Settings, stages: Collection[str], dry_run: bool, storage: RunStorage
) -> None:
    unknown = set(stages) - set(STAGES)
    if unknown or not stages:
        raise ConfigError(f"setting 'stages': unknown {sorted(unknown)}; choose from {STAGES}")
    if settings.input is None:
        raise ConfigError("setting 'input': no input given (--input or RECCOBEATS_INPUT)")
    check_disjoint(settings.input, settings.output_dir, settings.state_dir)
    state_links = symlinks_below(settings.state_dir)
    if state_links:  # before the lock: taking it opens <state>/.lock for writing
        raise StateError(describe_links(state_links, "state"))
    if not dry_run:
        output_links = symlinks_below(settings.output_dir)
        if output_links:
            raise ConfigError(f"setting 'output_dir': {describe_links(output_links, 'output')}")
        check_output_dir(storage.output)  # before any request, not at publish
        sweep_stale_temp_files(storage.output)


def _read(settings: Settings, run_date: date, storage: RunStorage, write: bool) -> InputBatch:
    """The input, or ``InputError`` when not one row has a usable ID (rejects written,
    except by a dry run, which writes nothing)."""
    batch = read_input(storage.input or Path(""), settings.id_column)
    if settings.recommendations:
        check_playlist_column(batch.schema)  # before the first request, not after the budget
    if batch.rows.empty:
        where = (
            f"reasons in {write_rejects(_contract_rejects(batch), storage.output, run_date)}"
            if write
            else f"first reason: {batch.rejects['reason'].iloc[0] if len(batch.rejects) else '-'}"
        )
        raise InputError(
            f"no valid track IDs in {settings.input}: all {len(batch.rejects)} rows rejected "
            f"({where})"
        )
    return batch


def _contract_rejects(batch: InputBatch) -> pd.DataFrame:
    """Rejects of a run that stops at reading (no run id yet): the contract's columns."""
    return rejects_for_contract(batch.rejects, None, datetime.now(UTC))


def _write_figures(
    base: dict[str, Any],
    settings: Settings,
    api: ApiResources,
    caches: Caches,
    storage: RunStorage,
    wall_s: float,
) -> Path | str:
    """Write the report of a run that ends early (interrupted); its path."""
    figures = build_report(
        base=base,
        settings=settings,
        metrics=api.metrics.snapshot(),
        limiter=api.limiter.stats(),
        caches=caches.hit_counts(),
        wall_s=wall_s,
        api_wall_s=wall_s,
    )
    return write_report(figures, storage.output)


def _write_failed(
    exc: OSError,
    base: dict[str, Any],
    settings: Settings,
    api: ApiResources,
    caches: Caches,
    storage: RunStorage,
    t0: float,
) -> OutputError:
    """The one-line ``OutputError`` for an OS error while publishing, after writing the run
    report (status ``write_failed``) if the output dir still takes it (issue 11, class 3)."""
    where = f" {exc.filename}" if exc.filename else ""
    message = (
        f"cannot write the output{where}: {exc.strerror or exc}; the previous partition of "
        "the date stays published and every answer is saved in the state dir, so a re-run "
        "publishes without asking the API again"
    )
    failures = dict(base.get("failures", {}))
    failures["messages"] = [message, *failures.get("messages", [])]
    failures["count"] = int(failures.get("count", 0)) + 1
    base = {**base, "status": "write_failed", "exit_code": EXIT_OUTPUT, "failures": failures}
    try:
        path = _write_figures(base, settings, api, caches, storage, time.monotonic() - t0)
        message += f" (report: {path})"
    except OSError as again:
        message += f" (the run report could not be written either: {again.strerror or again})"
    log.error("%s", message)
    return OutputError(message)


class ApiResources:
    """The run's one limiter, client and metrics; on exit, the learned rate is saved.

    ``stop`` is the run's one stop signal: the limiter, the transport's backoffs and the
    stages all wait on it, so setting it ends every wait at once.
    """

    def __init__(
        self,
        settings: Settings,
        state_dir: Storage,
        stop: threading.Event,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._state_dir = state_dir
        self._clock = clock
        self.stop = stop
        # Shared budget (issue 13): the limiter's state in Redis; unreachable -> exit 6 here.
        self.shared_budget = open_shared_budget(settings, stop)
        learned = load_learned_rate(state_dir) if settings.adaptive else None
        conc = load_learned_concurrency(state_dir) if settings.adaptive_concurrency else None
        if self.shared_budget is not None and settings.adaptive:
            learned = self.shared_budget.learned().rate or learned  # what every process learned
        self.limiter = RateLimiter(
            limiter_config(settings),
            stop=stop,
            initial_rate=learned,
            initial_concurrency=conc,
            backend=self.shared_budget,
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
        if self.shared_budget is not None:
            self.shared_budget.close()
        if self._settings.adaptive:
            conc = self.limiter.concurrency_limit if self._settings.adaptive_concurrency else None
            save_learned_rate(
                self._state_dir, self.limiter.effective_rate, self._clock(), concurrency=conc
            )


@dataclass
class _Fetched:
    resolve: ResolveOutcome
    features: FeaturesOutcome
    recommendations: RecommendOutcome
    plan: list[SeedChunk]

    @property
    def failures(self) -> list[str]:
        return self.resolve.errors + self.features.errors + self.recommendations.errors


def _fetch(
    stages: set[str],
    batch: InputBatch,
    distinct: list[str],
    ctx: StageContext,
    *,
    offline: bool = False,
) -> _Fetched:
    """Resolve -> features -> recommendations, each only if asked for (``publish``: all).

    The stages asked for run together on one pool (``run_stages``): a stage downstream starts
    on what is already answered while the stage upstream is still in flight. A stage not
    asked for works only from what the state dir already holds, so separate Airflow tasks
    make the same requests as one run.
    """
    if offline:
        stages = set()  # publish from the state only: no fetch stage, no request
    elif "publish" in stages:
        stages = stages | {"resolve", "features", "recommendations"}
    config = ctx.config
    res = ResolveWork(distinct, ctx) if "resolve" in stages else None
    upstream = set(res.ask) if res is not None else set()
    before = resolved_ids(ctx.caches, distinct)
    before = before[~before["spotify_id"].isin(upstream)]
    works: list[StageWork[Any, Any]] = []  # in the order the runner prefers ready chunks
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
        # rows_first: features, then new IDs, then recommendations (a seed call completes no
        # track row); stage_by_stage: every ID resolved before anything else.
        works.insert(1 if config.rows_first and feat is not None else 0, res)
    run_stages(works, ctx)
    if feat is not None:
        feat.log_plan()
    if recs is not None:
        recs.settle()
        recs.log_summary()
    resolved = resolved_ids(ctx.caches, distinct)
    plan = plan_seed_chunks(batch.rows, set(resolved["spotify_id"]), config)
    return _Fetched(
        res.out if res is not None else ResolveOutcome(distinct=len(distinct)),
        feat.out if feat is not None else FeaturesOutcome(),
        recs.out if recs is not None else RecommendOutcome(),
        plan,
    )


def _planned_requests(
    batch: InputBatch, distinct: list[str], caches: Caches, config: StageConfig
) -> int:
    """The dry-run plan's upper bound of calls: the total of the ``requests`` bar."""
    return sum(plan_figures(batch.rows, distinct, caches, config)["calls_at_most"].values())


def _budget_figures(budget: RunBudget, settings: Settings) -> dict[str, Any]:
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
    """The plan without a request: calls per endpoint, the ETA, and the runs a budget needs.

    The ETA is rate-bound: calls over the rate each endpoint's limits allow (the learned
    rate when the state holds one and it is lower), as ``floor_seconds`` computes it.
    """
    plan = plan_figures(batch.rows, distinct, caches, stage_config(settings))
    expected = plan["calls_expected"]
    total = sum(expected.values())
    eta_s = floor_seconds(expected, settings, _learned_rate_per_min(settings))
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
            "rate_limit_per_min": settings.rate_limit,
            "budget": {
                "max_requests": settings.max_requests,
                "time_budget_s": settings.time_budget,
            },
            "runs_needed": runs,
            "calls_tonight": tonight,
            **binding_limit(
                limiter_config(settings),
                rate_per_window=_learned_rate_per_window(settings),
                endpoints=[ep for ep, n in expected.items() if n],
            ),
        },
    }
    return RunReport(run_id, run_date, "dry_run", EXIT_OK, None, figures)


def _learned_rate_per_window(settings: Settings) -> float | None:
    per_min = _learned_rate_per_min(settings)
    return None if per_min is None else per_min * settings.window_s / 60.0


def _learned_rate_per_min(settings: Settings) -> float | None:
    if not settings.adaptive:
        return None
    learned = load_learned_rate(Path(settings.state_dir))  # per window
    if learned is None:
        return None
    return min(settings.rate_limit, learned * 60.0 / settings.window_s)
