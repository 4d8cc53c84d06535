"""The bundled ReccoBeats simulator: the real API's paths, shapes, codes and limits, offline.

Used by the demo, the tests and the benchmarks. It listens on 127.0.0.1 only and marks every
response with ``X-ReccoBeats-Simulator: 1``. Modules, one job each:

* ``entities``       -- the records: track, artist, audio features
* ``catalog_loader`` -- the rows: bundled sample + optional seeded synthetic tracks
* ``catalog``        -- what the fake API knows: the index over those rows
* ``recommender``    -- nearest neighbours in feature space (the recommendation endpoint)
* ``shapes``         -- JSON bodies exactly as the real API shapes them
* ``api``            -- routing, parameter validation, answers (no HTTP)
* ``limits``         -- the three rate-limit models on an injectable clock (no HTTP)
* ``capacity``       -- K requests worked on at once (the rest queue), 429 above M concurrent
* ``faults``         -- seeded latency (fixed, uniform, lognormal) / 5xx / malformed / resets
* ``counters``       -- what the server saw, latency and queue wait (``/__sim/counters``)
* ``core``           -- one request: count -> limit -> capacity -> fault -> answer -> serve
* ``server``         -- ``SimulatorServer``: the threading HTTP server
* ``cli``            -- ``reccobeats-etl simulate``
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
