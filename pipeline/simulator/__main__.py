"""``python -m pipeline.simulator [flags]``: same as ``reccobeats-etl simulate``."""

from pipeline.simulator.cli import main

main()
