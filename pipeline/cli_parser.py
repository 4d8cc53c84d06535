"""The ``reccobeats-etl`` argument parser: commands, flags, help texts, exit codes.

Why apart from ``cli.py``: the flags and their help are most of the command line's code, and
the handlers read better without them. Errors are one line (``OneLineErrorParser``).
"""

from __future__ import annotations

import argparse
import math
import typing
from datetime import date
from pathlib import Path

from pipeline import __version__
from pipeline.errors import EXIT_USAGE
from pipeline.logs import LOG_FORMATS
from pipeline.settings import MAX_CONCURRENCY, Settings


class OneLineErrorParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr (exit 2), no usage block."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


RUN_EPILOG = """exit codes:
  0    success
  2    usage, configuration or input error (one line on stderr)
  3    some requests failed after retries; successful rows are written, failures are
       listed in <output>/runs/<run_id>.json
  4    another run holds the state dir's lock (see --lock-wait)
  5    the state dir cannot be used
  6    the shared budget's Redis (--shared-budget) cannot be reached at start, or was
       lost mid-run: nothing more was sent, state checkpointed; run again later
  7    nothing could be fetched: the API at --base-url never answered (connection
       refused, DNS, every request failed); nothing published, one line names the URL
  8    an output file could not be written (disk full, permissions, I/O error): one
       line; the old partition stays published, answers are saved in the state dir
  9    the object-store state lock's lease was lost mid-run (another run took it over,
       or it could not be renewed): stopped at once, nothing published, answers so far
       appended to the state's journal; if the host pauses that long, raise
       RECCOBEATS_LOCK_LEASE_S
  10   --max-requests/--time-budget reached: what is done is published, the rest is
       pending for the next run
  130  stopped by Ctrl-C/SIGTERM: answers so far saved, run report with status
       interrupted written; run the same command again to resume
  1    unexpected error

publishing: a date's published partitions are kept when this run would turn rows that
  are ok there into failed/pending (an API outage must not overwrite a good day); the
  report's outputs.kept says what was kept. --force replaces them anyway (setting
  force_publish). A smaller or different input replaces the date as usual.
  --stage publish alone first fetches what the state lacks (it says so);
  --offline publishes from the state dir only, with no request.

example:
  reccobeats-etl run --input tracks.parquet --date 2026-11-23 --rate-limit 60"""


#: The names ``--stage`` takes (``orchestrator.STAGES``, which this module cannot import:
#: ``--help`` must not load pandas; ``test_cli`` checks they agree).
STAGE_CHOICES = ("resolve", "features", "recommendations", "publish")


