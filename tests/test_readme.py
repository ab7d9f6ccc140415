"""Every Python block of the README is self-contained and runs as written."""

from __future__ import annotations

import ast
import builtins
import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _free_names(code: str) -> set[str]:
    """Names a block reads that it never binds (imports, assignments, defs, loop targets)."""
    tree = ast.parse(code)
    bound: set[str] = set(dir(builtins))
    read: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, ast.Store) else read).add(node.id)
    return read - bound


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_each_block_defines_what_it_uses(i):
    assert _free_names(BLOCKS[i]) == set(), f"README block {i + 1} uses names it never defines"


@pytest.mark.slow
@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_each_block_runs_as_written(i, tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    os.environ.setdefault("MPLBACKEND", "Agg")
    exec(compile(BLOCKS[i], f"README block {i + 1}", "exec"), {"__name__": "__readme__"})
