"""The one entry point that cron and Airflow both call.

Schedulers differ in how they pick the run date and where settings come from, so this module
takes both explicitly and does nothing else: the pipeline (``pipeline.run_job``) owns every
decision about what to fetch. Keeping the scheduler layer this thin means a run started by cron,
by Airflow or by hand with the same date and settings makes the same requests and writes the
same partitions.

    python -m jobs.nightly_enrich --date 2026-11-20 [--stage resolve ...] [--config etl.toml]

Exit codes are the pipeline's (``pipeline.errors.EXIT_CODES``, the README's table): 0 ok, 2 bad
input/config, 3 partial (API failures after retries), 4 state locked by another run, 5 state
dir unusable, 6 shared budget lost, 7 nothing fetched, 8 output not writable, 9 state lock's
lease lost, 10 budget reached, 130 cancelled.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Collection, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pipeline import (
    STAGES,
    ConfigError,
    ReccoBeatsError,
    RunReport,
    Settings,
    exit_code_for,
    load_settings,
    run_job,
    setup_logging,
    stop_on_signals,
)


def run_nightly(
    run_date: date,
    settings: Settings | None = None,
    *,
    stages: Collection[str] = STAGES,
    dry_run: bool = False,
    progress: bool | None = None,
    config_file: Path | str | None = None,
    cancel: threading.Event | None = None,
    **overrides: Any,
) -> RunReport:
    """Run the enrichment job for ``run_date`` and return its report.

    ``settings=None`` loads them the usual way (overrides > ``RECCOBEATS_*`` env > TOML >
    defaults); given settings are used as they are, with ``overrides`` applied on top. Overrides
    whose value is ``None`` are ignored so that "not configured" never masks the environment.
    Setting ``cancel`` makes the job checkpoint and stop early (``Cancelled``, exit 130).
    Raises the pipeline's errors (``InputError``/``ConfigError`` are not worth retrying).
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    if settings is None:
        settings = load_settings(given, config_file=config_file)
    elif given:
        settings = settings.replace(**given)
    # Canonical order whatever order the caller named them in; unknown names are an error
    # here rather than a silent no-op deep in the job.
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; known: {list(STAGES)}")
    ordered = tuple(s for s in STAGES if s in set(stages))
    extra: dict[str, Any] = {} if cancel is None else {"cancel": cancel}
    return run_job(settings, run_date, stages=ordered, dry_run=dry_run, progress=progress, **extra)


def _iso_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.nightly_enrich",
        description="Nightly ReccoBeats enrichment for one partition date. Settings come from "
        "RECCOBEATS_* environment variables and the optional TOML --config.",
    )
    parser.add_argument(
        "--date",
        type=_iso_date,
        default=None,
        help="partition date YYYY-MM-DD (default: today in UTC)",
    )
    parser.add_argument(
        "--stage",
        action="append",
        choices=STAGES,
        default=None,
        help="run only this stage (repeatable; default: all stages in order)",
    )
    parser.add_argument("--config", type=Path, default=None, help="TOML settings file")
    parser.add_argument(
        "--dry-run", action="store_true", help="plan only: report what would be fetched"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit code (the run report's, or the error's)."""
    args = build_parser().parse_args(argv)
    # Timestamped pipeline logs on stderr (UTC, zone written): under cron they are what the
    # dated log file holds.
    setup_logging()
    # UTC, not local time: a host in another zone must not write tomorrow's partition.
    run_date: date = args.date or datetime.now(UTC).date()
    try:
        with stop_on_signals() as stop:
            report = run_nightly(
                run_date,
                stages=args.stage or STAGES,
                dry_run=args.dry_run,
                config_file=args.config,
                cancel=stop,
            )
    except ReccoBeatsError as exc:
        code = exit_code_for(exc)
        print(
            f"nightly_enrich {run_date}: {type(exc).__name__}: {exc} (exit {code})", file=sys.stderr
        )
        return code
    except KeyboardInterrupt:
        print(f"nightly_enrich {run_date}: interrupted (exit 130)", file=sys.stderr)
        return 130
    # A dry run's summary is its plan (IDs new/known, calls per endpoint, ETA): on stdout.
    print(report.summary(), file=sys.stdout if args.dry_run else sys.stderr)
    where = f"; report {report.report_path}" if report.report_path else ""
    print(
        f"nightly_enrich {report.run_date}: run {report.run_id} {report.status} "
        f"(exit {report.exit_code}){where}"
    )
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
