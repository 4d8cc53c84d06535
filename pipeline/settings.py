"""One typed, immutable settings object for the whole pipeline.

Precedence, highest first: explicit overrides (CLI flags), ``RECCOBEATS_*`` environment
variables, an optional TOML file (``--config`` or ``RECCOBEATS_CONFIG``), then the defaults
below, which come from ``design.md`` (seed rates, TTLs) and from what the real API accepts.
Invalid values fail fast with a ``ConfigError`` that names the setting.

Over 350 lines on purpose: it is the one place every user-facing knob is declared, with its
default, bounds and description (written once; consumers get frozen views via config.py).
"""

from __future__ import annotations

import contextvars
import difflib
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pipeline.clock import parse_duration
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

REAL_API_URL = "https://api.reccobeats.com"

#: The batch endpoints take at most 40 IDs; extras may be dropped without an error
#: (docs/decisions.md), so no setting may ask for more.
API_MAX_IDS_PER_CALL = 40
API_MAX_SEEDS = 5
API_MAX_RECOMMENDATION_SIZE = 100
#: The highest in-flight cap a user may set: the HTTP pool holds as many connections, the
#: knee fit's cost grows with it (9 ms per evaluation at 64, docs/decisions.md), and a kill
#: costs up to that many requests.
MAX_CONCURRENCY = 64

#: Canonical endpoint names: the limiter, the metrics and the report all use these keys.
ENDPOINTS = (
    "tracks",  # GET /v1/track?ids=
    "audio_features",  # GET /v1/audio-features?ids=
    "recommendation",  # GET /v1/track/recommendation
)

_BUDGET_NAME = re.compile(r"[A-Za-z0-9._:-]{1,64}")
#: URI schemes a location setting (input, output_dir, state_dir) accepts besides plain paths.
LOCATION_SCHEMES = ("s3", "gs", "gcs", "abfs", "az", "file")


def _location(value: object) -> object:
    """A plain path stays a ``Path``; a ``scheme://`` URI stays a string (``Path`` would
    fold its ``//``). An unknown scheme fails here, naming the setting."""
    if isinstance(value, str) and "://" in value:
        scheme = value.split("://", 1)[0].lower()
        if scheme not in LOCATION_SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r}; use a path or one of {LOCATION_SCHEMES}")
        return value
    if isinstance(value, str) and not value.strip():
        raise ValueError("is empty; give a path or a URI")  # Path("") would be the cwd
    return Path(value) if isinstance(value, str) else value


#: A local path, or a URI of an object store (s3://bucket/prefix, gs://..., az://...).
Location = Annotated[Path | str, BeforeValidator(_location)]

_TOML_PATH: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "reccobeats_toml_path", default=None
)


