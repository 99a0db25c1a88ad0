"""Project layout rules: imports flow one way (ofakit -> profilers -> deploy_targets -> elastic,
model_zoo -> elastic); elastic imports none of our packages; no package imports ofakit; heavy SDKs are
imported only inside the code that needs them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"elastic", "profilers", "deploy_targets", "model_zoo", "ofakit"}
ALLOWED = {
    "elastic": set(),
    "model_zoo": {"elastic"},
    "deploy_targets": {"elastic"},
    "profilers": {"deploy_targets", "elastic"},
    "ofakit": {"profilers", "deploy_targets", "model_zoo", "elastic"},
    # tests and benchmarks are not packages: they exercise every package, ofakit's search included
    "tests": OURS,
    "benchmarks": OURS,
}
HEAVY = {"tensorrt", "coremltools", "onnxruntime", "openvino", "onnx", "ofa"}


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(top-level module, imported at module level?) for every import in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name.split(".")[0], id(node) in top_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module.split(".")[0], id(node) in top_level))
    return out


FILES = sorted(p for pkg in ALLOWED for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_import_direction(path):
    pkg = path.relative_to(ROOT).parts[0]
    for mod, _ in _imports(path):
        if mod in OURS and mod != pkg:
            assert mod in ALLOWED[pkg], f"{path.relative_to(ROOT)} imports {mod}; {pkg} may import {ALLOWED[pkg]}"


@pytest.mark.parametrize("path", [p for p in FILES if p.parts[-2] not in ("tests", "benchmarks")],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_heavy_sdks_are_imported_lazily(path):
    for mod, module_level in _imports(path):
        assert not (mod in HEAVY and module_level), f"{path.relative_to(ROOT)} imports {mod} at module level"
