"""The shape of the package: every function short enough to read at once, and no state
changed behind a reader's back through `nonlocal`."""

from __future__ import annotations

import ast

from conftest import ROOT

LIMIT = 60  # lines of a function's body, from its first statement after the docstring


def _modules():
    for path in sorted((ROOT / "charrnn").rglob("*.py")):
        yield path.relative_to(ROOT), ast.parse(path.read_text(encoding="utf-8"))


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the last, blank lines included."""
    body = node.body
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1


def test_body_lines_counts_from_after_the_docstring():
    tree = ast.parse('def f():\n    """Doc\n    string."""\n    a = 1\n\n    # note\n'
                     '    return a\n\n\ndef g(): return 1\n')
    assert [body_lines(f) for f in tree.body] == [4, 1]


def test_no_function_body_is_over_60_lines():
    long = [f"{path}:{node.lineno} {node.name}: {body_lines(node)} lines"
            for path, tree in _modules() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and body_lines(node) > LIMIT]
    assert not long, "\n".join(long)


def test_no_code_uses_nonlocal():
    found = [f"{path}:{node.lineno}" for path, tree in _modules() for node in ast.walk(tree)
             if isinstance(node, ast.Nonlocal)]
    assert not found, found


# The package's layers, highest first: a unit (a sub-package, or a module at the top of
# charrnn/) imports only units of its own layer or below, and the units' graph has no cycle.
LAYERS = (
    ("cli",),
    ("api",),
    ("training",),
    ("planning", "generation", "analysis"),
    ("export", "checkpoint", "quantize", "models", "config", "text"),
    ("device", "errors", "fsutil", "report"),
)


def _unit(path) -> str:
    parts = path.relative_to("charrnn").with_suffix("").parts
    return parts[0]


def import_graph() -> dict[str, set[str]]:
    """Each unit's imports of other units, from every import statement (lazy ones included)."""
    graph: dict[str, set[str]] = {}
    for path, tree in _modules():
        unit = _unit(path)
        if unit in ("__init__", "__main__"):
            continue
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                     if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                parts = name.split(".")
                if parts[0] == "charrnn" and len(parts) > 1 and parts[1] != "__version__" \
                        and parts[1] != unit and (ROOT / "charrnn" / parts[1]).with_suffix(".py").exists() \
                        | (ROOT / "charrnn" / parts[1]).is_dir():
                    graph.setdefault(unit, set()).add(parts[1])
    return graph


def test_the_top_of_the_package_holds_at_most_12_modules_and_the_rest_is_in_sub_packages():
    top = sorted(p.name for p in (ROOT / "charrnn").glob("*.py"))
    packages = sorted(p.name for p in (ROOT / "charrnn").iterdir() if (p / "__init__.py").exists())
    assert len(top) <= 12, top
    assert len(packages) >= 3, packages


def test_every_unit_has_a_layer_and_imports_point_down_or_across_without_a_cycle():
    import graphlib
    layer = {unit: depth for depth, units in enumerate(LAYERS) for unit in units}
    graph = import_graph()
    units = {_unit(path) for path, _ in _modules()} - {"__init__", "__main__"}
    assert units == set(layer), f"units without a layer: {units - set(layer)}"
    upward = [f"{a} -> {b}" for a, deps in graph.items() for b in deps if layer[b] < layer[a]]
    assert not upward, upward
    graphlib.TopologicalSorter(graph).static_order()  # raises CycleError on a cycle
