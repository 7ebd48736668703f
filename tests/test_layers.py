"""The layer rule: the index's private modules (``learn2hash.index._*``) are the index's own; the
metrics build on the public kernel module (:mod:`learn2hash.kernels`) and on :mod:`learn2hash.codes`,
never on the index. One copy of the shared low-level helpers."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import learn2hash

SRC = Path(learn2hash.__file__).parent


def _imports(path: Path) -> set[str]:
    """Modules that ``path`` imports (absolute names; ``from a import b`` counts ``a`` and ``a.b``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def test_no_module_outside_the_index_imports_its_private_modules():
    offenders = {}
    for path in SRC.rglob("*.py"):
        if (SRC / "index") in path.parents:
            continue
        private = sorted(m for m in _imports(path) if m.startswith("learn2hash.index._"))
        if private:
            offenders[str(path.relative_to(SRC))] = private
    assert offenders == {}


def test_importing_the_metrics_loads_no_part_of_the_index():
    code = ("import sys, learn2hash.metrics as m; "
            "print(sorted(k for k in sys.modules if k.startswith('learn2hash.index')))")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_one_integer_check_for_the_index_and_the_metrics():
    import pytest

    from learn2hash import Codes, HammingIndex, Learn2HashError
    from learn2hash.index import hamming
    from learn2hash.metrics import evaluate

    assert hamming.check_int is learn2hash.errors.check_int
    codes = Codes.from_bits([[0, 1, 1, 0], [1, 1, 0, 0]])
    labels = [[True], [True]]
    index = HammingIndex(4)
    index.add(codes)
    with pytest.raises(Learn2HashError, match=r"^radius must be an integer >= 0, got -1$"):
        index.range_search(codes, radius=-1)
    with pytest.raises(Learn2HashError, match=r"^radius must be an integer >= 0, got -1$"):
        evaluate(codes, labels, codes, labels, radius=-1)
    with pytest.raises(Learn2HashError, match=r"^threads must be an integer >= 1, got True$"):
        evaluate(codes, labels, codes, labels, threads=True)
