"""The bundled ReccoBeats simulator: the real API's paths, shapes, codes and limits, offline.

Used by the demo, the tests and the benchmarks. It listens on 127.0.0.1 only and marks every
response with ``X-ReccoBeats-Simulator: 1``. Modules, one job each:

* ``catalog``  -- what the fake API knows (bundled sample + optional synthetic tracks)
* ``shapes``   -- JSON bodies exactly as the real API shapes them
* ``api``      -- routing, parameter validation, answers (no HTTP)
* ``limits``   -- the three rate-limit models on an injectable clock (no HTTP)
* ``faults``   -- seeded latency / 5xx / malformed / reset injection
* ``counters`` -- what the server saw (``/__sim/counters``)
* ``core``     -- one request: count -> limit -> fault -> answer
* ``server``   -- ``SimulatorServer``: the threading HTTP server
* ``cli``      -- ``reccobeats-etl simulate``
"""

from pipeline.simulator.catalog import FEATURE_NAMES, Catalog, CatalogArtist, CatalogTrack, Features
from pipeline.simulator.cli import add_simulate_arguments, main, run_simulator, simulate_from_args
from pipeline.simulator.config import SimulatorConfig
from pipeline.simulator.limits import Decision, LimitSpec, RateLimits
from pipeline.simulator.server import SIMULATOR_HEADER, SimulatorServer

__all__ = [
    "FEATURE_NAMES",
    "SIMULATOR_HEADER",
    "Catalog",
    "CatalogArtist",
    "CatalogTrack",
    "Decision",
    "Features",
    "LimitSpec",
    "RateLimits",
    "SimulatorConfig",
    "SimulatorServer",
    "add_simulate_arguments",
    "main",
    "run_simulator",
    "simulate_from_args",
]
