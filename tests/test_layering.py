"""Dependencies point one way: faces → orchestrator → routers → experts, store and evals.

The test reads every module's AST (imports inside functions and under TYPE_CHECKING count too: a
lazy import is still a dependency) and fails on a cross-package cycle, on a router importing the
orchestrator, and on the orchestrator's core importing one of its faces.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from conftest import REPO

PACKAGES = ("experts", "store", "evals", "routers", "orchestrator")
FACES = ("orchestrator.cli", "orchestrator.gateway", "orchestrator.client")
# What each layer may import besides itself (the layering of ARCHITECTURE.md).
ALLOWED = {
    "experts": set(),
    "store": set(),
    "evals": {"experts"},
    "routers": {"experts", "store", "evals"},
    "orchestrator": {"experts", "store", "evals", "routers"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, here: str | None = None) -> set[str]:
    """Absolute module names imported anywhere in the file (relative imports resolved against
    `here`, the file's module name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = here or module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {m for m in found if m.split(".")[0] in PACKAGES}


def project_modules() -> dict[str, set[str]]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            out[module_name(path)] = imports_of(path)
    return out


def test_every_package_imports_only_the_layers_below_it() -> None:
    bad = []
    for mod, deps in project_modules().items():
        top = mod.split(".")[0]
        for dep in deps:
            other = dep.split(".")[0]
            if other != top and other not in ALLOWED[top]:
                bad.append(f"{mod} imports {dep}")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_no_router_imports_the_orchestrator() -> None:
    offenders = sorted(f"{m} imports {d}" for m, deps in project_modules().items() if m.startswith("routers")
                       for d in deps if d.startswith("orchestrator"))
    assert offenders == []


def test_no_import_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for mod, deps in project_modules().items():
        for dep in deps:
            a, b = mod.split(".")[0], dep.split(".")[0]
            if a != b:
                graph[a].add(b)
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack, node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*stack, node])):
                return cycle
        state[node] = 2
        return None

    for pkg in PACKAGES:
        if pkg not in state:
            cycle = visit(pkg, [])
            assert cycle is None, f"package import cycle: {' -> '.join(cycle)}"


def test_the_orchestrators_core_does_not_import_its_faces() -> None:
    bad = []
    for mod, deps in project_modules().items():
        if not mod.startswith("orchestrator") or mod.startswith(FACES):
            continue
        bad += [f"{mod} imports {d}" for d in deps if d.startswith(FACES)]
    assert not bad, "\n".join(sorted(bad))


def test_the_checker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    # The AST walk must count imports inside functions and relative ones, or the tests above pass vacuously.
    path = tmp_path / "probe.py"
    path.write_text("def f():\n    from orchestrator import pipeline\n    from .sibling import x\n")
    assert imports_of(path, "routers.probe") >= {"orchestrator", "orchestrator.pipeline", "routers.sibling", "routers.sibling.x"}
