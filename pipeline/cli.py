"""``reccobeats-etl``: run the job, the demo, the simulator, or draw a run report.

Exit codes (documented in README): 0 ok; 2 usage, config or input error; 3 requests failed
after retries (rows that succeeded are written, failures listed in the report); 4 another run
holds the state lock; 5 state dir unusable; 130 stopped by a signal; 1 unexpected.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from types import FrameType

from pipeline import __version__
from pipeline.errors import EXIT_USAGE, ReccoBeatsError, exit_code_for

log = logging.getLogger("pipeline")

SAMPLE_INPUT = Path("data/sample/tracks.parquet")

RUN_EPILOG = """exit codes:
  0    success
  2    usage, configuration or input error (one line on stderr)
  3    some requests failed after retries; successful rows are written, failures are
       listed in <output>/runs/<run_id>.json
  4    another run holds the state dir's lock (see --lock-wait)
  5    the state dir cannot be used
  130  stopped by SIGINT/SIGTERM (state checkpointed first)
  1    unexpected error

example:
  reccobeats-etl run --input tracks.parquet --date 2026-11-23 --rate-limit 60"""


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
    if x <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {value!r}")
    return x


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
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
    parser = argparse.ArgumentParser(
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
    run.add_argument(
        "--input",
        type=Path,
        metavar="PATH",
        help="Parquet file or directory of Parquet files (env: RECCOBEATS_INPUT)",
    )
    run.add_argument(
        "--output",
        dest="output_dir",
        type=Path,
        metavar="DIR",
        help="output root (default data/output)",
    )
    run.add_argument(
        "--state-dir", type=Path, metavar="DIR", help="registry/caches dir (default data/state)"
    )
    run.add_argument(
        "--date",
        dest="run_date",
        type=_date,
        metavar="YYYY-MM-DD",
        help="partition date YYYY-MM-DD (default: today, UTC)",
    )
    run.add_argument(
        "--base-url",
        metavar="URL",
        help="API base URL (default https://api.reccobeats.com; env: RECCOBEATS_BASE_URL)",
    )
    run.add_argument(
        "--rate-limit",
        type=_positive,
        metavar="REQUESTS_PER_MIN",
        help="global sliding-window ceiling across all endpoints",
    )
    run.add_argument("--id-column", metavar="NAME", help="input column holding track IDs/URIs/URLs")
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
        help="print the plan (IDs new/known, calls per endpoint, ETA); no request",
    )
    run.add_argument(
        "--stage",
        dest="stages",
        action="append",
        choices=["resolve", "features", "recommendations", "publish"],
        help="run only these stages (repeatable; default: all)",
    )
    run.add_argument(
        "--lock-wait",
        dest="lock_wait_s",
        type=float,
        metavar="SECONDS",
        help="seconds to wait for another run's state lock (default 0: exit 4)",
    )
    _add_common(run)

    demo = sub.add_parser("demo", help="run the job on the bundled sample against the simulator")
    demo.add_argument(
        "--output", dest="output_dir", type=Path, help="where to write (default: a new temp dir)"
    )
    demo.add_argument("--input", type=Path, default=SAMPLE_INPUT, help="default: bundled sample")
    _add_common(demo)

    from pipeline.simulator import add_simulate_arguments

    sim = sub.add_parser(
        "simulate",
        help="serve the ReccoBeats simulator on 127.0.0.1",
        description="A loopback stand-in for the ReccoBeats API, with its paths, "
        "shapes, rate limits, 429 + Retry-After and missing IDs.",
    )
    add_simulate_arguments(sim)

    rep = sub.add_parser("report", help="summarise (and plot) a run report JSON")
    rep.add_argument("run_json", type=Path, help="<output>/runs/<run_id>.json")
    rep.add_argument("--plot", type=Path, help="write a PNG: requests/s vs limit, 429s, latency")
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if verbose < 2:
        logging.getLogger("urllib3").setLevel(logging.WARNING)


class _SignalStop:
    """SIGINT/SIGTERM set an event; the job checkpoints and ends its waits at once."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._old: dict[int, object] = {}

    def __enter__(self) -> threading.Event:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self.event

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        log.warning("received %s: stopping after checkpoint", signal.Signals(signum).name)
        self.event.set()

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


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
            "id_column",
            "recommendations",
            "lock_wait_s",
            "progress",
        )
    }
    settings = load_settings(overrides, config_file=args.config)
    run_date = args.run_date or datetime.now(UTC).date()
    with _SignalStop() as stop:
        report = run_job(
            settings, run_date, stages=args.stages or STAGES, dry_run=args.dry_run, cancel=stop
        )
    if args.dry_run:
        _print_plan(report.figures)
    else:
        print(report.summary(), file=sys.stderr)
    return report.exit_code


def _print_plan(fig: dict) -> None:
    ids, plan = fig["ids"], fig["plan"]
    print(
        f"plan for {fig['run_date']}: {fig['rows']['valid']} valid rows, "
        f"{fig['rows']['rejected']} rejected; {ids['distinct']} distinct IDs: "
        f"{ids['known']} known, {ids['new']} new"
    )
    for ep, n in plan["calls_at_most"].items():
        print(f"  {ep:<15} at most {n} calls")
    print(f"  ETA at the configured limits: ~{plan['eta_s']} s (no request was made)")


def _cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import run_demo

    out = args.output_dir or Path(tempfile.mkdtemp(prefix="reccobeats-demo-"))
    return run_demo(args.input, out, config_file=args.config, progress=args.progress)


def _cmd_report(args: argparse.Namespace) -> int:
    from pipeline.io.report import load_report, summary_text

    report = load_report(args.run_json)
    print(summary_text(report))
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
    _setup_logging(getattr(args, "verbose", 0), getattr(args, "quiet", False))
    handlers = {"run": _cmd_run, "demo": _cmd_demo, "report": _cmd_report}
    try:
        return handlers[args.command](args)
    except ReccoBeatsError as exc:
        print(f"reccobeats-etl: error: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        print(f"reccobeats-etl: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