def _default(name: str) -> object:
    """A setting's default for a help text, read from ``Settings`` (written there once)."""
    return Settings.model_fields[name].default


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _positive(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0 < x < math.inf:  # also refuses nan, which compares false
        raise argparse.ArgumentTypeError(f"must be a finite number > 0: {value!r}")
    return x


def _add_id_column(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--id-column",
        metavar="NAME",
        help="input column holding track IDs/URIs/URLs (default: detected, the one known ID "
        "column name the input has, e.g. track_id or spotify_id; env: RECCOBEATS_ID_COLUMN)",
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    p.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text: 'UTC-time LEVEL logger: message'; json: one object per line "
        "(ts in UTC, level, logger, message) for log shippers (default text)",
    )
    p.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML settings file (env: RECCOBEATS_CONFIG)"
    )
    prog = p.add_mutually_exclusive_group()
    prog.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="progress bars even when stderr is not a terminal",
    )
    prog.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bars"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="reccobeats-etl",
        description="Enrich Spotify track lists with ReccoBeats IDs, audio features and "
        "recommendations, within the API's rate limit.",
        epilog="Settings precedence: flags > RECCOBEATS_* env vars > --config TOML > defaults.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=RUN_EPILOG,
        help="run the nightly job on a track list",
        description="Read track IDs from Parquet, resolve them, fetch audio "
        "features and recommendations, write date partitions and a run report.",
    )
    # Locations stay strings here: Settings keeps s3://, gs://, az://, file:// URIs as given.
    run.add_argument(
        "--input",
        metavar="PATH|URI",
        help="Parquet file or directory of Parquet files, local or s3://... (env: "
        "RECCOBEATS_INPUT)",
    )
    run.add_argument(
        "--output",
        dest="output_dir",
        metavar="DIR|URI",
        help=f"output root, local or s3://bucket/prefix (default {_default('output_dir')}; env: "
        "RECCOBEATS_OUTPUT_DIR)",
    )
    run.add_argument(
        "--state-dir",
        metavar="DIR|URI",
        help="registry/caches dir, local or s3://bucket/prefix (default "
        f"{_default('state_dir')}; env: RECCOBEATS_STATE_DIR)",
    )
    run.add_argument(
        "--date",
        dest="run_date",
        type=_date,
        metavar="YYYY-MM-DD",
        help="partition date YYYY-MM-DD (default: today, UTC; a flag only, no env var)",
    )
    run.add_argument(
        "--base-url",
        metavar="URL",
        help=f"API base URL (default {_default('base_url')}; env: RECCOBEATS_BASE_URL)",
    )
    run.add_argument(
        "--rate-limit",
        type=_positive,
        metavar="REQUESTS_PER_MIN",
        help="global sliding-window ceiling across all endpoints; a rate given is the rate "
        f"aimed at (default {_default('rate_limit'):g}, under per-endpoint seed limits; env: "
        "RECCOBEATS_RATE_LIMIT)",
    )
    run.add_argument(
        "--max-concurrency",
        type=int,
        metavar="N",
        help=f"cap on requests in flight, 1-{MAX_CONCURRENCY} (default "
        f"{_default('max_concurrency')}; env: RECCOBEATS_MAX_CONCURRENCY); "
        "the limit in force adapts below it to rate x latency",
    )
    _add_id_column(run)
    run.add_argument(
        "--no-recommendations",
        dest="recommendations",
        action="store_false",
        default=None,
        help="skip the recommendations stage",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (IDs new/known, calls per endpoint, ETA); no request, "
        "nothing written (no state dir, lock or rejects)",
    )
    run.add_argument(
        "--offline",
        action="store_true",
        help="no request at all: publish the date from what the state dir holds "
        "(rows not in it are 'pending')",
    )
    run.add_argument(
        "--force",
        dest="force_publish",
        action="store_true",
        default=None,
        help="replace the date's published partitions even when rows ok there would become "
        "failed/pending (env: RECCOBEATS_FORCE_PUBLISH)",
    )
    run.add_argument(
        "--stage",
        dest="stages",
        action="extend",
        nargs="+",
        choices=STAGE_CHOICES,
        metavar="STAGE",
        help=f"run only these stages, of {', '.join(STAGE_CHOICES)}: --stage resolve "
        "features, or the flag repeated (default: all)",
    )
    run.add_argument(
        "--shared-budget",
        metavar="URL",
        help="redis://HOST:PORT/DB: share one rate budget with every process naming the same "
        "--budget-name there (env: RECCOBEATS_SHARED_BUDGET; default: off, per-process limits)",
    )
    run.add_argument(
        "--budget-name",
        metavar="NAME",
        help=f"the shared budget's name in Redis (default {_default('budget_name')}; env: "
        "RECCOBEATS_BUDGET_NAME)",
    )
    run.add_argument(
        "--max-requests",
        type=int,
        metavar="N",
        help="stop after N API requests, save and publish what is done, exit 10 "
        "(env: RECCOBEATS_MAX_REQUESTS; default: no limit)",
    )
    run.add_argument(
        "--time-budget",
        metavar="DURATION",
        help="stop after this long (5400, 90m, 2h, 1h30m), save and publish what is done, "
        "exit 10 (env: RECCOBEATS_TIME_BUDGET; default: no limit)",
    )
    run.add_argument(
        "--lock-wait",
        dest="lock_wait_s",
        type=float,
        metavar="SECONDS",
        help="seconds to wait for another run's state lock (default "
        f"{_default('lock_wait_s'):g}: exit 4 at once; env: RECCOBEATS_LOCK_WAIT_S)",
    )
    _add_common(run)

    demo = sub.add_parser(
        "demo",
        help="run the job on the bundled sample against the simulator",
        description="Start the bundled ReccoBeats simulator on a free 127.0.0.1 port, run the "
        "whole job on the sample track list shipped in the package, and print where the "
        "outputs are and how to load them. No network and no configuration needed.",
    )
    demo.add_argument(
        "--output", dest="output_dir", type=Path, help="where to write (default: a new temp dir)"
    )
    demo.add_argument(
        "--input", type=Path, default=None, help="track list (default: the bundled sample)"
    )
    _add_id_column(demo)
    _add_common(demo)

    from pipeline.simulator import add_simulate_arguments

    sim = sub.add_parser(
        "simulate",
        help="serve the ReccoBeats simulator on 127.0.0.1",
        description="A loopback stand-in for the ReccoBeats API, with its paths, "
        "shapes, rate limits, 429 + Retry-After and missing IDs.",
    )
    add_simulate_arguments(sim)

    rep = sub.add_parser(
        "report",
        help="summarise (and plot) a run report JSON",
        description="Check that RUN_JSON is a run report (its schema_version and fields), "
        "print its summary, and with --plot draw requests/s against the limit, 429s and "
        "latency. Exit 2 with one line when the file is not a run report.",
    )
    rep.add_argument("run_json", type=Path, help="<output>/runs/<run_id>.json")
    rep.add_argument("--plot", type=Path, help="write a PNG: requests/s vs limit, 429s, latency")
    for name, what in (
        ("airflow-dag", "the Airflow 3 DAG file (put it in your DAGs folder)"),
        ("cron-wrapper", "the cron wrapper run_nightly.sh, set to run this installation"),
        ("crontab-example", "the example crontab for the cron wrapper"),
    ):
        res = sub.add_parser(
            name,
            help=f"write {what}",
            description=f"Write {what} to PATH (a file name or an existing directory) from "
            "the installed package, so a pip install is enough. Refuses to overwrite.",
        )
        res.add_argument("path", metavar="PATH", help="a file name, or a directory (ending in /)")
    return parser
