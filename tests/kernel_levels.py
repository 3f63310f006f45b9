"""The kernel levels the tests run the C runtime at, and why a level is skipped.

Which level runs is the C runtime's decision (native/kernels.c: the best one the CPU supports,
or the one ``BUMPCONV_KERNELS`` forces); which products run on int8 activations at a level is
too (``bumpconv.native.kernels.int8_products``). The tests never hold a copy of either rule:
they force each level in turn and ask the runtime. What lives here is only what the C runtime
does not report: the names of the levels (it lists them only in its error for an unknown
name) and, to say *why* a level is skipped, the CPU features each one needs, as /proc/cpuinfo
spells them. tests/test_kernel_levels.py checks both against the C runtime on the CPU it runs
on, so neither can drift from native/kernels_*.c unnoticed. And what a product on int8
activations computes (:func:`int8_round_trip`), for the tests that check it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bumpconv.native import kernel_name

#: Every level, best first (native/kernels.c LEVELS).
LEVELS: tuple[str, ...] = ("avx512-vnni", "avx512", "avx2-vnni", "avx2", "portable")

#: The CPU features each level's ``*_supported()`` checks (native/kernels_*.c), in
#: /proc/cpuinfo's spelling (GCC's ``avx512vnni`` is ``avx512_vnni`` there, ``avxvnni`` is
#: ``avx_vnni``).
FEATURES: dict[str, tuple[str, ...]] = {
    "avx512-vnni": ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "fma"),
    "avx512": ("avx512f", "avx512bw", "avx512vl", "avx512dq", "fma"),
    "avx2-vnni": ("avx2", "fma", "avx_vnni"),
    "avx2": ("avx2", "fma"),
    "portable": (),
}

CPUINFO = Path("/proc/cpuinfo")


@contextlib.contextmanager
def forced(level: str | None) -> Iterator[None]:
    """``BUMPCONV_KERNELS=level`` for the duration (None: unset), then as it was."""
    saved = os.environ.get("BUMPCONV_KERNELS")
    try:
        if level is None:
            os.environ.pop("BUMPCONV_KERNELS", None)
        else:
            os.environ["BUMPCONV_KERNELS"] = level
        yield
    finally:
        if saved is None:
            os.environ.pop("BUMPCONV_KERNELS", None)
        else:
            os.environ["BUMPCONV_KERNELS"] = saved


def runs_here(level: str) -> bool:
    """Whether the C runtime accepts ``level`` on this CPU."""
    with forced(level):
        return not kernel_name().startswith("none")


def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (None where there is none: not Linux)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return None


def missing_features(level: str) -> tuple[str, ...] | None:
    """The features ``level`` needs that this CPU lacks (None: unknown, no /proc/cpuinfo)."""
    flags = cpu_flags()
    if flags is None:
        return None
    return tuple(f for f in FEATURES[level] if f not in flags)


def skip_reason(level: str) -> str | None:
    """Why ``level`` cannot be tested on this CPU (None: it can), naming what is missing."""
    if runs_here(level):
        return None
    missing = missing_features(level)
    if missing:
        return f"BUMPCONV_KERNELS={level}: this CPU lacks {', '.join(missing)}"
    return f"BUMPCONV_KERNELS={level}: the C runtime refuses this level on this CPU"


def int8_round_trip(x: np.ndarray) -> np.ndarray:
    """What a product on int8 activations multiplies by: x [M, K] quantized per block of 32
    (d = max|x| / 127 in fp32, q = round-half-even(x / d)) and back, as native/kernels_int8.h
    does. Where ``int8_products`` says a product runs on int8 activations, it equals the fp32
    product of this round trip up to summation order."""
    b = x.reshape(x.shape[0], -1, 32).astype(np.float32)
    d = (np.abs(b).max(axis=-1, keepdims=True) / np.float32(127)).astype(np.float32)
    inv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
    q = np.rint(b * inv)
    return (q.astype(np.float64) * d).reshape(x.shape)
