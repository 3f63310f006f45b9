"""The runtime's thread pool against OpenMP, on an idle and a contended machine (SmolLM2-135M
fp32 and, with --blobs, any other blobs).

Per variant, condition and blob, in a fresh process: prefill of a P-token prompt (ms, best of R)
and S greedy decode steps after that prefill (tok/s, best of R). Variants, all built from this
checkout's native/ (so they differ in the thread mechanism only: the same kernels, the same
split of work over threads, the same results):

* ``pool``: pool.c (bounded spin, then a futex sleep): what the package ships
* ``omp-default``: pool_omp.c (pool.h on libgomp, ``build_ffi.py --variant openmp``) with
  libgomp's default spin
* ``omp-spin1000``: the same build with ``GOMP_SPINCOUNT=1000`` (what the package set before
  the pool)

Conditions: ``idle``, and ``busy``: one competing process (a Python spin loop, not pinned) runs
for the whole measurement. The variants alternate within each round and the best of
``--rounds`` rounds is kept, so a burst of load from another tenant of a shared machine does not
land on one variant only. Figures are printed, never asserted; compare ratios of one run.

Usage: python bench/bench_pool.py [--work .cache-local/bench-pool] [--threads 2]
       [--variants pool omp-spin1000 omp-default] [--conditions idle busy] [--rounds 5]
       [--blobs more.bump ...] [--activations fp32|int8]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: variant -> (build_ffi.py variant, extra environment)
VARIANTS = {"pool": ("release", {}),
            "omp-spin1000": ("openmp", {"GOMP_SPINCOUNT": "1000"}),
            "omp-default": ("openmp", {})}

CHILD = r"""
import json, sys, time
import numpy as np
from bumpconv.run.runtime import BumpModel
blob, threads, P, S, R, act = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
prompt = np.random.default_rng(0).integers(0, 49152, P).tolist()
with BumpModel.open(blob, threads=threads, activations=act) as m:
    m.prefill(prompt)
    prefill, rates = [], []
    for _ in range(R):
        t = time.perf_counter(); m.prefill(prompt); prefill.append(time.perf_counter() - t)
    for _ in range(R):
        logits = m.prefill(prompt)
        t = time.perf_counter()
        for _ in range(S):
            logits = m.decode(int(np.argmax(logits)))
        rates.append(S / (time.perf_counter() - t))
print(json.dumps({"prefill_ms": min(prefill) * 1e3, "decode_tps": max(rates)}))
"""


def build(variant: str, work: Path) -> Path:
    """native/ of this checkout built as ``variant`` (build_ffi.py) into work/variant-DIGEST,
    DIGEST naming the sources, so an edit of native/ is never measured with an old build."""
    digest = hashlib.sha256()
    for f in sorted((ROOT / "native").glob("*.[ch]")) + [ROOT / "native" / "build_ffi.py"]:
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    out = work / f"{variant}-{digest.hexdigest()[:12]}"
    if not (out / "built").is_dir():
        subprocess.run([sys.executable, str(ROOT / "native" / "build_ffi.py"), "--variant",
                        variant, "--out", str(out / "built")], check=True,
                       stdout=subprocess.DEVNULL)
    return out / "built"


def measure(native_dir: Path, env_extra: dict[str, str], blob: Path, args: argparse.Namespace,
            busy: bool) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update(env_extra, BUMPCONV_NATIVE_DIR=str(native_dir))
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        time.sleep(0.2 if busy else 0)
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(blob), str(args.threads), str(args.prompt),
             str(args.steps), str(args.repeats), args.activations], env=env,
            capture_output=True, text=True)
    finally:
        if spinner:
            spinner.kill()
            spinner.wait()
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / ".cache-local" / "bench-pool")
    ap.add_argument("--src", type=Path, default=ROOT / ".cache" / "smollm2-fp32",
                    help="the SmolLM2-135M fp32 checkpoint (tools/fixtures.py builds it)")
    ap.add_argument("--blobs", type=Path, nargs="*", default=[],
                    help="more blobs to measure (e.g. a --quant one, with --activations int8)")
    ap.add_argument("--activations", choices=("fp32", "int8"), default="fp32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds of all variants in turn; the best of the rounds is kept")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--conditions", nargs="+", default=["idle", "busy"],
                    choices=["idle", "busy"])
    args = ap.parse_args()
    missing = [str(b) for b in args.blobs if not b.is_file()]
    if missing:
        ap.error(f"--blobs: not found: {', '.join(missing)}")
    args.work.mkdir(parents=True, exist_ok=True)
    fp32 = args.work / "smollm2-fp32.bump"
    if not fp32.exists():
        from bumpconv.cli import main as cli_main
        if cli_main(["convert", str(args.src), str(fp32), "--quiet", "--no-engine-sidecars"]):
            return 1
    blobs = [fp32, *args.blobs]
    dirs = {v: build(VARIANTS[v][0], args.work) for v in dict.fromkeys(args.variants)}
    print(f"{args.threads} threads, {args.activations} activations, prefill {args.prompt} "
          f"tokens (best of {args.repeats}), decode {args.steps} steps after it (best of "
          f"{args.repeats}), best of {args.rounds} rounds; load before: "
          f"{os.getloadavg()[0]:.2f}")
    for blob in blobs:
        print(blob.name)
        rows: dict[tuple[str, str], dict[str, float]] = {}
        for cond in args.conditions:
            for _ in range(args.rounds):
                for v in args.variants:
                    r = measure(dirs[v], VARIANTS[v][1], blob, args, cond == "busy")
                    best = rows.setdefault((v, cond), r)
                    best["prefill_ms"] = min(best["prefill_ms"], r["prefill_ms"])
                    best["decode_tps"] = max(best["decode_tps"], r["decode_tps"])
            for v in args.variants:
                r = rows[v, cond]
                print(f"  {v:<14} {cond:<5} prefill {r['prefill_ms']:8.1f} ms   "
                      f"decode {r['decode_tps']:7.2f} tok/s", flush=True)
        if "pool" in args.variants:
            print("  relative to pool (>1: faster than the pool):")
            for cond in args.conditions:
                base = rows["pool", cond]
                print(f"    {cond}: " + ", ".join(
                    f"{v} decode {rows[v, cond]['decode_tps'] / base['decode_tps']:.2f} "
                    f"prefill {base['prefill_ms'] / rows[v, cond]['prefill_ms']:.2f}"
                    for v in args.variants if v != "pool"))
        if "idle" in args.conditions and "busy" in args.conditions:
            print("  decode busy / idle: " + ", ".join(
                f"{v} {rows[v, 'busy']['decode_tps'] / rows[v, 'idle']['decode_tps']:.2f}"
                for v in args.variants))
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
