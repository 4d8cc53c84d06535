"""Frozen configuration values, one per consumer, built from ``Settings`` in one place.

Why: the user sees one ``Settings`` object (flags > env > TOML > defaults), but the limiter, the
transport, the state tables and the stages each need a handful of its values. Handing each of
them the whole ``Settings`` hid which values a component depends on and let defaults be
written again in constructors. Each consumer now takes its own small frozen dataclass; the
``*_config(settings)`` builders below are the only place that reads ``Settings`` for it, and
every default lives once, in ``Settings``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pipeline.settings import EndpointLimit, Settings


@dataclass(frozen=True)
class StageConfig:
    """What the fetch stages need: chunking, pool sizes, recommendation shape, saving cadence."""

    chunk_size: int
    #: Chunks in progress at once over all stages: the limiter's concurrency cap plus
    #: ``READY_BEHIND_LIMIT``, so the pool never holds back a request the limiter would admit
    #: and a chunk is ready when an answer frees a place (``runner._room``).
    pool_size: int
    #: Optional per-stage caps on chunks in progress (None: only the pool and the limiter).
    chunk_concurrency: int | None
    checkpoint_every_chunks: int
    recommendations: bool
    seeds_per_chunk: int
    max_seed_chunks_per_playlist: int
    seed_chunk_concurrency: int | None
    seed_stagger_s: float
    recommendation_size: int
    #: Most downstream ready chunk first (rows complete first); False: stage by stage.
    rows_first: bool = True


_C = TypeVar("_C")


def _same_named(cls: type[_C], settings: Settings, **derived: object) -> _C:
    """``cls`` with every field the settings name alike copied, plus the ``derived`` ones.

    Most consumer configs are a subset of the settings under the same names; building them
    field by field wrote each name three times and let a new field be forgotten.
    """
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    values: dict[str, Any] = {n: getattr(settings, n) for n in names if n not in derived}
    return cls(**values, **derived)


#: Chunks the stage runner keeps started beyond the in-flight limit in force, waiting on the
#: limiter (docs/decisions.md, "Two chunks ready").
READY_BEHIND_LIMIT = 2


def stage_config(settings: Settings) -> StageConfig:
    return _same_named(
        StageConfig,
        settings,
        pool_size=settings.max_concurrency + READY_BEHIND_LIMIT,
        rows_first=settings.work_order == "rows_first",
    )


# -- the HTTP layer (pipeline/api) ---------------------------------------------------------


@dataclass(frozen=True)
class LimiterConfig:
    """What ``RateLimiter`` enforces. Rates are starts per ``window_s`` (Settings speak per
    minute; ``limiter_config`` converts); ``endpoint_limits`` stay per minute."""

    rate_per_window: float
    window_s: float
    min_interval_s: float
    max_concurrency: int
    endpoint_limits: Mapping[str, EndpointLimit]
    adaptive: bool
    decrease: float
    increase_per_window: float
    quiet_s: float
    min_rate_per_window: float
    max_retry_after_s: float
    backoff_base_s: float
    backoff_max_s: float
    margin_s: float
    probe_429_budget: float | None
    #: The cap on requests in flight; the limit in force adapts below it (``concurrency.py``)
    #: unless ``adaptive_concurrency`` is off.
    adaptive_concurrency: bool
    #: True when the user told the rate (then it is the rate aimed at: see ``limiter_config``).
    told_rate: bool
    #: True when ``min_interval_s`` is the told rate's own spacing, False when it is the
    #: configured ``min_interval_s`` (the default gap, or one given beside a told rate): the
    #: binding-limit label must name the setting that spaces the starts (``api/binding.py``).
    gap_from_told_rate: bool


#: Told a rate, the gap between starts is one told interval plus at most this share of it as
#: jitter margin (at 300/min: 0.2 s + 0.01 s, not + 0.02 s, which alone cost 10 %). On 2
#: busy cores a strict-spacing server at 600/min once saw two starts closer than 0.1 s apart
#: that we had spaced 0.105 s; 7.5 % was used then, because one 429 halved the rate. Now
#: the run's first 429 after 20 clean answers widens the gap by 5 % instead
#: (``limiter.TOLD_GAP_WIDEN``), so the margin can be the smaller one.
TOLD_GAP_MARGIN_SHARE = 0.05


def limiter_config(settings: Settings) -> LimiterConfig:
    """The limiter ``settings`` describe, with the told-rate rule applied.

    Told a rate (``rate_limit`` given by flag, env or TOML), that rate is what the run aims at:
    the per-endpoint seeds and the 0.25 s global gap, which describe an API whose limit is
    unknown, no longer apply. Starts are spaced one told interval apart instead (60/R s plus
    a small jitter margin), which a strict-spacing server and a budget+burst server at R both
    accept. ``endpoint_limits`` or ``min_interval_s`` given explicitly still win.
    """
    per_window = settings.window_s / 60.0
    given = settings.model_fields_set
    told = "rate_limit" in given
    gap = settings.min_interval_s
    margin = settings.jitter_margin_s
    gap_from_told_rate = told and "min_interval_s" not in given
    if gap_from_told_rate:
        interval = 60.0 / settings.rate_limit
        # The limiter adds the margin to every gap: aim at interval + min(margin, 7.5 %).
        gap = max(0.0, interval + min(margin, TOLD_GAP_MARGIN_SHARE * interval) - margin)
    endpoint_limits = dict(settings.endpoint_limits)
    if told and "endpoint_limits" not in given:
        endpoint_limits = {}
    return LimiterConfig(
        rate_per_window=settings.rate_limit * per_window,
        window_s=settings.window_s,
        min_interval_s=gap,
        max_concurrency=settings.max_concurrency,
        endpoint_limits=endpoint_limits,
        adaptive_concurrency=settings.adaptive_concurrency,
        told_rate=told,
        gap_from_told_rate=gap_from_told_rate,
        adaptive=settings.adaptive,
        decrease=settings.adaptive_decrease,
        increase_per_window=settings.adaptive_increase_per_min * per_window,
        quiet_s=settings.adaptive_quiet_s,
        min_rate_per_window=settings.adaptive_min_rate * per_window,
        max_retry_after_s=settings.max_retry_after_s,
        backoff_base_s=settings.backoff_base_s,
        backoff_max_s=settings.backoff_max_s,
        margin_s=settings.jitter_margin_s,
        probe_429_budget=settings.adaptive_probe_429_budget,
    )


@dataclass(frozen=True)
class RetryPolicy:
    """How many extra attempts a logical request may make, and how long to back off.

    ``max_retries`` is the budget of *extra* attempts (so at most ``max_retries + 1`` HTTP
    attempts), shared by every retryable cause including 429s.
    """

    max_retries: int
    backoff_base_s: float
    backoff_max_s: float
    max_retry_after_s: float
    #: ... and retries go on until this long after the first attempt (an outage of a few
    #: seconds is ridden out, not failed after 4 quick attempts).
    retry_window_s: float


def retry_policy(settings: Settings) -> RetryPolicy:
    return _same_named(RetryPolicy, settings)


@dataclass(frozen=True)
class HttpConfig:
    """What the transport and the client need to build and send requests."""

    base_url: str
    timeout: tuple[float, float]  # (connect, read) seconds
    max_response_bytes: int
    user_agent: str
    #: IDs per batch call: the stages' chunk size, never above what the API accepts.
    max_ids_per_call: int
    #: Pooled connections per host: one per concurrency slot (+2 spare); more are never used,
    #: fewer make threads holding a permit open throwaway connections.
    pool_size: int
    #: Total seconds of one attempt, connect + headers + body (``api/inflight.py``).
    request_deadline_s: float
    #: Tracks per recommendation call when the caller names no ``size``.
    recommendation_size: int


def http_config(settings: Settings) -> HttpConfig:
    from pipeline.settings import API_MAX_IDS_PER_CALL

    return HttpConfig(
        base_url=settings.base_url,
        timeout=settings.timeout,
        max_response_bytes=settings.max_response_bytes,
        user_agent=settings.user_agent,
        max_ids_per_call=min(settings.chunk_size, API_MAX_IDS_PER_CALL),
        pool_size=settings.max_concurrency + 2,
        request_deadline_s=settings.request_deadline_s,
        recommendation_size=settings.recommendation_size,
    )


@dataclass(frozen=True)
class SharedBudgetConfig:
    """Where the budget shared across processes lives (issue 13); ``None`` when it is off."""

    url: str
    name: str
    #: A slot's lease lasts this long unless its holder renews it (a killed holder cannot).
    lease_s: float
    #: Socket timeout of every Redis call: slower than this, Redis counts as lost.
    timeout_s: float


def shared_budget_config(settings: Settings) -> SharedBudgetConfig | None:
    if settings.shared_budget is None:
        return None
    return SharedBudgetConfig(
        url=settings.shared_budget,
        name=settings.budget_name,
        lease_s=settings.shared_budget_lease_s,
        timeout_s=settings.shared_budget_timeout_s,
    )


@dataclass(frozen=True)
class StorageConfig:
    """Where a run reads and writes (local paths or object-store URIs), and its state lock.

    Locations are ``Path`` (local) or ``str`` (a ``scheme://`` URI), as ``Settings`` keeps
    them; ``io.storage.RunStorage.open`` turns them into ``Storage`` roots.
    """

    input: Path | str | None
    output_dir: Path | str
    state_dir: Path | str
    s3_endpoint_url: str | None
    lock_wait_s: float
    lock_lease_s: float


def storage_config(settings: Settings) -> StorageConfig:
    return _same_named(StorageConfig, settings)


@dataclass(frozen=True)
class TtlConfig:
    """How long each kind of cached answer is trusted (the registry and entity caches)."""

    registry_found: timedelta
    registry_missing: timedelta  # also features the API has none for
    tracks: timedelta
    features: timedelta
    recommendations: timedelta


def ttl_config(settings: Settings) -> TtlConfig:
    return TtlConfig(
        registry_found=timedelta(days=settings.registry_found_ttl_days),
        registry_missing=timedelta(days=settings.registry_missing_ttl_days),
        tracks=timedelta(days=settings.tracks_ttl_days),
        features=timedelta(days=settings.features_ttl_days),
        recommendations=timedelta(hours=settings.recommendations_ttl_hours),
    )
