"""The import contract in pyproject.toml holds, and it is not vacuous: a forbidden edge planted
in a copy of the package is reported by name (fast lane: no torch)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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


def test_a_forbidden_edge_is_reported(tmp_path: Path) -> None:
    copy = tmp_path / "src" / "bumpconv"
    shutil.copytree(ROOT / "src" / "bumpconv", copy,
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    spec = copy / "format" / "spec.py"
    spec.write_text(spec.read_text() + "\nfrom ..conversion import plan  # noqa: E402,F401\n")
    r = lint_imports(tmp_path / "src")
    assert r.returncode != 0
    assert "bumpconv.format.spec -> bumpconv.conversion.plan" in r.stdout


def test_the_metrics_may_not_import_the_reference_side(tmp_path: Path) -> None:
    """The metrics read PromptTokens and ReferenceRun from ``reference_data``; an import of
    the torch-side ``reference`` module from them is a broken contract."""
    copy = tmp_path / "src" / "bumpconv"
    shutil.copytree(ROOT / "src" / "bumpconv", copy,
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    metrics = copy / "comparison" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\nfrom . import reference  # noqa: E402,F401\n")
    r = lint_imports(tmp_path / "src")
    assert r.returncode != 0
    assert "bumpconv.comparison.metrics -> bumpconv.comparison.reference" in r.stdout
