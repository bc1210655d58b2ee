"""The package's structure, read from its imports (every `import`, function-local ones included):
no import cycle among the modules of continuation/, problems/ and solvers/, and no arrow from a
lower layer of continuation/ to a higher one.

Layers of continuation/, lowest first (continuation/__init__.py says what each holds):
errors -> surface -> strategies -> singular -> files -> engine -> apps. solvers/ knows nothing
of problems/ or continuation/ (DESIGN.md section 5); problems/ takes only continuation.errors.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("continuation", "problems", "solvers")
LAYERS = ("errors", "surface", "strategies", "singular", "files", "engine", "apps")


def _module_name(file: Path) -> str:
    parts = list(file.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(f): f for pkg in PACKAGES for f in (ROOT / pkg).rglob("*.py")}


def _imports(name: str, file: Path, known: set[str]) -> set[str]:
    """The project modules `file` imports (a `from package import module` names the module)."""
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, file, known) for name, file in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "continuation" or len(parts) < 2:
        return None  # the package's face (continuation/__init__.py, __main__) sits above every layer
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def test_the_tree_is_read():
    """The reader finds the modules and their arrows (a reader that saw none would pass the rest)."""
    graph = _graph()
    assert {"continuation.engine.driver", "continuation.strategies.processes", "solvers.krylov"} <= set(graph)
    assert "continuation.engine.stepper" in graph["continuation.engine.driver"]
    assert "continuation.files.schema" in graph["continuation.files.writer"]


def test_the_reader_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_arrow_runs_up_the_layers():
    graph = _graph()
    up = []
    for src, targets in graph.items():
        ls = _layer(src)
        for dst in targets:
            ld = _layer(dst)
            if ls is not None and ld is not None and ld > ls:
                up.append(f"{src} -> {dst}")
    assert not up, f"imports from a lower layer to a higher one ({' < '.join(LAYERS)}): {up}"


def test_every_module_of_continuation_is_in_a_layer():
    loose = [m for m in _graph() if m.startswith("continuation.") and _layer(m) is None
             and m not in ("continuation.__main__",)]
    assert not loose, f"modules outside the layers {LAYERS}: {loose}"


def test_solvers_and_problems_stay_below():
    graph = _graph()
    bad = [f"{s} -> {d}" for s, ds in graph.items() for d in ds
           if (s.startswith("solvers") and not d.startswith("solvers"))
           or (s.startswith("problems") and d.startswith("continuation") and d != "continuation.errors")]
    assert not bad, bad
