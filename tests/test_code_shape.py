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
