"""The import graph of nf_core and orchestration: no circle, and every import goes down the layers.

Built with `ast` from the source (no import runs): module-level imports and those inside functions,
relative imports resolved, ``if TYPE_CHECKING:`` blocks included. The layers are the ones
docs/architecture.md draws; a module may import its own sub-package and any lower layer.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nf_core", "orchestration")

# Lowest first. Sub-packages on one line are siblings: neither may import the other.
LAYERS: list[tuple[str, ...]] = [
    ("nf_core",),
    ("orchestration.errors", "orchestration.tables"),  # shared by every layer above
    ("orchestration.store",),
    ("orchestration.spec",),
    ("orchestration.tracking", "orchestration.cluster"),
    ("orchestration.sweep",),
    ("orchestration.report",),
    ("orchestration.commands",),
    ("orchestration.cli", "orchestration"),  # the entry point and the package's own __init__
]
EXACT = {"orchestration"}  # the package's __init__ only: a new top-level module must be placed in a layer


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name → (file, is a package __init__)."""
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def _targets(node: ast.Import | ast.ImportFrom, mod: str, is_pkg: bool, known: set[str]) -> list[str]:
    """The package modules one import statement loads (its parents' __init__ aside)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:  # relative: resolved against this module's package
            base = mod.split(".") if is_pkg else mod.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        # `from pkg import sub` loads pkg.sub when it is a module, else a name of pkg itself
        names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]
    out = []
    for name in names:
        parts = name.split(".")
        for i in range(len(parts), 0, -1):  # the longest known module: `import a.b.c` as a.b.c
            if ".".join(parts[:i]) in known:
                out.append(".".join(parts[:i]))
                break
    return out


def import_graph() -> dict[str, dict[str, int]]:
    """module → {imported module: line of the first such import}."""
    mods = _modules()
    known = set(mods)
    graph: dict[str, dict[str, int]] = {m: {} for m in mods}
    for mod, (path, is_pkg) in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for t in _targets(node, mod, is_pkg, known):
                    if t != mod:
                        graph[mod].setdefault(t, node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(graph[w])))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def layer_of(mod: str) -> tuple[int, str]:
    """(layer index, sub-package) of a module: the longest declared prefix wins."""
    best: tuple[int, str] | None = None
    for i, group in enumerate(LAYERS):
        for unit in group:
            inside = mod == unit or (unit not in EXACT and mod.startswith(unit + "."))
            if inside and (best is None or len(unit) > len(best[1])):
                best = (i, unit)
    if best is None:
        raise AssertionError(f"{mod} is in no layer: add it to LAYERS in {__file__} and to docs/architecture.md")
    return best


def test_graph_sees_imports_inside_functions_and_relative_ones(tmp_path: Path) -> None:
    """The parser itself: a function-level import and a relative one both count."""
    tree = ast.parse("def f():\n    from orchestration.sweep import runner\nfrom . import roots\n")
    known = {"orchestration.sweep.runner", "orchestration.store.roots", "orchestration.store.storage"}
    found = [
        t
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom)
        for t in _targets(n, "orchestration.store.storage", False, known)
    ]
    assert sorted(found) == ["orchestration.store.roots", "orchestration.sweep.runner"]
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]


def test_no_import_cycle() -> None:
    graph = import_graph()
    found = cycles(graph)
    lines = []
    for comp in found:
        lines.append("cycle: " + " ".join(comp))
        lines += [f"  {a} -> {b} (line {graph[a][b]})" for a in comp for b in graph[a] if b in comp]
    assert not found, "\n".join(lines)


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_go_down_the_layers(package: str) -> None:
    graph = import_graph()
    wrong = []
    for mod, deps in graph.items():
        if not (mod == package or mod.startswith(package + ".")):
            continue
        here, unit = layer_of(mod)
        for dep, line in deps.items():
            there, dep_unit = layer_of(dep)
            if dep_unit == unit or mod.startswith(dep_unit + ".") and dep == dep_unit:
                continue  # within one sub-package (or a module reading its package's __init__)
            if there >= here:
                wrong.append(f"{mod} -> {dep} (line {line}): layer {LAYERS[here]} may not import {LAYERS[there]}")
    assert not wrong, "\n".join(wrong)


def test_every_module_is_in_a_layer() -> None:
    for mod in import_graph():
        layer_of(mod)


def test_every_test_file_has_its_concern_in_conftest() -> None:
    """tests/conftest.py's docstring maps every test file to its concern: a new file names its place."""
    tests = Path(__file__).resolve().parent
    doc = (tests / "conftest.py").read_text().split('"""')[1]
    listed = set(re.findall(r"\btest_\w+", doc))
    assert {p.stem for p in tests.glob("test_*.py")} <= listed
