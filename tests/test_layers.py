"""The house rules, checked on the source: layers look down only, no circles, small modules.

kernels/ imports nothing of ours; results/ imports neither bench/ nor reports/; bench/ never
imports reports/; reports/ reads rows only, so it imports neither bench/ nor torch; cli.py sits
above every part. No module loads one of ours through importlib, and none is over 450 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kernels", "results", "bench", "reports")
OURS = (*PACKAGES, "cli")
# what each top-level part must never import (of ours, plus torch for the reports)
FORBIDDEN = {
    "kernels": {"results", "bench", "reports", "cli"},
    "results": {"bench", "reports", "cli", "kernels"},
    "bench": {"reports", "cli"},
    "reports": {"bench", "cli", "kernels", "torch", "triton"},
}
MAX_LINES = 450


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = path
    out["cli"] = ROOT / "cli.py"
    return out


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module imported, line, at module level) for every import statement in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, node.lineno, id(node) in top))
            out += [(f"{node.module}.{a.name}", node.lineno, id(node) in top)
                    for a in node.names]
    return out


MODULES = modules()


@pytest.mark.parametrize("name", sorted(MODULES))
def test_layers_look_down_only(name):
    part = name.split(".")[0]
    bad = sorted({(mod, line) for mod, line, _ in imports(MODULES[name])
                  if mod.split(".")[0] in FORBIDDEN.get(part, set())})
    assert not bad, f"{name} imports what its layer must not: {bad}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_importlib_loading_of_our_modules(name):
    text = MODULES[name].read_text(encoding="utf-8")
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "import_module"):
            arg = node.args[0] if node.args else None
            literal = isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            assert literal and arg.value.split(".")[0] not in OURS, (
                f"{name}:{node.lineno} loads a module through importlib")


def test_no_circles_between_modules():
    """Module-level imports between our modules form no cycle (function-local ones are lazy)."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        deps = set()
        for mod, _, at_top in imports(path):
            if at_top and mod in MODULES and mod != name:
                deps.add(mod)
        graph[name] = deps
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name):
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (at most {MAX_LINES})"
