"""reccobeats-etl: enrich Spotify track lists through the rate-limited ReccoBeats API.

The public surface: what users, the cron wrapper (``jobs/``) and the Airflow DAG
(``airflow_dags/``) import. Everything else is internal and may move; ``__all__`` lists the
names and ``tests/test_exported_members.py`` holds it to them. Names resolve lazily, so
``import pipeline`` (and the CLI's ``--help``) does not pay for pandas or pyarrow.
"""

import typing as _typing
from importlib import import_module as _import_module

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "run_job": "pipeline.orchestrator",
    "STAGES": "pipeline.orchestrator",
    "RunReport": "pipeline.io.report",
    "load_enriched": "pipeline.io.writer",
    "Settings": "pipeline.settings",
    "load_settings": "pipeline.settings",
    "ReccoBeatsError": "pipeline.errors",
    "ConfigError": "pipeline.errors",
    "InputError": "pipeline.errors",
    "NothingResolvedError": "pipeline.errors",
    "StateError": "pipeline.errors",
    "StateLockedError": "pipeline.errors",
    "APIError": "pipeline.errors",
    "Cancelled": "pipeline.errors",
    "exit_code_for": "pipeline.errors",
    "StopSignal": "pipeline.stop",
    "stop_on_signals": "pipeline.stop",
    "setup_logging": "pipeline.logs",
}

__all__ = [
    "STAGES",
    "APIError",
    "Cancelled",
    "ConfigError",
    "InputError",
    "NothingResolvedError",
    "ReccoBeatsError",
    "RunReport",
    "Settings",
    "StateError",
    "StateLockedError",
    "StopSignal",
    "__version__",
    "exit_code_for",
    "load_enriched",
    "load_settings",
    "run_job",
    "setup_logging",
    "stop_on_signals",
]

if _typing.TYPE_CHECKING:
    from pipeline.errors import (
        APIError,
        Cancelled,
        ConfigError,
        InputError,
        NothingResolvedError,
        ReccoBeatsError,
        StateError,
        StateLockedError,
        exit_code_for,
    )
    from pipeline.io.report import RunReport
    from pipeline.io.writer import load_enriched
    from pipeline.logs import setup_logging
    from pipeline.orchestrator import STAGES, run_job
    from pipeline.settings import Settings, load_settings
    from pipeline.stop import StopSignal, stop_on_signals


def __getattr__(name: str) -> _typing.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value
    return value