class EndpointLimit(BaseModel):
    """A per-endpoint ceiling; ``None`` rate means only the global limit applies."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    rate_per_min: float | None = Field(default=None, gt=0)
    min_interval_s: float = Field(default=0.0, ge=0)


def _default_endpoint_limits() -> dict[str, EndpointLimit]:
    # Seeds from design.md section 3 / reccobeats-api.md section 5 (moodlist's settled values).
    # They apply only while no rate is told (see ``pipeline.config.limiter_config``).
    return {
        "tracks": EndpointLimit(rate_per_min=80, min_interval_s=0.75),
        "audio_features": EndpointLimit(rate_per_min=80, min_interval_s=0.75),
        "recommendation": EndpointLimit(rate_per_min=60, min_interval_s=1.0),
    }


class Settings(BaseSettings):
    """Every knob of the pipeline. Frozen: build a new one with ``replace()``."""

    model_config = SettingsConfigDict(
        env_prefix="RECCOBEATS_",
        frozen=True,
        extra="forbid",
        validate_default=True,
        # ``--rate-limit inf`` passed ``gt=0``, ran, and crashed saving the learned rate.
        allow_inf_nan=False,
    )

    # -- where ---------------------------------------------------------------------------
    base_url: str = REAL_API_URL
    input: Location | None = None
    output_dir: Location = Path("data/output")
    state_dir: Location = Path("data/state")
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (else AWS_ENDPOINT_URL)"
    )
    id_column: str | None = None

    # -- limiter -------------------------------------------------------------------------
    # The told-rate rule (README "Rate limits", docs/decisions.md): when rate_limit is given
    # (flag, env or TOML), it is the rate aimed at: the seed endpoint_limits and the 0.25 s gap
    # below apply only while it is NOT given; told, the gap is 60/rate_limit s and there are
    # no per-endpoint limits unless endpoint_limits / min_interval_s are given too.
    rate_limit: float = Field(default=120.0, gt=0, description="global requests/min ceiling")
    window_s: float = Field(default=60.0, gt=0, description="sliding-window length")
    min_interval_s: float = Field(default=0.25, ge=0, description="global gap between starts")
    max_concurrency: int = Field(
        default=16,
        ge=1,
        le=MAX_CONCURRENCY,
        description="cap on requests in flight; the limit in force adapts below it "
        "(adaptive_concurrency) to rate x latency, and backs off when the server saturates",
    )
    adaptive_concurrency: bool = Field(
        default=True, description="False: always allow max_concurrency requests in flight"
    )
    jitter_margin_s: float = Field(
        default=0.02, ge=0, description="extra spacing so network jitter cannot cause a 429"
    )
    endpoint_limits: dict[str, EndpointLimit] = Field(default_factory=_default_endpoint_limits)
    adaptive: bool = True
    adaptive_decrease: float = Field(default=0.5, gt=0, lt=1)
    adaptive_increase_per_min: float = Field(default=6.0, ge=0)
    adaptive_quiet_s: float = Field(default=30.0, gt=0)
    adaptive_min_rate: float = Field(default=6.0, gt=0, description="floor, requests/min")
    adaptive_probe_429_budget: float = Field(
        default=0.01, ge=0, le=1, description="share of requests upward probes may lose to 429"
    )

    # -- shared budget (issue 13) ------------------------------------------------------
    # Off (None): the in-process limiter, as before. A redis:// URL: every process naming the
    # same budget_name shares one budget there (docs/decisions.md, README "Shared budget").
    shared_budget: str | None = Field(
        default=None, description="redis://HOST:PORT/DB of the budget shared by all processes"
    )
    budget_name: str = Field(
        default="reccobeats", description="budgets of different names share one Redis apart"
    )
    shared_budget_lease_s: float = Field(
        default=10.0, gt=0, description="a slot of a killed process is free again after this"
    )
    shared_budget_timeout_s: float = Field(
        default=1.0, gt=0, description="a Redis call slower than this means Redis is lost"
    )

    # -- HTTP ----------------------------------------------------------------------------
    connect_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=90.0, gt=0)
    request_deadline_s: float = Field(
        default=120.0,
        gt=0,
        description="total seconds one attempt may take (connect + headers + body): a body "
        "trickled byte by byte within read_timeout_s still ends here",
    )
    retry_window_s: float = Field(
        default=30.0,
        ge=0,
        description="a failing request (5xx, transport, malformed) is retried until max_retries "
        "extra attempts are spent AND this long has passed since its first attempt, so a short "
        "outage is ridden out",
    )
    max_retries: int = Field(default=4, ge=0, le=20)
    backoff_base_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=60.0, ge=0)
    max_retry_after_s: float = Field(default=300.0, gt=0)
    max_response_bytes: int = Field(default=20_000_000, gt=0)
    user_agent: str = "reccobeats-etl/0.1 (+batch ETL)"

    # -- stages --------------------------------------------------------------------------
    chunk_size: int = Field(default=API_MAX_IDS_PER_CALL, ge=1)
    chunk_concurrency: int | None = Field(
        default=None, ge=1, description="cap on resolve/features chunks in progress (none)"
    )
    recommendations: bool = True
    force_publish: bool = Field(
        default=False,
        description="replace a published partition even when the new one has fewer rows with "
        "status ok (default: keep the better one, say so in the report)",
    )
    seeds_per_chunk: int = Field(default=API_MAX_SEEDS, ge=1, le=API_MAX_SEEDS)
    max_seed_chunks_per_playlist: int = Field(default=4, ge=1)
    seed_chunk_concurrency: int | None = Field(
        default=None, ge=1, description="cap on recommendation chunks in progress (none)"
    )
    seed_stagger_s: float = Field(
        default=0.0,
        ge=0,
        description="extra wait of index x this before a playlist's seed chunk, on top of the "
        "limiter's spacing (0: the limiter alone spaces them)",
    )
    recommendation_size: int = Field(default=20, ge=1, le=API_MAX_RECOMMENDATION_SIZE)

    # -- budgets (backfills that span nights) ---------------------------------------------
    max_requests: int | None = Field(
        default=None, ge=1, description="stop after this many API requests (none: no limit)"
    )
    time_budget: float | None = Field(
        default=None, description="stop after this long: seconds, or 90m, 2h, 1h30m"
    )
    work_order: Literal["rows_first", "stage_by_stage"] = Field(
        default="rows_first",
        description="rows_first: finish started rows first (features, then new IDs, then "
        "recommendations); stage_by_stage: every ID resolved before any feature (for comparison)",
    )

    # -- state ---------------------------------------------------------------------------
    registry_found_ttl_days: float = Field(default=60.0, gt=0)
    registry_missing_ttl_days: float = Field(default=14.0, gt=0)
    # Track metadata arrives with the registry's found answer, and resolve re-asks a found ID
    # whose metadata expired: shorter than registry_found_ttl_days, it would cut that 60 d short.
    tracks_ttl_days: float = Field(default=60.0, gt=0)
    features_ttl_days: float = Field(default=30.0, gt=0)
    recommendations_ttl_hours: float = Field(default=20.0, gt=0)
    checkpoint_every_chunks: int = Field(
        default=1, ge=1, description="journal the state after this many chunks (cheap)"
    )
    lock_wait_s: float = Field(default=0.0, ge=0, description="0: exit at once if locked")
    lock_lease_s: float = Field(
        default=300.0,
        ge=5,
        description="object-store state lock: a killed run's lock expires after this",
    )

    # -- scheduling / UX -----------------------------------------------------------------
    airflow_pool: str = "reccobeats_api"
    progress: bool | None = None  # None: only on a terminal

    @field_validator("base_url")
    @classmethod
    def _http_only(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @field_validator("shared_budget")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://HOST:PORT/DB (or rediss://, unix://) URL")
        return v

    @field_validator("budget_name")
    @classmethod
    def _budget_key(cls, v: str) -> str:
        # Part of every Redis key, inside a {hash tag}: no braces, spaces or empties.
        if not _BUDGET_NAME.fullmatch(v):
            raise ValueError("must be 1-64 of A-Z a-z 0-9 . _ - : (it names Redis keys)")
        return v

    @field_validator("time_budget", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return None if v is None or v == "" else parse_duration(v)

    @field_validator("chunk_size")
    @classmethod
    def _api_cap(cls, v: int) -> int:
        if v > API_MAX_IDS_PER_CALL:
            raise ValueError(
                f"the API accepts at most {API_MAX_IDS_PER_CALL} IDs per batch call and may drop "
                "the rest silently (docs/decisions.md)"
            )
        return v

    @field_validator("endpoint_limits", mode="before")
    @classmethod
    def _merge_defaults(cls, v: Any) -> Any:
        # A TOML/env table names only the endpoints it changes; the rest keep their seeds.
        if isinstance(v, Mapping):
            merged: dict[str, Any] = dict(_default_endpoint_limits())
            merged.update(v)
            return merged
        return v

    @field_validator("endpoint_limits")
    @classmethod
    def _known_endpoints(cls, v: dict[str, EndpointLimit]) -> dict[str, EndpointLimit]:
        unknown = sorted(set(v) - set(ENDPOINTS))
        if unknown:
            raise ValueError(f"unknown endpoint(s) {unknown}; known: {list(ENDPOINTS)}")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _TOML_PATH.get()
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    # -- derived -------------------------------------------------------------------------
    def endpoint_limit(self, endpoint: str) -> EndpointLimit:
        return self.endpoint_limits.get(endpoint, EndpointLimit())

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout_s, self.read_timeout_s)

    def replace(self, **changes: Any) -> Settings:
        """A validated copy with ``changes`` applied (env and TOML are not re-read)."""
        # Only what was set: the fields a user told stay told (limiter_config reads that).
        data = self.model_dump(exclude_unset=True)
        data.update(changes)
        try:
            return type(self).model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"]) or "settings"
        parts.append(f"setting {name!r}: {err['msg']} (got {err.get('input')!r})")
    return "invalid configuration: " + "; ".join(parts)


#: ``RECCOBEATS_*`` variables read by something other than ``Settings``: the TOML path, and
#: the cron wrapper's own knobs (jobs/cron/run_nightly.sh).
OTHER_ENV_VARS = frozenset(
    {"RECCOBEATS_CONFIG", "RECCOBEATS_LOG_DIR", "RECCOBEATS_TIMEOUT", "RECCOBEATS_JOB_CMD"}
)


def unknown_env_vars(environ: Mapping[str, str]) -> list[str]:
    """One warning line per ``RECCOBEATS_*`` variable nothing reads (a typo, most likely).

    Why: pydantic-settings ignores environment variables it has no field for, so
    ``RECCOBEATS_RATE_LIMT=5`` ran at the default rate in silence, while the same typo in the
    TOML file is an error. An unknown variable is only warned about, not refused: the
    environment is shared with other tools and versions of this package.
    """
    known = {f"RECCOBEATS_{name.upper()}" for name in Settings.model_fields} | OTHER_ENV_VARS
    lines = []
    for name in sorted(k for k in environ if k.upper().startswith("RECCOBEATS_")):
        if name.upper() in known:
            continue
        close = difflib.get_close_matches(name.upper(), sorted(known), n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else ""
        lines.append(f"unknown environment variable {name} is ignored{hint}")
    return lines


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: Path | str | None = None,
) -> Settings:
    """Build settings from overrides > env > TOML > defaults; raise ``ConfigError`` if invalid.

    ``overrides`` whose value is ``None`` are ignored, so CLI flags that were not given
    do not mask the environment.
    """
    path = config_file if config_file is not None else os.environ.get("RECCOBEATS_CONFIG")
    toml_path = Path(path) if path else None
    if toml_path is not None and not toml_path.is_file():
        what = "is a directory, not a TOML file" if toml_path.is_dir() else "does not exist"
        raise ConfigError(f"setting 'config': TOML file {toml_path} {what}")
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    for line in unknown_env_vars(os.environ):
        log.warning("%s", line)
    token = _TOML_PATH.set(toml_path)
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except ValueError as exc:  # TOML syntax errors surface as ValueError subclasses
        raise ConfigError(f"setting 'config': cannot read {toml_path}: {exc}") from None
    finally:
        _TOML_PATH.reset(token)
