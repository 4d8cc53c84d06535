"""The run report's versioned schema, and the check ``reccobeats-etl report`` runs first.

Why: ``report`` used to trust its input: a CSV gave a ``JSONDecodeError`` traceback and
``{"a": 1}`` printed ``run None ... status=None`` with exit 0 and still drew a plot. Every
report now carries ``schema_version``; a file is accepted when it is a JSON object with the
fields every version has (``run_id``, ``run_date``, ``status``, ``exit_code``) of the right
types and a version this code knows. Reports written before versioning (no
``schema_version``, version 0) are read as before when those fields are there. Anything else
is one ``InputError`` line naming the file and what is wrong (exit 2).

Versions: 1 (this one) adds ``schema_version`` and the statuses ``interrupted`` and
``nothing_fetched``; its ``outputs`` may hold ``kept`` (partitions a run did not replace).
Bump ``SCHEMA_VERSION`` when a field changes meaning or goes away; adding fields does not.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.errors import InputError

SCHEMA_VERSION = 1

RunStatus = Literal[
    "ok", "partial", "budget_reached", "dry_run", "interrupted", "nothing_fetched", "write_failed"
]


class RunReportHeader(BaseModel):
    """The fields every run report version has; the rest is version-specific and kept."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=False)

    schema_version: int = 0
    run_id: str
    run_date: date
    status: RunStatus
    exit_code: int


def validate_report(data: Any, source: str = "report") -> dict[str, Any]:
    """``data`` if it is a run report this code can read, else ``InputError`` (one line)."""
    if not isinstance(data, dict):
        raise InputError(
            f"{source} is not a run report: expected a JSON object, got {type(data).__name__}"
        )
    try:
        header = RunReportHeader.model_validate(data)
    except ValidationError as exc:
        missing = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "missing"]
        if missing:
            raise InputError(
                f"{source} is not a run report: missing {', '.join(missing)}"
            ) from None
        first = exc.errors()[0]
        raise InputError(
            f"{source} is not a valid run report: field {first['loc'][0]!r}: {first['msg']}"
        ) from None
    if header.schema_version > SCHEMA_VERSION:
        raise InputError(
            f"{source} has run report schema_version {header.schema_version}; this "
            f"reccobeats-etl reads up to {SCHEMA_VERSION} (upgrade the package)"
        )
    return data


def load_report(path: Path) -> dict[str, Any]:
    """Read and validate ``<output>/runs/<run_id>.json``; ``InputError`` when it is not one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a run report: not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not a run report: not JSON ({exc})") from None
    return validate_report(data, str(path))
