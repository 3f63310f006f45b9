"""A fuzz pass: random byte flips and truncations of valid blobs and of a valid safetensors file,
from a fixed seed. Every case must end in success or a BumpError - never another exception (a
traceback for a user), a crash or a hang. The runtime tests also run against the ASan + UBSan
build (``make asan-test``), so there this is a sanitizer fuzz of the reader and the C runtime.

``BUMPCONV_FUZZ_CASES`` sets the number of cases per base file (default 1000; four base files).
"""

from __future__ import annotations

import faulthandler
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from bumpconv.blob.check import check_blob
from bumpconv.blob.reader import open_blob
from bumpconv.cli import main as cli_main
from bumpconv.format.errors import BumpError
from bumpconv.run.runtime import BumpModel
from runtime_helpers import convert

CASES = int(os.environ.get("BUMPCONV_FUZZ_CASES", "1000"))
SEED = 20261202
#: A case that takes longer than this is a hang (the process then exits with every thread's
#: stack on stderr).
HANG_SECONDS = 60

#: Not in the fast lane's minute (it takes about that long on its own); in `make test` and
#: under the sanitizers.
pytestmark = pytest.mark.fuzz


def mutations(data: bytes, rng: np.random.Generator, n: int) -> Iterator[tuple[str, bytes]]:
    """``n`` damaged copies: flips anywhere, flips in the structure-dense head and tail, and
    truncations."""
    size = len(data)
    for _ in range(n):
        kind = int(rng.integers(4))
        if kind == 3:
            cut = int(rng.integers(size))
            yield f"truncate@{cut}", data[:cut]
            continue
        d = bytearray(data)
        lo, hi = {0: (0, size), 1: (0, min(size, 1024)), 2: (max(0, size - 4096), size)}[kind]
        spots = rng.integers(lo, hi, int(rng.integers(1, 9)))
        for at in spots:
            d[int(at)] ^= int(rng.integers(1, 256))
        yield f"flip@{','.join(map(str, sorted(spots.tolist())))}", bytes(d)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """Memory-backed when possible: thousands of small files are written and fsynced."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="bumpconv-fuzz-", dir=base) as d:
        yield Path(d)


def run_blob(path: Path, config: Path | None) -> str:
    """Open, check and run a blob the way ``inspect --check`` and ``run`` do."""
    with open_blob(path, config=config) as bf:
        report = check_blob(bf)
        with BumpModel.from_blob(bf, threads=1) as model:
            logits = model.forward([1, 2, 3])
    assert logits.shape[0] == 3
    return "runs" + ("" if report.ok else ", check fails")


def fuzz(cases: Iterator[tuple[str, bytes]], target: Path,
         attempt: Callable[[Path], str]) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    try:
        for label, blob in cases:
            faulthandler.dump_traceback_later(HANG_SECONDS, exit=True, file=sys.__stderr__)
            target.write_bytes(blob)
            try:
                outcomes[attempt(target)] += 1
            except BumpError:
                outcomes["refused"] += 1
            except Exception as exc:  # a traceback a user would see
                pytest.fail(f"{label}: {type(exc).__name__}: {exc}")
    finally:
        faulthandler.cancel_dump_traceback_later()
    return outcomes


@pytest.mark.parametrize("profile, name, extra", [
    ("bumpwgt5", "qwen3", []),                          # q/k norms, untied head
    ("bumpwgt3", "qwen2", []),                          # biases, the v3 layout
    ("engine-v7", "llama-quant", ["--quant", "q4_k_m"]),  # ggml blocks of four types
], ids=["bumpwgt5", "bumpwgt3", "engine-v7-q4_k_m"])
def test_damaged_blobs_are_refused_or_run_never_crash(profile: str, name: str, extra: list[str],
                                                      synthetic, scratch: Path, capsys) -> None:
    src = synthetic(name)
    base = convert(src, scratch / "base.bump", profile, extra)
    config = src / "config.json" if profile == "bumpwgt3" else None
    rng = np.random.default_rng(SEED + len(profile))
    outcomes = fuzz(mutations(base.read_bytes(), rng, CASES), scratch / "case.bump",
                    lambda p: run_blob(p, config))
    with capsys.disabled():
        print(f"\nfuzz {profile} {' '.join(extra)}: {CASES} cases: {dict(outcomes)}")
    assert sum(outcomes.values()) == CASES and outcomes["refused"] > 0


def test_damaged_safetensors_are_refused_or_converted(synthetic, scratch: Path,
                                                      capsys) -> None:
    src = scratch / "src"
    src.mkdir()
    original = synthetic("llama-untied")
    (src / "config.json").write_bytes((original / "config.json").read_bytes())
    data = (original / "model.safetensors").read_bytes()
    out = scratch / "out.bump"

    def attempt(path: Path) -> str:
        code = cli_main(["convert", str(src), str(out), "--force", "--quiet"])
        return {0: "converted", 1: "refused"}[code]

    rng = np.random.default_rng(SEED)
    outcomes = fuzz(mutations(data, rng, CASES), src / "model.safetensors", attempt)
    with capsys.disabled():
        print(f"\nfuzz safetensors: {CASES} cases: {dict(outcomes)}")
    assert sum(outcomes.values()) == CASES and outcomes["refused"] > 0
