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
    """(top-level module, runs at import time?) for every import in a file: ``import``/``from`` statements
    and ``importlib.import_module("...")``/``__import__("...")`` calls with a literal name. Anything outside a
    function body runs at import time, inside module-level ``try``/``if`` blocks and class bodies included.
    A relative import is an error (imports name their package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: list[tuple[str, bool]] = []

    def visit(node: ast.AST, at_import: bool) -> None:
        if isinstance(node, ast.Import):
            out.extend((a.name.split(".")[0], at_import) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.relative_to(ROOT)}:{node.lineno} uses a relative import"
            out.append((node.module.split(".")[0], at_import))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) and _dynamic_import(node.func):
            out.append((node.args[0].value.split(".")[0], at_import))
        inner = at_import and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, True)
    return out


def _dynamic_import(func: ast.expr) -> bool:
    """Whether a call is ``importlib.import_module``, ``import_module`` or ``__import__``."""
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name in ("import_module", "__import__")


def test_the_import_finder_sees_hidden_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import importlib\ntry:\n    import onnxruntime\nexcept ImportError:\n    pass\n"
                   "if True:\n    from ofakit import cli\nclass A:\n    import tensorrt\n"
                   "def f():\n    import openvino\n    importlib.import_module('coremltools.x')\n"
                   "mod = importlib.import_module('ofakit.ship')\n")
    global ROOT
    root, ROOT = ROOT, tmp_path
    try:
        assert _imports(src) == [("importlib", True), ("onnxruntime", True), ("ofakit", True), ("tensorrt", True),
                                 ("openvino", False), ("coremltools", False), ("ofakit", True)]
        src.write_text("from . import x\n")
        with pytest.raises(AssertionError, match="relative import"):
            _imports(src)
    finally:
        ROOT = root


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
