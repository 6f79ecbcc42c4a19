"""The import graph of the library: one direction, no circle, and the examples outside it.

Read from the source with ``ast`` (nothing is imported): an edge ``a -> b`` for every
``import gradchain.b`` / ``from gradchain.b import x`` in module ``a`` — at module level for the
circle check (a function-level import runs later and cannot deadlock a first import), anywhere
for the examples rule.  ``from gradchain import sub`` is an edge to ``gradchain.sub`` when
``sub`` is a module, else to the package ``gradchain``.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "gradchain"


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _target(name: str) -> str:
    """The nearest known module for a dotted name (``gradchain.tuning.search.best`` -> ``...search``)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _edges(module: str, top_level_only: bool) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {_target(a.name) for a in node.names if a.name.split(".")[0] == "gradchain"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "gradchain":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in MODULES else _target(base))
    out.discard(module)
    return out


def test_no_library_module_imports_the_examples():
    offenders = {m: sorted(e for e in _edges(m, top_level_only=False) if e.startswith("gradchain.examples"))
                 for m in MODULES if not m.startswith("gradchain.examples") and m != "gradchain.__main__"}
    assert not {m: e for m, e in offenders.items() if e}, offenders


def test_the_module_level_import_graph_has_no_circle():
    graph = {m: _edges(m, top_level_only=True) for m in MODULES}
    # a package's __init__ re-exports its submodules: that direction is expected; a submodule that
    # imports its own package (or an ancestor) back closes a circle
    state: dict[str, int] = {}
    path: list[str] = []
    circles = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                circles.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not circles, "\n".join(" -> ".join(c) for c in circles)


def test_no_module_swaps_its_class_or_reads_the_callers_frame():
    for name, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        assert "sys.modules[__name__].__class__" not in text, name
        assert "_getframe" not in text and "inspect.stack" not in text and "currentframe" not in text, name
