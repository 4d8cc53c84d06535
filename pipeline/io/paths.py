"""Where the job may read and write: disjoint input/output/state roots, no links inside them.

Why (issue 11, class 4 and 6):

* An output dir inside the input dir is read back as input on the next run (rows double
  every night); a state dir inside it feeds the registry's Parquet files to the reader. So
  the input and the output/state roots must not contain one another (``check_disjoint``),
  compared after resolving links, so ``./data`` and ``/abs/data`` are the same place.
* The job renames, deletes and quarantines files inside the state and output dirs. A
  symlink planted there would make it glob, rename or truncate files *outside* them (the
  lock file is opened for writing, quarantine renames what it cannot read). So the job
  refuses to start when either tree holds a symlink (``symlinks_below``); the roots
  themselves may be links (``/data -> /mnt/disk``: the user chose them).

Object-store URIs have no links and no nesting with local paths; they are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.io.storage import is_uri, local_path


def _local(location: str | Path | None) -> Path | None:
    if location is None:
        return None
    if isinstance(location, str) and is_uri(location):
        if not location.lower().startswith("file://"):
            return None  # object storage: nothing local to overlap
        location = local_path(location)
    return Path(os.path.realpath(Path(location).expanduser()))


def _contains(outer: Path, inner: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_disjoint(
    input_path: str | Path | None,
    output_dir: str | Path | None,
    state_dir: str | Path | None,
) -> None:
    """``ConfigError`` (one line) when the input and the output or state dir overlap.

    Overlap is either way round: the output inside the input dir (read back next run), the
    input inside the output or state dir (the job would read what it writes).
    """
    inp = _local(input_path)
    if inp is None:
        return
    for setting, location in (("output_dir", output_dir), ("state_dir", state_dir)):
        other = _local(location)
        if other is None:
            continue
        if _contains(inp, other) or _contains(other, inp):
            raise ConfigError(
                f"setting '{setting}': {location} overlaps the input {input_path}; "
                "the job would read its own files back as input (use separate directories)"
            )


def symlinks_below(root: str | Path) -> list[Path]:
    """Every symlink inside ``root`` (not ``root`` itself), without following any."""
    base = _local(root)
    if base is None or not base.is_dir():
        return []
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        for name in (*dirnames, *filenames):
            path = Path(dirpath) / name
            if path.is_symlink():
                found.append(path)
    return sorted(found)


def describe_links(links: list[Path], what: str) -> str:
    """The one-line refusal for ``links`` found inside the ``what`` dir."""
    first = links[0]
    try:
        target = os.readlink(first)
    except OSError:
        target = "?"
    more = f" (and {len(links) - 1} more)" if len(links) > 1 else ""
    return (
        f"{what} dir holds a symlink {first} -> {target}{more}; the job never follows links "
        f"inside its {what} dir (it renames and deletes files there): remove it"
    )
