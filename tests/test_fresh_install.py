"""A plain ``pip install`` of the checkout, as a newcomer does it: one fresh virtualenv (no torch,
no dev requirements), every subcommand on a tiny blob, no traceback anywhere.

The checkout's files (``git ls-files``, as they are in the working tree) are copied first, so
pip's in-tree build writes nothing into the checkout. Dependencies come from PyPI (the only
network the tests use) or pip's cache. The reference side is not installed, so ``parity`` and
``eval`` must each end in one line naming the command that installs the extra from this copy.
Slow (36 s here with a warm pip cache, 75 s the first time; nearly all of it pip): marked
``install``, which ``make test`` runs and ``make test-fast`` leaves out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from tools.fixtures import tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.install


def _copy_checkout(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)


def _run(argv: list[object], cwd: Path, env: dict[str, str],
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_plain_pip_install_runs_every_subcommand(synthetic: Callable[..., Path],
                                                 cache_dir: Path, tmp_path: Path) -> None:
    start = time.perf_counter()
    checkout = tmp_path / "bumpconv"
    _copy_checkout(checkout)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "BUMPCONV_NATIVE_DIR")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    pip = _run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", checkout],
               tmp_path, env, timeout=1200)
    assert pip.returncode == 0, pip.stderr[-3000:]
    installed = time.perf_counter() - start

    src = tmp_path / "SmolLM2-135M"  # a tiny checkpoint with a tokenizer and chat template
    shutil.copytree(synthetic("llama-untied"), src)
    for f in tiny_tokenizer("byte-level", cache_dir).iterdir():
        shutil.copy(f, src / f.name)
    work = tmp_path / "work"
    work.mkdir()
    (work / "text.txt").write_text("the cat sat on the mat. " * 200)
    bumpconv = venv / "bin" / "bumpconv"
    ok = [
        [bumpconv, "--version"],
        [bumpconv, "convert", src, "m.bump", "--dry-run", "--quiet"],
        [bumpconv, "convert", src, "m.bump", "--quiet"],
        [bumpconv, "convert", src, "q.bump", "--quant", "Q8_0", "--quiet",
         "--no-engine-sidecars"],
        [bumpconv, "inspect", "m.bump", "--check", "--summary"],
        [bumpconv, "verify", "m.bump", "--against", src],
        [bumpconv, "run", "m.bump", "--prompt", "the cat sat", "-n", "4"],
        [bumpconv, "run", "q.bump", "--prompt", "hello", "-n", "4", "--chat"],
        [venv / "bin" / "python", "-c",
         "import bumpconv, sys; f = bumpconv.safe_open('q.bump'); "
         "w = f.get_tensor(f.keys()[0]); "
         "sys.exit(bool({'torch', 'transformers'} & set(sys.modules)))"],
    ]
    for argv in ok:
        r = _run(argv, work, env)
        assert r.returncode == 0, (argv[1:], r.stderr[-2000:])
        assert "Traceback" not in r.stderr, (argv[1:], r.stderr)
    hint = (f"pip install '{checkout}[reference]' --extra-index-url "
            "https://download.pytorch.org/whl/cpu")
    for argv in ([bumpconv, "parity", src, "m.bump"],
                 [bumpconv, "eval", src, "m.bump", "--ctx", "64", "--corpus", "text.txt"]):
        r = _run(argv, work, env)
        assert r.returncode == 1 and "Traceback" not in r.stderr, (argv[1:], r.stderr)
        assert r.stderr.count("\n") == 1 and hint in r.stderr, (argv[1:], r.stderr)
    assert _run([venv / "bin" / "python", "-c", "import torch"], work, env).returncode != 0
    print(f"fresh install: pip install {installed:.0f} s, "
          f"everything {time.perf_counter() - start:.0f} s")
