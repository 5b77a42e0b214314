"""The house rules of the package's import graph (STYLE.md, DESIGN.md §2), checked on the source so
that they stay true:

1. no import cycle, neither between modules nor between rooms (the top-level modules and packages
   under ``pinngs``: data flows one way);
2. no product module imports the simulator (``pinngs.simulate``), which must stay independent of
   what it checks (no inverse crime, no ground truth leaking into the product); the command line,
   which offers ``pinngs simulate``, is the one exception;
3. no module imports another room's ``_private`` name.

Every ``import``/``from ... import`` statement counts, including those inside functions.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "pinngs"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(importer: str, is_pkg: bool, level: int, module: str | None) -> str:
    if level == 0:
        return module or ""
    base = importer.split(".") if is_pkg else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _imports(mods: dict[str, Path]) -> list[tuple[str, str, str]]:
    """(importer, imported module, imported name or '') for every pinngs import in the package."""
    out = []
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out += [(name, a.name, "") for a in node.names if a.name.startswith("pinngs")]
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(name, is_pkg, node.level, node.module)
                if not target.startswith("pinngs"):
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    out.append((name, sub, "") if sub in mods else (name, target, a.name))
    return out


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "pinngs"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def graph():
    mods = _modules()
    return mods, _imports(mods)


def test_the_walker_sees_the_package(graph):
    mods, imps = graph
    # a walker that found nothing would pass every rule below: make sure it reads the real package
    assert {"pinngs.flow.estimate", "pinngs.fit.online", "pinngs.reconstruct", "pinngs.simulate.pipeline"} <= set(mods)
    assert ("pinngs.reconstruct", "pinngs.flow.estimate", "estimate_flow") in imps
    assert ("pinngs.fit.online", "pinngs.flow.estimate", "LumenFlow") in imps


def test_no_import_cycle_between_modules(graph):
    mods, imps = graph
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for a, b, _ in imps:
        # a package's __init__ re-exporting its own submodules is not a cycle of the data flow
        if b in mods and a != b and not (mods[a].name == "__init__.py" and b.startswith(a + ".")):
            edges[a].add(b)
    assert _cycles(edges) == []


def test_no_import_cycle_between_rooms(graph):
    mods, imps = graph
    edges: dict[str, set[str]] = {}
    for a, b, _ in imps:
        ra, rb = _room(a), _room(b)
        if ra != rb and ra != "pinngs":  # the package root only re-exports (lazily)
            edges.setdefault(ra, set()).add(rb)
    assert _cycles(edges) == [], "rooms that import each other"


def test_the_product_never_imports_the_simulator(graph):
    _, imps = graph
    # the command line is the one exception: `pinngs simulate` is a command, and cli imports nothing else
    # of the product from its simulate handler
    bad = sorted({(a, b) for a, b, _ in imps
                  if b.startswith("pinngs.simulate") and _room(a) not in ("simulate", "cli")})
    assert bad == []


def test_no_private_name_crosses_a_room(graph):
    _, imps = graph
    bad = []
    for a, b, name in imps:
        if (b, name) == ("pinngs", "_C") and a == "pinngs.backend":
            continue  # the compiled kernels: reached only through pinngs.backend, which loads them lazily
        private_module = any(p.startswith("_") and p != "__init__" for p in b.split(".")[1:])
        private_name = name.startswith("_") and not (name.startswith("__") and name.endswith("__"))  # not dunders
        if _room(a) != _room(b) and (private_name or private_module):
            bad.append((a, b, name))
    assert bad == []


def test_module_docstrings_stay_short():
    """Every module docstring ≤ 40 lines (issue 26): the measurements behind a module's choices live in
    docs/decisions.md, which its docstring points to by section title."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "pinngs"
    long = {}
    for p in sorted(root.rglob("*.py")):
        doc = ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))
        if doc and len(doc.splitlines()) > 40:
            long[str(p.relative_to(root))] = len(doc.splitlines())
    assert len(list(root.rglob("*.py"))) > 20 and not long, long
