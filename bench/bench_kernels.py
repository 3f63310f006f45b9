"""Speed of the matrix kernels per weight type and activation path, and of SmolLM2-135M decode
and prefill per ``convert --quant`` type. Figures are printed, never asserted.

* GEMV (decode, M = 1): weights read per second, GB/s (the weights' bytes over the time of one
  product: a GEMV is bound by memory bandwidth). The matrix (``--gemv N K``, default 8192 x
  4096) is larger than the last-level cache for fp32 and q8_0; smaller types may partly fit.
* GEMM (prefill, ``--gemm M N K``, default 128 x 2048 x 2048): GFLOP/s (2 M N K flops).
* exp: the vectorized exponential of the softmax and SwiGLU, ns per value (includes restoring
  the input, a copy of 4 MB).
* Model: whole-model decode tok/s and prefill-128 ms on SmolLM2-135M converted per type, through
  bench_runtime.py's own measurement (one home for how a model is timed), each in a fresh
  process. ``--no-model`` skips it.

All on 1 and 2 threads (``--threads``), with the kernel level ``BUMPCONV_KERNELS`` picks (else
the CPU's best; printed).

Usage: python bench/bench_kernels.py [--types fp32 q8_0 q4_0 q4_k_m ...] [--threads 1 2]
       [--no-model] [--cache .cache]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from bumpconv.format.dtypes import DType
from bumpconv.native import kernel_name
from bumpconv.native.kernels import View, matmul
from bumpconv.native.quant import quantize

#: Kernel types (one per block type the runtime reads).
KERNEL_TYPES = ("fp32", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k")


def _best(fn: Callable[[], object], seconds: float = 0.3, at_least: int = 3) -> float:
    """The shortest of repeated calls (the machine is shared: the minimum is the signal)."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < at_least or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def weights(dtype: DType, N: int, K: int, rng: np.random.Generator) -> np.ndarray:
    """N x K weights of ``dtype`` as raw bytes [N, row bytes]: 1024 distinct rows repeated (the
    kernel's speed does not depend on the values; quantizing 33 M values would)."""
    base = rng.standard_normal((min(N, 1024), K)).astype(np.float32)
    raw = base.view(np.uint8) if dtype == DType.FP32 else quantize(base, dtype)
    return np.ascontiguousarray(np.resize(raw, (N, raw.shape[1])))


def bench_kernels(types: list[str], threads: list[int], gemv: tuple[int, int],
                  gemm: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(0)
    N, K = gemv
    gM, gN, gK = gemm
    print(f"kernels: {kernel_name()}")
    print(f"{'type':7} {'act':5} " + " ".join(f"GEMV {t}t GB/s".rjust(14) for t in threads)
          + " " + " ".join(f"GEMM {t}t GFLOP/s".rjust(17) for t in threads))
    for name in types:
        dtype = DType[name.upper()]
        if K % dtype.block.elements or gK % dtype.block.elements:
            print(f"{name:7} K={K}/{gK} is not a whole number of its "
                  f"{dtype.block.elements}-value blocks: skipped", flush=True)
            continue
        w = weights(dtype, N, K, rng)
        wg = np.ascontiguousarray(w[:gN, : w.shape[1] * gK // K]) if gK <= K else None
        x1 = rng.standard_normal((1, K)).astype(np.float32)
        xm = rng.standard_normal((gM, gK)).astype(np.float32)
        for act in ("fp32", "int8") if dtype != DType.FP32 else ("fp32",):
            cells = []
            for t in threads:
                s = _best(lambda: matmul(dtype, w, N * K, View.row_major(N, K), N, K, x1, t,
                                         act))
                cells.append(f"{w.nbytes / s / 1e9:14.1f}")
            for t in threads:
                if wg is None:
                    cells.append(f"{'-':>17}")
                    continue
                # int8 activations: the int8 GEMM where the level has one (else the fp32 GEMM)
                s = _best(lambda: matmul(dtype, wg, gN * gK, View.row_major(gN, gK), gN, gK, xm,
                                         t, act))
                cells.append(f"{2 * gM * gN * gK / s / 1e9:17.1f}")
            print(f"{name:7} {act:5} " + " ".join(cells), flush=True)


def bench_exp(n: int = 1 << 20) -> None:
    """The softmax's exponentials (``bump_exp_sum_rows``, the vectorized exp SwiGLU uses too):
    ns per value over n values in [-20, 0], one thread."""
    from bumpconv.native import native
    mod = native()
    err = mod.ffi.new("char[]", 256)
    x = np.random.default_rng(0).uniform(-20, 0, n).astype(np.float32)
    s = x.copy()
    buf = mod.ffi.from_buffer("float[]", s)

    def run() -> None:
        s[:] = x
        mod.lib.bump_exp_sum_rows(buf, n, 0.0, err, 256)

    print(f"exp (softmax, SwiGLU): {_best(run) / n * 1e9:.2f} ns per value, 1 thread")


def bench_model(types: list[str], threads: list[int], cache: Path) -> None:
    """Decode tok/s and prefill-128 ms of SmolLM2-135M per type: bench_runtime.py (without
    llama.cpp and transformers), once per thread count, in its own process."""
    script = Path(__file__).with_name("bench_runtime.py")
    for t in threads:
        cmd = [sys.executable, str(script), "--cache", str(cache), "--threads", str(t),
               "--no-peer", "--attn", "--types", *types, "--activations", "fp32", "int8",
               "--prompt", "128", "--steps", "32", "--repeats", "2"]
        print(f"\n$ {' '.join(cmd[1:])}", flush=True)
        subprocess.run(cmd, check=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--types", nargs="+", default=list(KERNEL_TYPES))
    ap.add_argument("--model-types", nargs="+", default=["fp32", "q8_0", "q4_0", "q4_k_m"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--gemv", nargs=2, type=int, default=[8192, 4096], metavar=("N", "K"))
    ap.add_argument("--gemm", nargs=3, type=int, default=[128, 2048, 2048],
                    metavar=("M", "N", "K"))
    ap.add_argument("--no-model", action="store_true")
    ap.add_argument("--cache", type=Path, default=Path(".cache"))
    args = ap.parse_args(argv)
    bench_kernels(args.types, args.threads, tuple(args.gemv), tuple(args.gemm))
    bench_exp()
    if not args.no_model:
        bench_model(args.model_types, args.threads, args.cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
