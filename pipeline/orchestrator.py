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
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.api.client import ReccoBeatsClient
from pipeline.api.limiter import RateLimiter
from pipeline.api.metrics import RequestMetrics
from pipeline.api.records import FEATURE_COLUMNS
from pipeline.errors import EXIT_OK, EXIT_PARTIAL, Cancelled, ConfigError, InputError
from pipeline.io.reader import InputBatch, read_input
from pipeline.io.report import build_report, ceil_div, floor_seconds, summary_text, write_report
from pipeline.io.writer import (
    RECOMMENDATION_SCHEMA,
    check_output_dir,
    sweep_stale_temp_files,
    tracks_schema,
    write_partition,
    write_rejects,
)
from pipeline.settings import Settings
from pipeline.stages.features import FeaturesOutcome, fetch_features
from pipeline.stages.recommend import (
    RecommendOutcome,
    SeedChunk,
    assemble_recommendations,
    fetch_recommendations,
    plan_seed_chunks,
)
from pipeline.stages.resolve import ResolveOutcome, ids_to_resolve, resolve_ids
from pipeline.state.caches import Caches
from pipeline.state.statedir import StateDir, load_learned_rate, save_learned_rate

log = logging.getLogger(__name__)

STAGES = ("resolve", "features", "recommendations", "publish")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class RunReport:
    """What a run did; ``figures`` is the JSON written to ``<output>/runs/<run_id>.json``."""

    run_id: str
    run_date: date
    status: str  # ok | partial | dry_run
    exit_code: int
    report_path: Path | None
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.figures)

    def summary(self) -> str:
        return summary_text(self.figures)


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
    clock: Callable[[], datetime] = utc_now,
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
    with StateDir(state_dir, settings.lock_wait_s):
        caches = Caches.load(state_dir, settings, clock)
        if dry_run:
            return _dry_run(settings, run_date, run_id, batch, distinct, caches)
        with _ApiSession(settings, state_dir, cancel or threading.Event(), clock) as api:
            try:
                fetched = _fetch(set(stages), batch, distinct, api, caches, settings, show)
            except Cancelled:
                log.warning("run %s: stop requested; checkpointing state", run_id)
                caches.checkpoint_all()
                raise
        base = _base_figures(run_id, run_date, started, stages, batch, distinct, fetched)
        if "publish" in stages:
            base["outputs"] = _publish(settings, run_date, batch, caches, fetched.plan)
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


class _ApiSession:
    """The run's one limiter, client and metrics; on exit, the learned rate is saved.

    Holds the cancel watcher too, so a set ``stop`` event ends every wait at once.
    """

    def __init__(
        self,
        settings: Settings,
        state_dir: Path,
        stop: threading.Event,
        clock: Callable[[], datetime],
    ) -> None:
        self._settings = settings
        self._state_dir = state_dir
        self._clock = clock
        self.stop = stop
        learned = load_learned_rate(state_dir) if settings.adaptive else None
        self.limiter = RateLimiter.from_settings(settings, initial_rate=learned)
        self.metrics = RequestMetrics()
        self.client = ReccoBeatsClient(settings, self.limiter, self.metrics)
        self.wall_s = 0.0

    def __enter__(self) -> _ApiSession:
        self._t0 = time.monotonic()
        self._watcher = _CancelWatcher(self.stop, self.limiter)
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.monotonic() - self._t0
        self._watcher.close()
        self.client.close()
        if self._settings.adaptive:
            save_learned_rate(self._state_dir, self.limiter.effective_rate, self._clock())

    def sleep(self, seconds: float) -> None:
        """A wait that a stop request interrupts (the recommendation stagger)."""
        _interruptible_sleep(self.stop, seconds)


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
    api: _ApiSession,
    caches: Caches,
    settings: Settings,
    show: bool,
) -> _Fetched:
    """Resolve -> features -> recommendations, each only if asked for (``publish``: all)."""
    if "publish" in stages:
        stages = stages | {"resolve", "features", "recommendations"}
    common = {"client": api.client, "caches": caches, "settings": settings, "progress": show}
    res = ResolveOutcome(distinct=len(distinct))
    feat, recs = FeaturesOutcome(), RecommendOutcome()
    if "resolve" in stages:
        res = resolve_ids(distinct, **common)
    resolved = _resolved(caches, distinct)
    if "features" in stages:
        feat = fetch_features(resolved, **common)
    plan = plan_seed_chunks(batch.rows, set(resolved["spotify_id"]), settings)
    if settings.recommendations and "recommendations" in stages:
        recs = fetch_recommendations(plan, sleep=api.sleep, **common)
    return _Fetched(res, feat, recs, plan)


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


