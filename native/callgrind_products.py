"""Instructions per matrix product, counted by valgrind's callgrind: a figure that does not
depend on what else the machine runs, for comparing two builds of the kernels (a refactor
that must not cost anything, a kernel that should cost less) where timings would be noise.

One ``bump_matmul_view`` call per (activations, type, M) on one thread, W [N][K] row-major;
callgrind counts only inside that call (the pool, the view check and the product) and dumps
after each, so each figure is exactly one call. Valgrind runs AVX2 but not AVX-512 or
AVX-VNNI: the levels it can count are avx2 and portable.

Usage: python native/callgrind_products.py [--level avx2] [--types q4_0 q4_k q8_0]
       [--M 1 64] [--N 256] [--K 1024]
(``BUMPCONV_NATIVE_DIR`` picks the build, as for the runtime; ``make -C native callgrind``
counts the release build.)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

COUNTABLE = ("avx2", "portable")
ACTIVATIONS = ("fp32", "int8")


def inner(types: list[str], Ms: list[int], N: int, K: int) -> None:
    """The calls callgrind counts, one line per call on stdout, in call order."""
    import numpy as np

    from bumpconv.format.dtypes import DType
    from bumpconv.native.kernels import View, matmul
    from bumpconv.native.quant import quantize

    rng = np.random.default_rng(0)
    for act in ACTIVATIONS:
        for name in types:
            dtype = DType[name.upper()]
            rows = rng.standard_normal((N, K)).astype(np.float32)
            w = rows.view(np.uint8) if dtype == DType.FP32 else quantize(rows, dtype)
            for M in Ms:
                x = rng.standard_normal((M, K)).astype(np.float32)
                matmul(dtype, w, N * K, View.row_major(N, K), N, K, x, threads=1,
                       activations=act)
                print(act, dtype.label, M, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--level", default="avx2", choices=COUNTABLE)
    ap.add_argument("--types", nargs="+", default=["q4_0", "q4_k", "q8_0"])
    ap.add_argument("--M", nargs="+", type=int, default=[1, 64])
    ap.add_argument("--N", type=int, default=256)
    ap.add_argument("--K", type=int, default=1024)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        inner(args.types, args.M, args.N, args.K)
        return
    if shutil.which("valgrind") is None:
        sys.exit("callgrind_products: valgrind is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        cmd = ["valgrind", "--tool=callgrind", "--collect-atstart=no",
               "--toggle-collect=bump_matmul_view", "--dump-after=bump_matmul_view",
               f"--callgrind-out-file={out}", sys.executable, __file__, "--inner",
               "--types", *args.types, "--M", *map(str, args.M), "--N", str(args.N),
               "--K", str(args.K)]
        env = dict(os.environ, BUMPCONV_KERNELS=args.level)
        run = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"callgrind_products: the counted run failed:\n{run.stderr[-2000:]}")
        calls = [line.split() for line in run.stdout.splitlines()]
        dumps = sorted(Path(tmp).glob("cg.out.*"), key=lambda p: int(p.name.split(".")[2]))
        counts = [int(re.search(r"^summary:\s+(\d+)", p.read_text(), re.M).group(1))
                  for p in dumps]
        counts = [c for c in counts if c > 0]
        if len(counts) != len(calls):
            sys.exit(f"callgrind_products: {len(calls)} calls but {len(counts)} counted dumps")
    print(f"# instructions per bump_matmul_view call, {args.level}, N={args.N} K={args.K}, "
          "one thread")
    print(f"{'activations':<12}{'type':<8}{'M':>4}{'instructions':>16}")
    for (act, label, M), count in zip(calls, counts):
        print(f"{act:<12}{label:<8}{M:>4}{count:>16,}")


if __name__ == "__main__":
    main()
