"""``python -m pipeline`` is the same as the ``reccobeats-etl`` command."""

import sys

from pipeline.cli import main

sys.exit(main())
