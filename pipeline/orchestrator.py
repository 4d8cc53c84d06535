"""The nightly job: read -> resolve IDs -> features -> recommendations -> write -> report.

``run_job`` is the one function cron, Airflow and the CLI call. Stages are idempotent: the
registry and caches in the state dir remember every answer within its TTL, so running the
stages as separate calls (separate Airflow tasks) makes the same requests as one full run,
and a killed run resumes from its last checkpoint. ``publish`` runs whatever fetch stages
still have work, then writes the date partitions and the run report.

Over 350 lines because it is the one place that orders a run's steps (locations and guards,
read, lock, fetch, publish, report, and the early ends: interrupted, nothing fetched, write
failed); the figures live in ``run_figures.py`` and the API objects in ``api_resources.py``.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from collections.abc import Collection
from contextlib import AbstractContextManager, nullcontext
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.api_resources import ApiResources
from pipeline.clock import Clock, utc_now
from pipeline.config import (
    StorageConfig,
    stage_config,
    storage_config,
    ttl_config,
)
from pipeline.errors import (
    EXIT_BUDGET_REACHED,
    EXIT_OUTPUT,
    Cancelled,
    ConfigError,
    InputError,
    OutputError,
    StateError,
)
from pipeline.io.paths import check_disjoint, describe_links, symlinks_below
from pipeline.io.reader import InputBatch, check_playlist_column, read_input
from pipeline.io.report import RunReport, build_report, write_report
from pipeline.io.storage import RunStorage
from pipeline.io.writer import check_output_dir, sweep_stale_temp_files
from pipeline.run_figures import (
    Fetched,
    base_figures,
    budget_figures,
    dry_run_report,
    planned_requests,
)
from pipeline.run_guards import (
    interrupted_base,
    interrupted_ids,
    nothing_fetched,
    nothing_resolved,
    stage_notes,
)
from pipeline.settings import Settings
from pipeline.stages.budget import RunBudget
from pipeline.stages.context import StageContext
from pipeline.stages.features import FeaturesOutcome, FeaturesWork
from pipeline.stages.publish import publish, publish_rejects_only
from pipeline.stages.recommend import RecommendOutcome, RecommendWork, plan_seed_chunks
from pipeline.stages.resolve import ResolveOutcome, ResolveWork, resolved_ids
from pipeline.stages.runner import StageWork, run_stages
from pipeline.state.caches import Caches
from pipeline.state.lease import LeaseLock
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

    Raises ``InputError``/``ConfigError`` for unusable input or settings (among them
    ``NothingResolvedError``: features/recommendations alone on IDs never resolved),
    ``StateLockedError`` when another run holds the state dir and ``StateLockLostError``
    (exit 9, nothing published) when its lease on object storage is lost mid-run.
    Requests that fail after their retries do not raise: the run finishes, writes what it
    has, and returns ``status="partial"`` with exit code 3 and the failures listed in the
    report. When requests were made and not one was answered, ``NothingFetchedError``
    (exit 7) is raised and nothing is published. ``offline``: no request; publish from the
    state dir only. A dry run writes nothing (no state dir, lock or rejects). A stop
    (``Cancelled``) writes the run report with status ``interrupted`` first (its path on
    ``exc.report_path``).
    """
    storage = _open_storage(settings)
    _check_call(settings, stages, dry_run, storage)
    started = clock()
    t0 = time.monotonic()
    show = _want_progress(settings.progress if progress is None else progress)
    batch = _read(settings, run_date, storage, write=not dry_run, clock=clock)
    distinct = pd.unique(batch.rows["spotify_id"].dropna()).tolist()
    run_id = new_run_id(run_date, started)
    log.info(
        "run %s: %d rows (%d rejected), %d distinct IDs from %d file(s)",
        run_id, len(batch.rows), len(batch.rejects), len(distinct), len(batch.files),
    )  # fmt: skip
    state_dir = storage.state
    stop = cancel or StopSignal()  # one stop: signals, a lost budget, a lost lock all set it
    lock = nullcontext() if dry_run else _lock(storage, storage_config(settings), clock, stop)
    with lock as held:
        caches = Caches.load(state_dir, ttl_config(settings), clock)
        if isinstance(held, LeaseLock):
            held.on_lost(caches.fence)  # a lost lease: stop rewriting the new owner's state
        if dry_run:
            return dry_run_report(settings, run_date, run_id, batch, distinct, caches, state_dir)
        known_before = caches.registry.known(distinct, count=False)
        unready = nothing_resolved(stages, offline, len(distinct), len(known_before))
        if unready is not None:
            raise unready
        with ApiResources(settings, state_dir, stop, clock) as api:
            if isinstance(held, LeaseLock):
                held.on_lost(api.fence)  # nor its learned rate
            budget = RunBudget(
                max_requests=settings.max_requests,
                time_budget_s=settings.time_budget,
                spent=lambda: api.metrics.attempts,
            )
            budget.start()
            config = stage_config(settings)
            planned = planned_requests(batch, distinct, caches, config) if show else None
            ctx = StageContext(api.client, caches, config, api.stop, show, budget, planned)
            notes = stage_notes(stages, offline, len(distinct), len(known_before))
            try:
                fetched = _fetch(set(stages), batch, distinct, ctx, offline=offline)
            except Cancelled as exc:
                log.warning("run %s: stop requested; checkpointing state", run_id)
                lost = _lost_cause(api, held)
                try:
                    caches.checkpoint_all()
                except (OSError, StateError) as err:
                    if lost is None:
                        raise
                    raise lost from err  # the store that lost the lease is down: still exit 9
                if lost is not None and lost is not exc:
                    raise lost from exc  # Redis or the state lock went away: exit 6 or 9
                known_now = caches.registry.known(distinct, count=False)
                ids = interrupted_ids(len(distinct), known_before, known_now)
                base = interrupted_base(
                    run_id, run_date, started, stages, batch, ids, api.metrics.snapshot()
                )
                exc.report_path = _write_figures(
                    base, settings, api, caches, storage, time.monotonic() - t0
                )
                raise
            dead = nothing_fetched(api.metrics.snapshot(), fetched.failures, settings.base_url)
            if dead is not None:
                raise dead
        _raise_if_lost(held)  # the date may be another run's to publish now
        base = base_figures(run_id, run_date, started, stages, batch, distinct, fetched, STAGES)
        base["budget"] = budget_figures(budget, settings)
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
                    clock=clock,
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
        _raise_if_lost(held)  # lost while publishing: the report must not say ok
        figures = _figures(base, settings, api, caches, storage, time.monotonic() - t0)
        figures["timeline"] = api.metrics.timeline()
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


