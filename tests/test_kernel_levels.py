"""The kernel levels as the tests see them (tests/kernel_levels.py) against the C runtime's own
choice: the level names, the CPU features that explain a skip, the default level, and that a
model runs the level it was opened at. No torch."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import pytest

from bumpconv.format.errors import KernelError
from bumpconv.native import kernel_name
from bumpconv.run.runtime import BumpModel
from kernel_levels import FEATURES, LEVELS, cpu_flags, forced, missing_features, runs_here
from runtime_helpers import convert


@pytest.fixture(scope="module")
def blob(synthetic: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert(synthetic("llama-untied"), tmp_path_factory.mktemp("levels") / "m.bump")


def test_the_levels_are_the_c_runtimes_best_first() -> None:
    """The C runtime names its levels, best first, in its error for an unknown one."""
    from bumpconv.native.kernels import View, matmul
    from bumpconv.format.dtypes import DType
    import numpy as np
    with forced("avx9000"), pytest.raises(KernelError) as err:
        matmul(DType.FP32, np.ones(4, np.float32), 4, View.row_major(1, 4), 1, 4,
               np.ones((1, 4), np.float32))
    known = re.search(r"known: ([^)]*)\)", str(err.value))
    assert known is not None, str(err.value)
    assert tuple(known.group(1).split(", ")) == LEVELS
    assert set(FEATURES) == set(LEVELS)


def test_the_default_level_is_the_best_one_this_cpu_runs() -> None:
    with forced(None):
        default = kernel_name()
    assert default.split()[0] == next(level for level in LEVELS if runs_here(level))
    assert runs_here("portable")


@pytest.mark.skipif(cpu_flags() is None, reason="no /proc/cpuinfo: the CPU's flags are unknown")
@pytest.mark.parametrize("level", LEVELS)
def test_a_level_runs_exactly_when_the_cpu_has_its_features(level: str) -> None:
    """The features a skip names are the ones the C runtime checks: on this CPU, a level runs
    if and only if /proc/cpuinfo lists every feature FEATURES gives for it."""
    assert runs_here(level) == (missing_features(level) == ())


def test_a_skip_names_the_level_and_the_features_the_cpu_lacks(monkeypatch,
                                                                 tmp_path: Path) -> None:
    """What a CPU without AVX-512 (here: a /proc/cpuinfo without it) is told for avx512."""
    import kernel_levels
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx_vnni\n")
    monkeypatch.setattr(kernel_levels, "CPUINFO", cpuinfo)
    monkeypatch.setattr(kernel_levels, "runs_here", lambda level: level in ("avx2", "portable"))
    assert kernel_levels.skip_reason("avx512") == (
        "BUMPCONV_KERNELS=avx512: this CPU lacks avx512f, avx512bw, avx512vl, avx512dq")
    assert kernel_levels.skip_reason("avx512-vnni").endswith("avx512dq, avx512_vnni")
    assert kernel_levels.skip_reason("avx2") is None
    monkeypatch.setattr(kernel_levels, "CPUINFO", tmp_path / "absent")
    assert kernel_levels.skip_reason("avx512") == (
        "BUMPCONV_KERNELS=avx512: the C runtime refuses this level on this CPU")


def test_an_unusable_level_fails_open_by_name(blob: Path, monkeypatch, cli) -> None:
    monkeypatch.setenv("BUMPCONV_KERNELS", "avx9000")
    with pytest.raises(KernelError, match="BUMPCONV_KERNELS=avx9000: unknown kernel level"):
        BumpModel.open(blob)
    r = cli("run", blob, "--prompt", "hi", "-n", "1")
    assert r.code != 0 and "BUMPCONV_KERNELS=avx9000" in r.err, r.err


def test_a_model_runs_the_level_it_was_opened_at(blob: Path, kernel_level: str,
                                                 monkeypatch) -> None:
    with BumpModel.open(blob) as m:
        monkeypatch.setenv("BUMPCONV_KERNELS", "portable")  # later changes do not move it
        assert m.kernels.split()[0] == kernel_level
        m.forward([1, 2, 3])
        assert m.kernels.split()[0] == kernel_level
