"""The runtime's thread pool against the OpenMP build it replaced, on an idle and a contended
machine (SmolLM2-135M fp32).

Per variant and condition, in a fresh process: prefill of a P-token prompt (ms, best of R) and
S greedy decode steps after that prefill (tok/s, best of R). Variants:

* ``pool``: native/ of this checkout (pool.c: bounded spin, then a futex sleep)
* ``omp-spin1000``: native/ of the last commit built with OpenMP, ``GOMP_SPINCOUNT=1000`` (what
  the package set before the pool)
* ``omp-default``: the same build with libgomp's default spin

Conditions: ``idle``, and ``busy``: one competing process (a Python spin loop, not pinned) runs
for the whole measurement. Each variant is built into ``--work`` from its own sources with
native/build_ffi.py, so the figures compare thread mechanisms, not builds. Figures are printed,
never asserted; the machine may be shared, so compare ratios of one run.

Usage: python bench/bench_pool.py [--work .cache-local/bench-pool] [--threads 2]
       [--variants pool omp-spin1000 omp-default] [--conditions idle busy]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: variant -> (which sources, extra environment)
VARIANTS = {"pool": ("worktree", {}),
            "omp-spin1000": ("openmp", {"GOMP_SPINCOUNT": "1000"}),
            "omp-default": ("openmp", {})}

CHILD = r"""
import json, sys, time
import numpy as np
from bumpconv.run.runtime import BumpModel
blob, threads, P, S, R = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
prompt = np.random.default_rng(0).integers(0, 49152, P).tolist()
with BumpModel.open(blob, threads=threads) as m:
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


def openmp_commit() -> str:
    """The first parent of the commit on the main line that took -fopenmp out of the build (the
    pool arrived as a merge: its first parent is the last OpenMP build with today's C API)."""
    removed = subprocess.run(
        ["git", "log", "-1", "--first-parent", "--diff-merges=first-parent", "--no-patch",
         "--format=%H",
         "-S-fopenmp", "--", "native/build_ffi.py"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    if not removed:
        raise SystemExit("no commit removed -fopenmp from native/build_ffi.py")
    return f"{removed}^1"


def build(which: str, work: Path) -> Path:
    """Build native/ of the working tree or of the OpenMP commit into work/which."""
    out = work / which
    if (out / "build").is_dir():
        return out / "build"
    tree = out / "src"
    tree.mkdir(parents=True, exist_ok=True)
    if which == "worktree":
        shutil.copytree(ROOT / "native", tree / "native", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("build"))
    else:
        archive = subprocess.run(["git", "archive", openmp_commit(), "native"], cwd=ROOT,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    subprocess.run([sys.executable, str(tree / "native" / "build_ffi.py"), "--out",
                    str(out / "build")], check=True, stdout=subprocess.DEVNULL)
    return out / "build"


def measure(native_dir: Path, env_extra: dict[str, str], blob: Path, args: argparse.Namespace,
            busy: bool) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update(env_extra, BUMPCONV_NATIVE_DIR=str(native_dir))
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        time.sleep(0.2 if busy else 0)
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(blob), str(args.threads), str(args.prompt),
             str(args.steps), str(args.repeats)], env=env, capture_output=True, text=True)
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
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--conditions", nargs="+", default=["idle", "busy"],
                    choices=["idle", "busy"])
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    blob = args.work / "smollm2-fp32.bump"
    if not blob.exists():
        from bumpconv.cli import main as cli_main
        if cli_main(["convert", str(args.src), str(blob), "--quiet", "--no-engine-sidecars"]):
            return 1
    dirs = {v: build(VARIANTS[v][0], args.work) for v in args.variants}
    print(f"SmolLM2-135M fp32, {args.threads} threads, prefill {args.prompt} tokens (best of "
          f"{args.repeats}), decode {args.steps} steps after it (best of {args.repeats}); "
          f"load before: {os.getloadavg()[0]:.2f}")
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for cond in args.conditions:
        for v in args.variants:
            r = rows[v, cond] = measure(dirs[v], VARIANTS[v][1], blob, args, cond == "busy")
            print(f"  {v:<14} {cond:<5} prefill {r['prefill_ms']:8.1f} ms   "
                  f"decode {r['decode_tps']:7.2f} tok/s", flush=True)
    if "pool" in args.variants:
        print("decode tok/s relative to pool:")
        for cond in args.conditions:
            base = rows["pool", cond]["decode_tps"]
            print("  " + cond + ": " + ", ".join(
                f"{v} {rows[v, cond]['decode_tps'] / base:.2f}" for v in args.variants))
    if "idle" in args.conditions and "busy" in args.conditions:
        print("decode busy / idle: " + ", ".join(
            f"{v} {rows[v, 'busy']['decode_tps'] / rows[v, 'idle']['decode_tps']:.2f}"
            for v in args.variants))
    return 0


if __name__ == "__main__":
    sys.exit(main())
