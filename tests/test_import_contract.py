"""The import contract in pyproject.toml holds, and it is not vacuous: a forbidden edge planted
in a copy of the package is reported by name (fast lane: no torch)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(src_root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the project's contracts, on the package found under ``src_root``."""
    env = {**os.environ, "PYTHONPATH": str(src_root)}
    return subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--config",
                           str(ROOT / "pyproject.toml"), "--no-cache"],
                          capture_output=True, text=True, env=env, cwd=src_root)


def test_the_package_keeps_its_import_contracts() -> None:
    r = lint_imports(ROOT / "src")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


@pytest.mark.parametrize("module, planted, reported", [
    ("format/spec.py", "from ..conversion import plan",
     "bumpconv.format.spec -> bumpconv.conversion.plan"),
    # the metrics read PromptTokens and ReferenceRun from reference_data, never the torch side
    ("comparison/metrics.py", "from . import reference",
     "bumpconv.comparison.metrics -> bumpconv.comparison.reference"),
])
def test_a_forbidden_edge_is_reported(tmp_path: Path, module: str, planted: str,
                                      reported: str) -> None:
    copy = tmp_path / "src" / "bumpconv"
    shutil.copytree(ROOT / "src" / "bumpconv", copy,
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + f"\n{planted}  # noqa: E402,F401\n")
    r = lint_imports(tmp_path / "src")
    assert r.returncode != 0
    assert reported in r.stdout
