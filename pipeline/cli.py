"""``reccobeats-etl``: run the job, the demo, the simulator, or draw a run report.

Exit codes (documented in README): 0 ok; 2 usage, config or input error; 3 requests failed
after retries (rows that succeeded are written, failures listed in the report); 4 another run
holds the state lock; 5 state dir unusable; 6 the shared budget's Redis is unreachable;
7 nothing could be fetched (the API never answered); 8 an output file cannot be written;
9 the object-store state lock's lease was lost mid-run; 10 request/time budget reached;
130 stopped by a signal; 1 unexpected.

Why argparse errors are one line: a bad ``--date`` used to print the 7-line usage block before
the message; the message names the flag, and ``--help`` is one command away.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import typing
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pipeline.cli_parser import RUN_EPILOG, OneLineErrorParser, build_parser
from pipeline.errors import EXIT_UNEXPECTED, EXIT_USAGE, Cancelled, ReccoBeatsError, exit_code_for
from pipeline.logs import progress_safe_logging, setup_logging
from pipeline.sanitize import clean_lines, clean_text

__all__ = ["RUN_EPILOG", "OneLineErrorParser", "build_parser", "main"]

log = logging.getLogger("pipeline")


def _cmd_run(args: argparse.Namespace) -> int:
    from pipeline.orchestrator import STAGES, run_job
    from pipeline.settings import load_settings

    overrides = {
        k: getattr(args, k, None)
        for k in (
            "input",
            "output_dir",
            "state_dir",
            "base_url",
            "rate_limit",
            "max_concurrency",
            "id_column",
            "recommendations",
            "lock_wait_s",
            "shared_budget",
            "budget_name",
            "max_requests",
            "time_budget",
            "progress",
            "force_publish",
        )
    }
    settings = load_settings(overrides, config_file=args.config)
    run_date = args.run_date or datetime.now(UTC).date()
    from pipeline.stop import stop_on_signals

    with stop_on_signals() as stop:
        report = run_job(
            settings,
            run_date,
            stages=args.stages or STAGES,
            dry_run=args.dry_run,
            offline=args.offline,
            cancel=stop,
        )
    # A dry run's summary is its plan, on stdout (it is the command's answer).
    print(clean_lines(report.summary()), file=sys.stdout if args.dry_run else sys.stderr)
    return report.exit_code


def _cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import run_demo

    out = args.output_dir or Path(tempfile.mkdtemp(prefix="reccobeats-demo-"))
    from pipeline.resources import sample_input_path

    return run_demo(
        args.input or sample_input_path(),
        out,
        config_file=args.config,
        progress=args.progress,
        id_column=args.id_column,
    )


def _cmd_resource(args: argparse.Namespace) -> int:
    from pipeline.resources import AIRFLOW_DAG, CRON_WRAPPER, CRONTAB_EXAMPLE, install_resource

    name = {"airflow-dag": AIRFLOW_DAG, "cron-wrapper": CRON_WRAPPER}.get(
        args.command, CRONTAB_EXAMPLE
    )
    try:
        target = install_resource(name, args.path)
    except FileExistsError as exc:
        print(f"reccobeats-etl: error: {clean_text(exc)}", file=sys.stderr)
        return EXIT_USAGE
    print(target)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pipeline.io.report import load_report, summary_text

    report = load_report(args.run_json)
    print(clean_lines(summary_text(report)))
    if args.plot:
        from pipeline.io.plot import plot_report

        plot_report(report, args.plot)
        print(f"plot: {args.plot}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "simulate":
        from pipeline.simulator import simulate_from_args

        return simulate_from_args(args)
    setup_logging(getattr(args, "verbose", 0), getattr(args, "quiet", False), args_log_format(args))
    handlers = {"run": _cmd_run, "demo": _cmd_demo, "report": _cmd_report}
    try:
        with progress_safe_logging():
            return handlers.get(args.command, _cmd_resource)(args)
    except Cancelled as exc:
        if exit_code_for(exc) != exit_code_for(Cancelled()):
            # e.g. Redis lost: exit 6
            print(f"reccobeats-etl: error: {clean_text(exc)}", file=sys.stderr)
            return exit_code_for(exc)
        where = f"; report: {exc.report_path}" if exc.report_path else ""
        print(
            "reccobeats-etl: stopped (Ctrl-C or SIGTERM): every answer received so far is "
            f"saved in the state dir; run the same command again to continue{where}",
            file=sys.stderr,
        )
        return exit_code_for(exc)
    except ReccoBeatsError as exc:
        print(f"reccobeats-etl: error: {clean_text(exc)}", file=sys.stderr)
        return exit_code_for(exc)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        print(f"reccobeats-etl: error: {clean_text(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # any other OS error the layers did not name: one line, exit 1
        print(f"reccobeats-etl: error: {clean_text(exc)}", file=sys.stderr)
        return EXIT_UNEXPECTED


def args_log_format(args: argparse.Namespace) -> typing.Literal["text", "json"]:
    return "json" if getattr(args, "log_format", "text") == "json" else "text"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
