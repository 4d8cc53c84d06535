"""``reccobeats-etl simulate``: serve the simulator in the foreground until Ctrl-C.

``pipeline/cli.py`` wires ``add_simulate_arguments`` and ``simulate_from_args`` into its
subcommand; ``run_simulator(argv)`` (and ``python -m pipeline.simulator``) works standalone.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Sequence

from pipeline.simulator.config import SimulatorConfig
from pipeline.simulator.limits import MODELS
from pipeline.simulator.server import SimulatorServer

log = logging.getLogger("pipeline.simulator")
_D = SimulatorConfig()


def add_simulate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the simulator's flags to ``parser`` (defaults = ``SimulatorConfig`` defaults)."""
    g = parser.add_argument_group("simulator")
    g.add_argument(
        "--port",
        type=int,
        default=8765,
        help="port on 127.0.0.1, 0 = any free port (default %(default)s)",
    )
    g.add_argument(
        "--rate-limit",
        type=float,
        default=_D.rate_per_window,
        metavar="N",
        help="requests admitted per window (default %(default)s)",
    )
    g.add_argument(
        "--window",
        type=float,
        default=_D.window_s,
        metavar="S",
        help="rate window in seconds (default %(default)s)",
    )
    g.add_argument(
        "--burst",
        type=int,
        default=_D.burst,
        metavar="B",
        help="max starts in any 1 s, budget/block models; 0 = none (default %(default)s)",
    )
    g.add_argument(
        "--model", choices=MODELS, default=_D.model, help="rate-limit model (default %(default)s)"
    )
    g.add_argument(
        "--block-after",
        type=int,
        default=_D.block_after,
        metavar="K",
        help="block model: 429s within a window that trigger a block (default %(default)s)",
    )
    g.add_argument(
        "--block-seconds",
        type=float,
        default=_D.block_seconds,
        metavar="T",
        help="block model: block length (default %(default)s)",
    )
    g.add_argument(
        "--count-rejected",
        action="store_true",
        help="429'd requests use up budget too (default: they do not)",
    )
    g.add_argument(
        "--per-endpoint",
        action="store_true",
        help="apply the limit per endpoint instead of globally (default %(default)s)",
    )
    g.add_argument(
        "--latency",
        type=float,
        default=_D.latency_s,
        metavar="S",
        help="fixed latency per admitted request (default %(default)s)",
    )
    g.add_argument(
        "--latency-jitter",
        type=float,
        default=_D.latency_jitter_s,
        metavar="S",
        help="+ uniform(0, S) latency (default %(default)s)",
    )
    g.add_argument(
        "--latency-median",
        type=float,
        default=_D.latency_median_s,
        metavar="S",
        help="> 0: + lognormal service time with median S seconds (default %(default)s)",
    )
    g.add_argument(
        "--latency-sigma",
        type=float,
        default=_D.latency_sigma,
        metavar="SIGMA",
        help="sigma of ln(latency) for --latency-median (default %(default)s)",
    )
    g.add_argument(
        "--parallelism",
        type=int,
        default=_D.parallelism,
        metavar="K",
        help="work on at most K at once, the rest queue; 0 = no limit (default %(default)s)",
    )
    g.add_argument(
        "--max-concurrent",
        type=int,
        default=_D.max_concurrent,
        metavar="M",
        help="429 to a request arriving while M are in the server; 0 = off (default %(default)s)",
    )
    g.add_argument(
        "--spike-prob",
        type=float,
        default=_D.spike_probability,
        metavar="P",
        help="probability of a latency spike (default %(default)s)",
    )
    g.add_argument(
        "--spike-seconds",
        type=float,
        default=_D.spike_s,
        metavar="S",
        help="extra latency of a spike (default %(default)s)",
    )
    g.add_argument(
        "--error-rate",
        type=float,
        default=_D.error_rate,
        metavar="F",
        help="fraction of admitted requests answered 5xx (default %(default)s)",
    )
    g.add_argument(
        "--malformed-rate",
        type=float,
        default=_D.malformed_rate,
        metavar="F",
        help="fraction of 200s with a truncated JSON body (default %(default)s)",
    )
    g.add_argument(
        "--reset-rate",
        type=float,
        default=_D.reset_rate,
        metavar="F",
        help="fraction of requests whose connection is reset (default %(default)s)",
    )
    g.add_argument(
        "--max-ids",
        type=int,
        default=_D.max_ids,
        metavar="N",
        help="IDs accepted per batch call (default %(default)s)",
    )
    g.add_argument(
        "--over-max-ids",
        choices=("reject", "truncate"),
        default=_D.over_max_ids,
        help="above --max-ids: 400/4004 (reject) or keep the first N (default %(default)s)",
    )
    g.add_argument(
        "--all-unknown",
        type=int,
        choices=(200, 404),
        default=_D.all_unknown_status,
        help="status of a batch in which no ID is known (default %(default)s)",
    )
    g.add_argument(
        "--synthetic",
        type=int,
        default=_D.synthetic_tracks,
        metavar="N",
        help="add N synthetic tracks to the catalog (default %(default)s)",
    )
    g.add_argument(
        "--seed",
        type=int,
        default=_D.seed,
        help="seed of faults and synthetic tracks (default %(default)s)",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        port=args.port,
        model=args.model,
        rate_per_window=args.rate_limit,
        window_s=args.window,
        burst=args.burst,
        block_after=args.block_after,
        block_seconds=args.block_seconds,
        count_rejected=args.count_rejected,
        per_endpoint=args.per_endpoint,
        latency_s=args.latency,
        latency_jitter_s=args.latency_jitter,
        latency_median_s=args.latency_median,
        latency_sigma=args.latency_sigma,
        parallelism=args.parallelism,
        max_concurrent=args.max_concurrent,
        spike_probability=args.spike_prob,
        spike_s=args.spike_seconds,
        error_rate=args.error_rate,
        malformed_rate=args.malformed_rate,
        reset_rate=args.reset_rate,
        max_ids=args.max_ids,
        over_max_ids=args.over_max_ids,
        all_unknown_status=args.all_unknown,
        synthetic_tracks=args.synthetic,
        seed=args.seed,
    )


def simulate_from_args(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    """Serve until Ctrl-C/SIGTERM (or ``stop`` is set); returns the exit code."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = config_from_args(args)
    except ValueError as exc:
        log.error("simulate: %s", exc)
        return 2
    stop = stop or threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        return _serve(config, stop)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _serve(config: SimulatorConfig, stop: threading.Event) -> int:
    sim = SimulatorServer(config)
    try:
        sim.start()
    except OSError as exc:  # a busy port is a usage problem: one line, not a traceback
        log.error(
            "simulate: cannot listen on %s:%d: %s (another simulator running? try --port 0)",
            config.host, config.port, exc.strerror or exc,
        )  # fmt: skip
        return 2
    try:
        info = sim.info()
        log.info(
            "catalog: %d known tracks; limit: %s %g/%gs burst %d; counters at %s/__sim/counters",
            info["catalog_size"],
            config.model,
            config.rate_per_window,
            config.window_s,
            config.burst,
            sim.url,
        )
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        log.info("simulator stopping; served %d requests", sim.counters()["requests_total"])
    finally:
        sim.stop()
    return 0


def run_simulator(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="reccobeats-etl simulate",
        description="Serve the ReccoBeats SIMULATOR (not the real API) on 127.0.0.1.",
    )
    add_simulate_arguments(parser)
    return simulate_from_args(parser.parse_args(argv))


def main() -> None:
    raise SystemExit(run_simulator())