def _lost_cause(api: ApiResources, held: object) -> Cancelled | None:
    """What set the stop when it was no signal: the shared budget or the state lock, lost."""
    if api.shared_budget is not None and api.shared_budget.lost is not None:
        return api.shared_budget.lost
    return held.lost if isinstance(held, LeaseLock) else None


def _raise_if_lost(held: object) -> None:
    """Raise the lost lease of ``held`` (exit 9): a loss after the last stage's answers sets
    a stop nothing waits on any more, and publishing on would write a date, and a report
    saying ok, that another run may be writing now."""
    if isinstance(held, LeaseLock) and held.lost is not None:
        raise held.lost


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


def _read(
    settings: Settings, run_date: date, storage: RunStorage, write: bool, clock: Clock
) -> InputBatch:
    """The input, or ``InputError`` when not one row has a usable ID (its rejects published
    by ``publish_rejects_only``, except by a dry run, which writes nothing)."""
    batch = read_input(storage.input or Path(""), settings.id_column)
    if settings.recommendations:
        check_playlist_column(batch.schema)  # before the first request, not after the budget
    if batch.rows.empty:
        if write:
            where = publish_rejects_only(batch, storage.output, run_date, clock)
        else:  # a dry run writes nothing
            first = batch.rejects["reason"].iloc[0] if len(batch.rejects) else "-"
            where = f"first reason: {first}"
        raise InputError(
            f"no valid track IDs in {settings.input}: all {len(batch.rejects)} rows rejected "
            f"({where})"
        )
    return batch


def _write_figures(
    base: dict[str, Any],
    settings: Settings,
    api: ApiResources,
    caches: Caches,
    storage: RunStorage,
    wall_s: float,
) -> Path | str:
    """Write the report of a run that ends early (interrupted, write failed); its path."""
    return write_report(_figures(base, settings, api, caches, storage, wall_s), storage.output)


def _figures(
    base: dict[str, Any],
    settings: Settings,
    api: ApiResources,
    caches: Caches,
    storage: RunStorage,
    wall_s: float,
) -> dict[str, Any]:
    """The run report's figures: the run's own ``base`` plus requests, limits, caches, time."""
    figures = build_report(
        base=base,
        settings=settings,
        metrics=api.metrics.snapshot(),
        limiter=api.limiter.stats(),
        caches=caches.hit_counts(),
        wall_s=wall_s,
        api_wall_s=api.wall_s or wall_s,
    )
    ops = storage.object_store_ops()
    if ops is not None:
        figures["object_store"] = ops  # list/get/put/delete per root, up to the report
    return figures


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


def _fetch(
    stages: set[str],
    batch: InputBatch,
    distinct: list[str],
    ctx: StageContext,
    *,
    offline: bool = False,
) -> Fetched:
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
    return Fetched(
        res.out if res is not None else ResolveOutcome(distinct=len(distinct)),
        feat.out if feat is not None else FeaturesOutcome(),
        recs.out if recs is not None else RecommendOutcome(),
        plan,
    )
