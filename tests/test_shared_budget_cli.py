"""The shared budget's user surface: settings names, CLI flags, the exit code at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import shared_budget_config
from pipeline.errors import EXIT_SHARED_BUDGET, EXIT_USAGE, ConfigError
from pipeline.settings import load_settings
from pipeline.simulator import SimulatorServer
from tests.conftest import SAMPLE_INPUT
from tests.redis_support import free_port


def test_off_by_default() -> None:
    settings = load_settings()
    assert settings.shared_budget is None
    assert settings.budget_name == "reccobeats"
    assert shared_budget_config(settings) is None


def test_env_toml_and_overrides_name_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text('shared_budget = "redis://toml:6379/1"\nbudget_name = "from-toml"\n')
    from_toml = load_settings(config_file=toml)
    assert (from_toml.shared_budget, from_toml.budget_name) == ("redis://toml:6379/1", "from-toml")
    monkeypatch.setenv("RECCOBEATS_SHARED_BUDGET", "redis://env:6379/2")
    monkeypatch.setenv("RECCOBEATS_BUDGET_NAME", "from-env")
    from_env = load_settings(config_file=toml)
    assert (from_env.shared_budget, from_env.budget_name) == ("redis://env:6379/2", "from-env")
    flags = load_settings({"shared_budget": "redis://flag:1/0", "budget_name": "b"})
    assert (flags.shared_budget, flags.budget_name) == ("redis://flag:1/0", "b")


@pytest.mark.parametrize(
    ("field", "value"),
    [("shared_budget", "http://redis:6379"), ("budget_name", "two words"), ("budget_name", "{x}")],
)
def test_bad_values_are_config_errors(field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=field):
        load_settings({field: value})


def test_redis_unreachable_at_start_exits_6_in_one_line_before_any_request(
    tmp_path: Path, simulator: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    code = main(
        [
            "run",
            "--input", str(SAMPLE_INPUT),
            "--output", str(tmp_path / "out"),
            "--state-dir", str(tmp_path / "state"),
            "--base-url", simulator.url,
            "--shared-budget", url,
            "--budget-name", "cli",
            "--no-progress",
            "-q",
        ]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_SHARED_BUDGET
    assert len(err) == 1, err
    assert "cannot reach Redis at 127.0.0.1:" in err[0] and "budget 'cli'" in err[0]
    assert simulator.counters()["requests_total"] == 0


def test_a_bad_url_on_the_command_line_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["run", "--input", str(SAMPLE_INPUT), "--shared-budget", "localhost:6379"])
    assert code == EXIT_USAGE
    assert "shared_budget" in capsys.readouterr().err


def test_the_password_never_reaches_the_message() -> None:
    from pipeline.api.backends.redis_budget import redacted

    assert redacted("redis://:s3cret@redis.internal:6380/2") == "redis.internal:6380/2"
    assert redacted("redis://user:s3cret@h/0") == "h:6379/0"
