"""The public surface is what ``__all__`` says, and the entry points use nothing else.

Modelled on httpx's ``tests/test_exported_members.py``: a name added to the package without
``__all__`` (or listed but missing) fails here, so the surface changes only on purpose.
"""

from __future__ import annotations

import ast
import types
from pathlib import Path

import pipeline

ROOT = Path(__file__).resolve().parents[1]


def test_all_names_the_public_members_exactly() -> None:
    for name in pipeline.__all__:  # every listed name resolves (lazily)...
        assert getattr(pipeline, name) is not None, name
    public = {
        name
        for name, value in vars(pipeline).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    # ...and nothing public exists that is not listed (subpackages are not members).
    assert public | {"__version__"} == set(pipeline.__all__)


def test_each_export_comes_from_its_defining_module() -> None:
    from pipeline.io.writer import load_enriched
    from pipeline.orchestrator import run_job

    assert pipeline.run_job is run_job
    assert pipeline.load_enriched is load_enriched


def _pipeline_imports(path: Path) -> set[str]:
    """Every ``pipeline...`` module a file imports (also inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] == "pipeline":
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "pipeline")
    return found


def test_entry_points_import_only_the_public_surface() -> None:
    files = [*ROOT.glob("jobs/**/*.py"), *ROOT.glob("airflow_dags/*.py")]
    assert files
    for path in files:
        assert _pipeline_imports(path) <= {"pipeline"}, path
