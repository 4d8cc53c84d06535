"""Switch a published directory to its new content in ONE filesystem operation.

Why (issue 11, class 5): the partition swap used two renames (old -> ``.old-``, new ->
``date=``), so for an instant the date was absent, and a kill in that instant left it absent
(``pd.read_parquet`` saw 0 rows for the date) until the next run repaired it. Here the
switch is a single atomic step, so at every instant a reader finds the old partition or
the new one:

* Linux (>= 3.15, ext4/xfs/btrfs/tmpfs...): ``renameat2(RENAME_EXCHANGE)`` swaps the two
  directory entries atomically (through ctypes: the standard library has no binding); the
  temp dir then holds the old content and is deleted.
* Elsewhere, or where the filesystem refuses the flag (``EINVAL``/``ENOSYS``/``ENOTSUP``):
  the partition directory stays in place and each new file replaces its namesake with
  ``os.replace``, atomic on POSIX. A partition is one file (``part-0.parquet``), so the
  switch is again one rename; a file the new content no longer has is deleted after it.

A first publish of a date is one ``os.rename`` of the temp dir (absent -> whole). Whatever a
kill leaves is a hidden ``.tmp-`` dir that ``publish_local.recover_stale`` removes.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import sys
from pathlib import Path

from pipeline.io.atomic import fsync_dir

log = logging.getLogger(__name__)

RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV}


def _load_renameat2() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.renameat2  # glibc >= 2.28, musl >= 1.2.5
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_renameat2 = _load_renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap the entries ``a`` and ``b`` (both must exist); False if unsupported.

    Raises ``OSError`` for real failures (permissions, missing paths).
    """
    if _renameat2 is None:
        return False
    result = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)  # type: ignore[operator]
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def swap_in(new: Path, final: Path) -> None:
    """Make directory ``new`` the content of ``final`` in one atomic step; ``new`` is gone
    afterwards (it held the old content, deleted)."""
    if not final.exists():
        os.rename(new, final)
    elif exchange(new, final):
        fsync_dir(final.parent)
        shutil.rmtree(new, ignore_errors=True)  # the old partition, no longer published
        return
    else:
        _replace_files(new, final)
    fsync_dir(final.parent)


def _replace_files(new: Path, final: Path) -> None:
    """Fallback: replace ``final``'s files one ``os.replace`` each (one for a partition)."""
    names = sorted(p.name for p in new.iterdir())
    # A manifest (``_manifest.json``) describes its data file: the old one goes first and
    # the new one comes last, so a reader never sees a manifest with the other data.
    markers = [n for n in names if n.startswith("_")]
    for name in markers:
        (final / name).unlink(missing_ok=True)
    for name in [n for n in names if not n.startswith("_")] + markers:
        os.replace(new / name, final / name)
    keep = set(names)
    for old in final.iterdir():
        if old.name not in keep and not old.is_dir():
            old.unlink(missing_ok=True)  # a file of the old content only
    fsync_dir(final)
    new.rmdir()
