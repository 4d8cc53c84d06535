"""One typed Settings: flags > env RECCOBEATS_* > TOML > defaults, each invalid value refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import stage_config
from pipeline.errors import ConfigError
from pipeline.settings import Settings, load_settings


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "reccobeats.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_precedence_is_flags_then_env_then_toml_then_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = _toml(tmp_path, "rate_limit = 30\nchunk_size = 10\nmax_retries = 7\n")
    monkeypatch.setenv("RECCOBEATS_RATE_LIMIT", "45")
    monkeypatch.setenv("RECCOBEATS_CHUNK_SIZE", "20")
    s = load_settings({"rate_limit": 90.0, "chunk_size": None}, config_file=toml)
    assert s.rate_limit == 90.0  # flag beats env
    assert s.chunk_size == 20  # env beats TOML (a flag given as None does not mask it)
    assert s.max_retries == 7  # TOML beats the default
    assert s.read_timeout_s == Settings.model_fields["read_timeout_s"].default


def test_config_file_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECCOBEATS_CONFIG", str(_toml(tmp_path, "max_retries = 2\n")))
    assert load_settings().max_retries == 2


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"chunk_size": 41}, "chunk_size"),
        ({"base_url": "ftp://x"}, "base_url"),
        ({"rate_limit": 0}, "rate_limit"),
        ({"rate_limit": float("inf")}, "rate_limit"),  # from env or TOML: not only the flag
        ({"endpoint_limits": {"tracks": {"rate_per_min": float("nan")}}}, "endpoint_limits"),
        ({"endpoint_limits": {"nope": {}}}, "endpoint_limits"),
    ],
)
def test_invalid_values_are_one_config_error_naming_the_setting(
    overrides: dict[str, object], names: str
) -> None:
    with pytest.raises(ConfigError, match=names):
        load_settings(overrides)


def test_a_typo_in_the_toml_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rate_limt"):
        load_settings(config_file=_toml(tmp_path, "rate_limt = 5\n"))


def test_a_missing_toml_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_file=tmp_path / "absent.toml")


def test_a_directory_as_the_toml_file_is_named_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory, not a TOML file"):  # "does not exist"
        load_settings(config_file=tmp_path)


@pytest.mark.parametrize("name", ["input", "output_dir", "state_dir"])
def test_an_empty_location_is_refused_not_read_as_the_current_dir(name: str) -> None:
    with pytest.raises(ConfigError, match=f"setting '{name}'.*is empty"):
        load_settings({name: "  "})


def test_an_endpoint_table_changes_only_the_endpoints_it_names(tmp_path: Path) -> None:
    default = Settings().endpoint_limits
    s = load_settings(config_file=_toml(tmp_path, "[endpoint_limits.tracks]\nrate_per_min = 10\n"))
    assert s.endpoint_limits["tracks"].rate_per_min == 10
    assert s.endpoint_limits["recommendation"] == default["recommendation"]


def test_consumer_configs_carry_the_settings_values() -> None:
    s = load_settings({"chunk_size": 12, "seed_stagger_s": 0.0})
    config = stage_config(s)
    assert (config.chunk_size, config.seed_stagger_s) == (12, 0.0)
    with pytest.raises(AttributeError):
        config.chunk_size = 3  # type: ignore[misc]  # frozen
