"""One typed, immutable settings object for the whole pipeline.

Precedence, highest first: explicit overrides (CLI flags), ``RECCOBEATS_*`` environment
variables, an optional TOML file (``--config`` or ``RECCOBEATS_CONFIG``), then the defaults
below, which come from ``design.md`` (seed rates, TTLs) and from what the real API accepts.
Invalid values fail fast with a ``ConfigError`` that names the setting.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pipeline.errors import ConfigError

REAL_API_URL = "https://api.reccobeats.com"

#: The batch endpoints take at most 40 IDs; extras may be dropped without an error
#: (docs/decisions.md), so no setting may ask for more.
API_MAX_IDS_PER_CALL = 40
API_MAX_SEEDS = 5
API_MAX_RECOMMENDATION_SIZE = 100

#: Canonical endpoint names: the limiter, the metrics and the report all use these keys.
ENDPOINTS = (
    "tracks",  # GET /v1/track?ids=
    "audio_features",  # GET /v1/audio-features?ids=
    "track",  # GET /v1/track/{id}
    "track_audio_features",  # GET /v1/track/{id}/audio-features
    "recommendation",  # GET /v1/track/recommendation
    "artist_search",  # GET /v1/artist/search
    "artist_tracks",  # GET /v1/artist/{id}/track
)

_TOML_PATH: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "reccobeats_toml_path", default=None
)


class EndpointLimit(BaseModel):
    """A per-endpoint ceiling; ``None`` rate means only the global limit applies."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate_per_min: float | None = Field(default=None, gt=0)
    min_interval_s: float = Field(default=0.0, ge=0)


def _default_endpoint_limits() -> dict[str, EndpointLimit]:
    # Seeds from design.md section 3 / reccobeats-api.md section 5 (moodlist's settled values).
    return {
        "tracks": EndpointLimit(rate_per_min=80, min_interval_s=0.75),
        "audio_features": EndpointLimit(rate_per_min=80, min_interval_s=0.75),
        "track": EndpointLimit(rate_per_min=60, min_interval_s=1.0),
        "track_audio_features": EndpointLimit(rate_per_min=50, min_interval_s=1.2),
        "recommendation": EndpointLimit(rate_per_min=60, min_interval_s=1.0),
        "artist_search": EndpointLimit(rate_per_min=60, min_interval_s=1.0),
        "artist_tracks": EndpointLimit(rate_per_min=45, min_interval_s=1.5),
    }


class Settings(BaseSettings):
    """Every knob of the pipeline. Frozen: build a new one with ``replace()``."""

    model_config = SettingsConfigDict(
        env_prefix="RECCOBEATS_",
        frozen=True,
        extra="forbid",
        validate_default=True,
    )

    # -- where ---------------------------------------------------------------------------
    base_url: str = REAL_API_URL
    input: Path | None = None
    output_dir: Path = Path("data/output")
    state_dir: Path = Path("data/state")
    id_column: str | None = None

    # -- limiter -------------------------------------------------------------------------
    rate_limit: float = Field(default=120.0, gt=0, description="global requests/min ceiling")
    window_s: float = Field(default=60.0, gt=0, description="sliding-window length")
    min_interval_s: float = Field(default=0.25, ge=0, description="global gap between starts")
    max_concurrency: int = Field(default=6, ge=1, le=64)
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

    # -- HTTP ----------------------------------------------------------------------------
    connect_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=90.0, gt=0)
    max_retries: int = Field(default=4, ge=0, le=20)
    backoff_base_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=60.0, ge=0)
    max_retry_after_s: float = Field(default=300.0, gt=0)
    max_response_bytes: int = Field(default=20_000_000, gt=0)
    user_agent: str = "reccobeats-etl/0.1 (+batch ETL)"

    # -- stages --------------------------------------------------------------------------
    chunk_size: int = Field(default=API_MAX_IDS_PER_CALL, ge=1)
    chunk_concurrency: int = Field(default=4, ge=1)
    recommendations: bool = True
    seeds_per_chunk: int = Field(default=API_MAX_SEEDS, ge=1, le=API_MAX_SEEDS)
    max_seed_chunks_per_playlist: int = Field(default=4, ge=1)
    seed_chunk_concurrency: int = Field(default=3, ge=1)
    seed_stagger_s: float = Field(default=0.2, ge=0)
    recommendation_size: int = Field(default=20, ge=1, le=API_MAX_RECOMMENDATION_SIZE)

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

    # -- scheduling / UX -----------------------------------------------------------------
    airflow_pool: str = "reccobeats_api"
    progress: bool | None = None  # None: only on a terminal

    @field_validator("base_url")
    @classmethod
    def _http_only(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

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
        data = self.model_dump()
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
        raise ConfigError(f"setting 'config': TOML file {toml_path} does not exist")
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    token = _TOML_PATH.set(toml_path)
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except ValueError as exc:  # TOML syntax errors surface as ValueError subclasses
        raise ConfigError(f"setting 'config': cannot read {toml_path}: {exc}") from None
    finally:
        _TOML_PATH.reset(token)
