"""reccobeats-etl: enrich Spotify track lists through the rate-limited ReccoBeats API."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_enriched"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import pipeline` (and the CLI's --help) does not pay for pandas/pyarrow.
    if name == "load_enriched":
        from pipeline.io.writer import load_enriched

        return load_enriched
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
