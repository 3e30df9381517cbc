"""The code's shape, kept by tests: packages import only downwards, functions stay short.

`shared/` (settings, models, the options, the queue) sits at the bottom; the API and the
worker stand on it side by side and never import each other; the `lumiere` command (`cli/`)
stands on all of them, and nothing imports it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

# What each first-party package may import, itself included.
MAY_IMPORT = {
    "shared": {"shared"},
    "api": {"api", "shared"},
    "worker": {"worker", "shared"},
    "migrations": {"migrations", "shared"},
    "cli": {"cli", "api", "worker", "shared", "migrations"},
}
LONGEST_FUNCTION = 80  # lines, in api/, shared/ and worker/


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def imported_packages(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, top-level package) of every import in a module, local imports included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module.split(".")[0]


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_packages_import_only_downwards(package: str) -> None:
    wrong = []
    for path in modules(package):
        for line, imported in imported_packages(ast.parse(path.read_text())):
            if imported in MAY_IMPORT and imported not in MAY_IMPORT[package]:
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {imported}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package", ["api", "shared", "worker"])
def test_no_function_is_longer_than_80_lines(package: str) -> None:
    long = []
    for path in modules(package):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > LONGEST_FUNCTION:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {lines}")
    assert not long, "\n".join(long)