class _CancelWatcher:
    """Turns a set ``stop`` event into ``limiter.cancel()``, so every wait ends promptly."""

    def __init__(self, stop: threading.Event, limiter: RateLimiter) -> None:
        self._stop = stop
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(limiter,), daemon=True)
        self._thread.start()

    def _watch(self, limiter: RateLimiter) -> None:
        while not self._done.is_set():
            if self._stop.wait(0.1):
                limiter.cancel()
                return

    def close(self) -> None:
        self._done.set()


def _interruptible_sleep(stop: threading.Event, seconds: float) -> None:
    if stop.wait(seconds):
        raise Cancelled("stop requested during the recommendation stagger")


def _resolved(caches: Caches, spotify_ids: list[str]) -> pd.DataFrame:
    known = caches.registry.known(spotify_ids, count=False)
    found = known[known["status"] == "found"]
    return found[["spotify_id", "reccobeats_id"]].reset_index(drop=True)


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


def _publish(
    settings: Settings, run_date: date, batch: InputBatch, caches: Caches, plan: list[SeedChunk]
) -> dict[str, Any]:
    out_dir = Path(settings.output_dir)
    distinct = pd.unique(batch.rows["spotify_id"].dropna()).tolist()
    tracks = enrich_rows(batch.rows, caches, distinct)
    paths = {
        "tracks": str(
            write_partition(tracks, out_dir, "tracks", run_date, tracks_schema(batch.schema))
        ),
    }
    if settings.recommendations:
        recs = assemble_recommendations(batch.rows, plan, caches)
        paths["recommendations"] = str(
            write_partition(recs, out_dir, "recommendations", run_date, RECOMMENDATION_SCHEMA)
        )
    paths["rejects"] = str(write_rejects(batch.rejects, out_dir, run_date))
    counts = tracks["status"].value_counts().to_dict()
    log.info("published %s: %s", run_date, counts)
    return {"paths": paths, "track_status": {k: int(v) for k, v in counts.items()}}


def _dry_run(
    settings: Settings,
    run_date: date,
    run_id: str,
    batch: InputBatch,
    distinct: list[str],
    caches: Caches,
) -> RunReport:
    """The plan without a request: what is known, what each endpoint will be asked, ETA."""
    ask = ids_to_resolve(distinct, caches, count=False)
    resolved = _resolved(caches, distinct)
    feats_known = len(
        caches.features.lookup(resolved["reccobeats_id"], count=False).stale_or_unknown
    )
    upper_found = set(resolved["spotify_id"]) | set(ask)
    plan = plan_seed_chunks(batch.rows, upper_found, settings) if settings.recommendations else []
    fresh = caches.recommendations.fresh_keys([c.request_key for c in plan])
    calls = {
        "tracks": ceil_div(len(ask), settings.chunk_size),
        "audio_features": ceil_div(feats_known + len(ask), settings.chunk_size),
        "recommendation": len({c.request_key for c in plan} - set(fresh)),
    }
    figures = {
        "run_id": run_id,
        "run_date": run_date.isoformat(),
        "status": "dry_run",
        "rows": {"valid": len(batch.rows), "rejected": len(batch.rejects)},
        "ids": {"distinct": len(distinct), "known": len(distinct) - len(ask), "new": len(ask)},
        "plan": {
            "calls_at_most": calls,
            "eta_s": round(floor_seconds(calls, settings), 1),
            "rate_limit_per_min": settings.rate_limit,
        },
    }
    return RunReport(run_id, run_date, "dry_run", EXIT_OK, None, figures)
