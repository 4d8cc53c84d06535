"""Files the wheel carries so ``pip install`` alone is enough for every README recipe.

Why here: an installed package has no repository around it, so the demo's sample input, the
cron wrapper and the Airflow DAG have to be package data. The files in this directory are
symlinks to the repository's own copies (``data/sample/tracks.parquet``,
``jobs/cron/run_nightly.sh``, ``jobs/cron/crontab.example``,
``airflow_dags/reccobeats_enrichment.py``): one source in git, real files in the wheel
(setuptools copies a symlink's target). Read them with ``importlib.resources``::

    from importlib.resources import files
    files("pipeline.resources") / "sample_tracks.parquet"

or put them where they are needed with ``reccobeats-etl airflow-dag PATH`` and
``reccobeats-etl cron-wrapper PATH`` (``install_resource``).
"""

from __future__ import annotations

import os
import shutil
import sys
from importlib.resources import as_file, files
from pathlib import Path

SAMPLE_INPUT = "sample_tracks.parquet"
CRON_WRAPPER = "run_nightly.sh"
CRONTAB_EXAMPLE = "crontab.example"
AIRFLOW_DAG = "reccobeats_enrichment.py"
RESOURCES = (SAMPLE_INPUT, CRON_WRAPPER, CRONTAB_EXAMPLE, AIRFLOW_DAG)

#: The line of the cron wrapper that ``cron-wrapper`` fills in with this interpreter, so the
#: copied wrapper runs the job of the installation that wrote it.
_PYTHON_LINE = 'installed_python=""'


def resource_text(name: str) -> str:
    return (files(__name__) / name).read_text(encoding="utf-8")


def sample_input_path() -> Path:
    """A filesystem path of the bundled sample input (the demo's default)."""
    with as_file(files(__name__) / SAMPLE_INPUT) as path:
        return Path(path)


def install_resource(name: str, dest: Path | str) -> Path:
    """Copy resource ``name`` to ``dest`` (a file, or a directory to put it in: an existing
    one, or a path ending in ``/``, created).

    The cron wrapper is made executable and told which interpreter to run the job with
    (this one, ``sys.executable``). Refuses to overwrite an existing file: a user's edited
    copy must not vanish (``FileExistsError``).
    """
    if name not in RESOURCES:
        raise ValueError(f"unknown resource {name!r}; known: {RESOURCES}")
    as_dir = str(dest).endswith(("/", os.sep)) or Path(dest).is_dir()
    target = Path(dest) / name if as_dir else Path(dest)
    if target.exists():
        raise FileExistsError(f"{target} exists; remove it first or name another path")
    target.parent.mkdir(parents=True, exist_ok=True)
    if name == CRON_WRAPPER:
        text = resource_text(name)
        if _PYTHON_LINE not in text:  # pragma: no cover - guards the wrapper's edit
            raise RuntimeError(f"{name} lost its {_PYTHON_LINE!r} line")
        target.write_text(text.replace(_PYTHON_LINE, f'installed_python="{sys.executable}"'))
        target.chmod(0o755)
    else:
        with as_file(files(__name__) / name) as src:
            shutil.copyfile(src, target)
    return target
