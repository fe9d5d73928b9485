"""Helpers for the tests that scan dpot's source for spellings (tests/test_metric_names.py, tests/test_rundir.py)."""

from __future__ import annotations

import ast


def docstring_ids(tree: ast.AST) -> set[int]:
    """``id`` of every docstring's constant node in ``tree`` (module, class and function docstrings): what a
    spelling scan skips, since prose may name what code must not spell."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out
