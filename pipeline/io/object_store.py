"""``ObjectStorage``: a prefix in S3, GCS or Azure Blob storage, through fsspec.

Why these choices:

* fsspec (s3fs / gcsfs / adlfs) is what pandas and pyarrow users already hand their
  ``storage_options`` to, so the pipeline and its readers share one code path and one way
  to find credentials (environment, profile, instance role); none is ever logged here.
* One file = one object written with one PUT. Object stores publish a PUT atomically (a
  reader gets the old object or the new one, never part of one), which is all "replace a
  file atomically" needs; there is no rename to imitate.
* Each instance gets its own fsspec filesystem (``skip_instance_cache``) with listings
  caching off: the journal must see entries another process wrote a second ago, and a run's
  operation counts must be its own.
* On S3 the counts come from botocore's ``before-call`` event, i.e. every real request
  (``GetObject``, ``PutObject``, ``ListObjectsV2``, ``DeleteObjects``, ``HeadObject``,
  ``CopyObject``...); other backends count at this module's calls.
* ``create_exclusive`` / ``replace_if_match`` are conditional puts (S3 ``If-None-Match: *``
  and ``If-Match: <etag>``), the primitive of the lease lock. They are S3 only for now.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from pipeline.errors import ConfigError
from pipeline.io.storage import _URI, OBJECT_SCHEMES, OpCounts, Storage

#: botocore operation -> the kind the run report counts.
_S3_KIND = {
    "GetObject": "get",
    "PutObject": "put",
    "CopyObject": "put",
    "CreateMultipartUpload": "put",
    "UploadPart": "put",
    "CompleteMultipartUpload": "put",
    "ListObjectsV2": "list",
    "ListObjects": "list",
    "DeleteObject": "delete",
    "DeleteObjects": "delete",
    "HeadObject": "head",
    "HeadBucket": "head",
}


def s3_endpoint(configured: str | None) -> str | None:
    """The S3 endpoint: the setting, else ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``."""
    return (
        configured
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or None
    )


class ObjectStorage(Storage):
    """The prefix ``<scheme>://<bucket>/<key prefix>`` of an object store."""

    remote = True

    def __init__(
        self, fs: Any, scheme: str, root: str, options: dict[str, Any], counts: OpCounts
    ) -> None:
        self.fs = fs
        self.scheme = scheme
        self.root = root.strip("/")
        self._options = options
        self.counts = counts
        self.is_s3 = scheme == "s3"

    @classmethod
    def open(
        cls, uri: str, *, s3_endpoint_url: str | None = None, counts: OpCounts | None = None
    ) -> ObjectStorage:
        match = _URI.match(uri)
        if match is None or match["scheme"].lower() not in OBJECT_SCHEMES:
            raise ValueError(f"{uri} is not an object-store URI")
        scheme, root = match["scheme"].lower(), match["rest"]
        if not root.strip("/"):
            raise ConfigError(f"{uri}: name a bucket (and optionally a prefix)")
        options: dict[str, Any] = {}
        if scheme == "s3":
            endpoint = s3_endpoint(s3_endpoint_url)
            if endpoint:
                options["endpoint_url"] = endpoint
        counts = counts or OpCounts()
        fs = _filesystem(scheme, options)
        store = cls(fs, scheme, root, options, counts)
        if store.is_s3:
            _count_s3_requests(fs, counts)
        return store

    def __repr__(self) -> str:
        return f"ObjectStorage({self.uri()!r})"

    # -- naming ----------------------------------------------------------------------------

    def key(self, rel: str = "") -> str:
        """The fsspec path (``bucket/prefix/rel``) of ``rel``."""
        rel = rel.strip("/")
        return f"{self.root}/{rel}" if rel else self.root

    def uri(self, rel: str = "") -> str:
        return f"{self.scheme}://{self.key(rel)}"

    def storage_options(self) -> dict[str, Any]:
        return dict(self._options)

    # -- operations ------------------------------------------------------------------------

    def read_bytes(self, rel: str) -> bytes:
        self._count("get")
        data = self.fs.cat_file(self.key(rel))
        return bytes(data)

    def write_bytes(self, rel: str, data: bytes) -> None:
        self._count("put")
        self.fs.pipe_file(self.key(rel), data)

    def read_with_etag(self, rel: str) -> tuple[bytes, str] | None:
        """``(content, etag)`` of ``rel`` (HEAD + GET), or ``None`` if there is none.

        The ETag is read first: if the object changes in between, a later
        ``replace_if_match`` with it fails, which is the safe direction.
        """
        self._count("head")
        try:
            info = self.fs.info(self.key(rel))
        except FileNotFoundError:
            return None
        try:
            data = self.read_bytes(rel)
        except FileNotFoundError:
            return None
        return data, str(info.get("ETag", ""))

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Write ``rel`` only if it does not exist (``If-None-Match: *``); False if it does."""
        return self._conditional_put(
            "a conditional create", rel, data, (FileExistsError,), IfNoneMatch="*"
        )

    def replace_if_match(self, rel: str, data: bytes, etag: str) -> bool:
        """Replace ``rel`` only if its ETag is still ``etag``; False if it changed."""
        lost = (FileExistsError, FileNotFoundError)  # changed, or deleted meanwhile
        return self._conditional_put("a conditional replace", rel, data, lost, IfMatch=etag)

    def _conditional_put(
        self,
        what: str,
        rel: str,
        data: bytes,
        refused: tuple[type[OSError], ...],
        **condition: str,
    ) -> bool:
        """One PUT with an S3 precondition; False when the store says it does not hold."""
        self._require_s3(what)
        try:
            self.fs.pipe_file(self.key(rel), data, **condition)
        except refused:
            return False
        except OSError as exc:
            if _precondition_failed(exc):
                return False
            raise
        return True

    def exists(self, rel: str) -> bool:
        self._count("head")
        return bool(self.fs.exists(self.key(rel)))

    def is_file(self, rel: str) -> bool:
        self._count("head")
        return bool(self.fs.isfile(self.key(rel)))

    def list_files(self, rel: str = "") -> list[str]:
        # One ListObjectsV2 without a delimiter: ``ls`` of a missing prefix costs a second
        # request to prove it missing, and the state's prefixes are flat anyway.
        return sorted(p for p in self.find(rel) if "/" not in p)

    def list_dirs(self, rel: str = "") -> list[str]:
        return sorted(name for name, kind in self._ls(rel) if kind == "directory")

    def find(self, rel: str = "") -> list[str]:
        self._count("list")
        base = self.key(rel)
        found = self._s3_keys(base) if self.is_s3 else self.fs.find(base)
        return sorted(p[len(base) :].lstrip("/") for p in found if p != base)

    def _s3_keys(self, base: str) -> list[str]:
        """Every key below ``base``: ListObjectsV2 pages only (s3fs' ``find`` adds a HEAD and
        a second LIST to tell an empty prefix from a missing file)."""
        bucket, _, prefix = base.partition("/")
        keys: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": f"{prefix}/" if prefix else ""}
        while True:
            page = self.fs.call_s3("list_objects_v2", **kwargs)
            keys += [f"{bucket}/{obj['Key']}" for obj in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return keys
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def delete(self, rels: list[str]) -> None:
        if not rels:
            return
        self._count("delete")
        with contextlib.suppress(FileNotFoundError):  # already gone: deleting is idempotent
            self.fs.rm([self.key(r) for r in rels])

    def move(self, src: str, dst: str) -> None:
        self._count("put")
        self.fs.copy(self.key(src), self.key(dst))
        self.delete([src])

    # -- internals -------------------------------------------------------------------------

    def _ls(self, rel: str) -> list[tuple[str, str]]:
        self._count("list")
        try:
            entries = self.fs.ls(self.key(rel), detail=True)
        except FileNotFoundError:
            return []
        base = self.key(rel)
        out = []
        for entry in entries:
            name = str(entry["name"]).rstrip("/")
            if name == base:
                continue
            out.append((name.rsplit("/", 1)[-1], str(entry.get("type", "file"))))
        return out

    def _count(self, kind: str) -> None:
        if not self.is_s3:  # S3 counts real requests through botocore's events
            self.counts.add(kind)

    def _require_s3(self, what: str) -> None:
        if not self.is_s3:
            raise ConfigError(
                f"{self.uri()}: {what} is implemented for s3:// only; keep the state dir on "
                "S3 (or a local/shared disk) for now"
            )


def _filesystem(scheme: str, options: dict[str, Any]) -> Any:
    try:
        import fsspec

        extra: dict[str, Any] = {"use_listings_cache": False, "skip_instance_cache": True}
        if scheme == "s3":
            extra["max_concurrency"] = 1  # one GET per read, not HEAD + ranged GETs
        return fsspec.filesystem(scheme, **options, **extra)
    except ImportError as exc:
        extra_name = OBJECT_SCHEMES[scheme]
        raise ConfigError(
            f"{scheme}:// needs the optional extra: pip install 'reccobeats-etl[{extra_name}]' "
            f"({exc})"
        ) from None


def _count_s3_requests(fs: Any, counts: OpCounts) -> None:
    """Count every S3 request this filesystem makes, by its botocore operation name."""

    def before_call(model: Any, **_: Any) -> None:
        counts.add(_S3_KIND.get(model.name, "other"), model.name)

    fs.connect()
    fs.s3.meta.events.register("before-call.s3", before_call)


def _precondition_failed(exc: OSError) -> bool:
    text = str(exc).lower()
    return "precondition" in text or "412" in text
