"""The folder tree is the architecture: no module imports a layer above its own."""

from __future__ import annotations

import ast
from pathlib import Path

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"

#: Top-level name under pipeline/ -> its layer (docs/architecture.md, "Imports only go downward").
LAYER = {
    **dict.fromkeys(["errors", "settings", "config", "clock", "stop", "sanitize", "logs"], 0),
    "api": 1,
    "io": 2,
    "state": 3,
    "stages": 4,
    **dict.fromkeys(["orchestrator", "api_resources", "run_figures", "run_guards"], 5),
    **dict.fromkeys(["cli", "cli_parser", "demo", "resources", "__main__"], 6),
}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYER.get(parts[1]) if parts[0] == "pipeline" and len(parts) > 1 else None


def test_every_module_of_the_package_has_a_layer() -> None:
    tops = {p.stem if p.is_file() else p.name for p in PIPELINE.iterdir()}
    tops -= {"__init__", "__pycache__", "simulator", "py"}
    assert tops <= set(LAYER), sorted(tops - set(LAYER))


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = []
    for path in PIPELINE.rglob("*.py"):
        rel = path.relative_to(PIPELINE.parent).with_suffix("")
        module = ".".join(rel.parts)
        mine = _layer(module)
        if mine is None:  # the package's __init__ (the public surface) and the simulator
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                other = _layer(node.module)
                simulator = node.module.startswith("pipeline.simulator")
                if (other is not None and other > mine) or (simulator and mine < 6):
                    upward.append(f"{module} -> {node.module}")
    assert not upward, upward
