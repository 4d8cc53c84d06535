"""``Storage``: one root location for state or outputs, a local dir or an object-store prefix.

Why one small interface: the state layer (journal, checkpoints, learned rate, lock) and the
output layer need the same handful of operations (read a whole file, replace a file
atomically, list a directory, delete), and object stores have no rename, no directories
and no file locks. Each caller says *what* it needs; this module decides *how* on each
kind of root:

* ``LocalStorage`` (plain paths and ``file://`` URIs) does exactly what the package did
  before object storage existed: temp file + fsync + rename (``io.atomic``), globbing,
  ``os.replace`` for quarantine. Local behaviour is unchanged by design.
* ``ObjectStorage`` (``s3://``, ``gs://``/``gcs://``, ``abfs://``/``az://``) goes through
  fsspec (s3fs, gcsfs, adlfs are optional extras). A single PUT is atomic on these stores
  (readers see the old object or the new one), which is what "atomic replace" needs;
  conditional puts (``If-None-Match``/``If-Match``) back the lease lock
  (``state/lease.py``). See ``object_store.py``.

Every root counts its operations (``OpCounts``: list/get/put/delete/head), so the run
report can show what state and publishing cost on a bucket.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.io.atomic import atomic_write_bytes, fsync_dir

#: URI schemes served by an object store through fsspec, and the extra that provides each.
OBJECT_SCHEMES = {"s3": "s3", "gs": "gcs", "gcs": "gcs", "abfs": "azure", "az": "azure"}
_URI = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)", re.DOTALL)
KINDS = ("list", "get", "put", "delete", "head")


class OpCounts:
    """Thread-safe counts of storage operations, by kind and by backend operation name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kinds: Counter[str] = Counter()
        self._operations: Counter[str] = Counter()

    def add(self, kind: str, operation: str | None = None, n: int = 1) -> None:
        with self._lock:
            self._kinds[kind] += n
            self._operations[operation or kind] += n

    def snapshot(self) -> dict[str, Any]:
        """``{"list": n, "get": n, "put": n, "delete": n, "head": n, "total": n,
        "by_operation": {...}}`` for the run report."""
        with self._lock:
            out: dict[str, Any] = {k: self._kinds.get(k, 0) for k in KINDS}
            out["total"] = sum(self._kinds.values())
            out["by_operation"] = dict(sorted(self._operations.items()))
        return out


def is_uri(location: str | Path) -> bool:
    """True for ``scheme://...`` strings (``file://`` included)."""
    return isinstance(location, str) and _URI.match(location) is not None


def is_object_store(location: str | Path | Storage) -> bool:
    """True when ``location`` names an object-store prefix (not a local path)."""
    if isinstance(location, Storage):
        return location.remote
    match = _URI.match(location) if isinstance(location, str) else None
    return match is not None and match["scheme"].lower() in OBJECT_SCHEMES


def local_path(location: str | Path) -> Path:
    """``location`` as a local path (``file://`` URIs unwrapped); ValueError for others."""
    if isinstance(location, Path):
        return location
    match = _URI.match(location)
    if match is None:
        return Path(location)
    if match["scheme"].lower() != "file":
        raise ValueError(f"{location} is not a local path")
    rest = match["rest"]
    return Path(rest if rest.startswith("/") else "/" + rest.split("/", 1)[-1])


def open_storage(
    location: str | Path | Storage,
    *,
    s3_endpoint_url: str | None = None,
    counts: OpCounts | None = None,
) -> Storage:
    """The ``Storage`` for ``location``: a local dir, ``file://`` URI or object-store URI.

    ``s3_endpoint_url`` (setting ``s3_endpoint_url``) overrides ``AWS_ENDPOINT_URL_S3`` /
    ``AWS_ENDPOINT_URL``, the variables other S3 tools honour. Credentials are never
    passed here: each backend finds them the usual way (environment, profile, role).
    """
    if isinstance(location, Storage):
        return location
    if is_object_store(location):
        from pipeline.io.object_store import ObjectStorage

        return ObjectStorage.open(str(location), s3_endpoint_url=s3_endpoint_url, counts=counts)
    if is_uri(location) and not str(location).lower().startswith("file://"):
        scheme = str(location).split("://", 1)[0]
        known = ", ".join(sorted({*OBJECT_SCHEMES, "file"}))
        raise ValueError(f"unsupported storage scheme {scheme!r} in {location} (known: {known})")
    return LocalStorage(local_path(location), counts or OpCounts())


class Storage:
    """A root location; paths given to the methods are relative, ``/``-separated."""

    remote: bool = False
    counts: OpCounts

    def uri(self, rel: str = "") -> str:
        """What to show a user (and to hand pandas) for ``rel``."""
        raise NotImplementedError

    def storage_options(self) -> dict[str, Any]:
        """``storage_options`` for ``pd.read_parquet`` on this root (no credentials)."""
        return {}

    def read_bytes(self, rel: str) -> bytes:
        """The whole file; ``FileNotFoundError`` if there is none."""
        raise NotImplementedError

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Replace ``rel`` atomically: a reader sees the old content or ``data``."""
        raise NotImplementedError

    def exists(self, rel: str) -> bool:
        raise NotImplementedError

    def list_files(self, rel: str = "") -> list[str]:
        """Names (not paths) of the files directly in ``rel``, sorted; [] if none."""
        raise NotImplementedError

    def list_dirs(self, rel: str = "") -> list[str]:
        """Names of the sub-directories (common prefixes) of ``rel``, sorted."""
        raise NotImplementedError

    def find(self, rel: str = "") -> list[str]:
        """Every file below ``rel``, as paths relative to ``rel``, sorted."""
        raise NotImplementedError

    def is_file(self, rel: str) -> bool:
        raise NotImplementedError

    def delete(self, rels: list[str]) -> None:
        """Delete the files ``rels`` (missing ones are fine)."""
        raise NotImplementedError

    def move(self, src: str, dst: str) -> None:
        """Move ``src`` to ``dst`` (quarantine); atomic on local disks only."""
        raise NotImplementedError


class LocalStorage(Storage):
    """A directory on a local (or mounted) filesystem: what the package always did."""

    def __init__(self, root: Path, counts: OpCounts) -> None:
        self.root = Path(root)
        self.counts = counts

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def path(self, rel: str = "") -> Path:
        return self.root / rel if rel else self.root

    def uri(self, rel: str = "") -> str:
        return str(self.path(rel))

    def read_bytes(self, rel: str) -> bytes:
        return self.path(rel).read_bytes()

    def write_bytes(self, rel: str, data: bytes) -> None:
        atomic_write_bytes(data, self.path(rel))

    def exists(self, rel: str) -> bool:
        return self.path(rel).exists()

    def list_files(self, rel: str = "") -> list[str]:
        d = self.path(rel)
        return sorted(p.name for p in d.iterdir() if p.is_file()) if d.is_dir() else []

    def list_dirs(self, rel: str = "") -> list[str]:
        d = self.path(rel)
        return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []

    def find(self, rel: str = "") -> list[str]:
        d = self.path(rel)
        return sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())

    def is_file(self, rel: str) -> bool:
        return self.path(rel).is_file()

    def delete(self, rels: list[str]) -> None:
        for rel in rels:
            target = self.path(rel)
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)

    def move(self, src: str, dst: str) -> None:
        os.replace(self.path(src), self.path(dst))
        fsync_dir(self.path(dst).parent)


class RunStorage:
    """The three roots of one run (input, output, state), each with its own op counts.

    Opened once per run so every component shares one fsspec filesystem per root and the
    run report can say what state and publishing cost on object storage.
    """

    def __init__(self, input: Storage | Path | None, output: Storage, state: Storage) -> None:
        self.input = input
        self.output = output
        self.state = state

    @classmethod
    def open(
        cls,
        input: Path | str | None,
        output: Path | str,
        state: Path | str,
        *,
        s3_endpoint_url: str | None = None,
    ) -> RunStorage:
        def root(location: Path | str) -> Storage:
            return open_storage(location, s3_endpoint_url=s3_endpoint_url)

        source: Storage | Path | None = None
        if input is not None:
            source = root(input) if is_object_store(input) else local_path(input)
        return cls(source, root(output), root(state))

    def object_store_ops(self) -> dict[str, dict[str, Any]] | None:
        """Operation counts per object-store root (``None`` when every root is local)."""
        roots = {"state": self.state, "output": self.output}
        if isinstance(self.input, Storage):
            roots["input"] = self.input
        ops = {name: store.counts.snapshot() for name, store in roots.items() if store.remote}
        return ops or None
