"""Speed of the C runtime against PyTorch (transformers) on SmolLM2-135M fp32.

Same machine, same thread count for both (``torch.set_num_threads(N)``, N OpenMP threads in
the runtime), each engine measured in its own fresh process so that neither OpenMP runtime's
spinning threads steal time from the other. Figures are printed, never asserted:

* open: ``BumpModel.open`` of the blob vs ``from_pretrained`` of the source directory
* prefill: one forward of a P-token prompt from an empty cache, logits of the last token
  (transformers: ``logits_to_keep=1``), best of R
* decode: S greedy steps with the KV cache after that prefill, tokens per second, best of R

Usage: python bench/bench_runtime.py [--cache .cache] [--threads 2] [--prompt 128] [--steps 64]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np


def _best(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure_runtime(blob: str, threads: int, prompt: list[int], steps: int,
                    repeats: int) -> dict[str, Any]:
    """The C runtime: open, prefill, decode (runs in a child process)."""
    from bumpconv.native import kernel_name
    from bumpconv.run.runtime import BumpModel
    opens = []
    for _ in range(5):
        start = time.perf_counter()
        BumpModel.open(blob, threads=threads).close()
        opens.append(time.perf_counter() - start)
    with BumpModel.open(blob, threads=threads) as m:
        m.prefill(prompt)  # fault the mapping in: every figure below is warm
        prefill = _best(lambda: m.prefill(prompt), repeats)

        def decode() -> None:
            logits = m.prefill(prompt)
            start = time.perf_counter()
            for _ in range(steps):
                logits = m.decode(int(np.argmax(logits)))
            rates.append(steps / (time.perf_counter() - start))
        rates: list[float] = []
        for _ in range(repeats):
            decode()
    return {"engine": "bumpconv C runtime", "detail": kernel_name(),
            "open": statistics.median(opens), "prefill": prefill, "decode": max(rates)}


def measure_torch(src: str, threads: int, prompt: list[int], steps: int, repeats: int,
                  attn: str) -> dict[str, Any]:
    """transformers with a KV cache, fp32, attention implementation ``attn`` (child process)."""
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(threads)
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32,
                                                 attn_implementation=attn).eval()
    opened = time.perf_counter() - start
    ids = torch.tensor([prompt])
    rates: list[float] = []
    with torch.inference_mode():
        model(ids, use_cache=True, logits_to_keep=1)
        prefill = _best(lambda: model(ids, use_cache=True, logits_to_keep=1), repeats)
        for _ in range(repeats):
            out = model(ids, use_cache=True, logits_to_keep=1)
            cache, token = out.cache, out.logits[:, -1:].argmax(-1)
            start = time.perf_counter()
            for _ in range(steps):
                out = model(token, cache=cache, use_cache=True)
                cache, token = out.cache, out.logits[:, -1:].argmax(-1)
            rates.append(steps / (time.perf_counter() - start))
    return {"engine": f"transformers {attn}", "detail": f"torch {torch.__version__}",
            "open": opened, "prefill": prefill, "decode": max(rates)}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _in_child(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path(".cache"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=128, help="prompt length in tokens")
    ap.add_argument("--steps", type=int, default=64, help="decode steps")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--attn", nargs="+", default=["eager", "sdpa"],
                    help="transformers attention implementations to measure")
    args = ap.parse_args()

    from bumpconv.cli import main as cli_main
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's tools/
    from tools.fixtures import smollm2
    src = smollm2(args.cache, "fp32")
    load_before = os.getloadavg()[0]
    prompt = np.random.default_rng(0).integers(0, 49152, args.prompt).tolist()
    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        blob = Path(tmp) / "smollm2.bump"
        if cli_main(["convert", str(src), str(blob), "--quiet"]):
            return 1
        rows = [_in_child(measure_runtime, str(blob), args.threads, prompt, args.steps,
                          args.repeats)]
    for attn in args.attn:
        rows.append(_in_child(measure_torch, str(src), args.threads, prompt, args.steps,
                              args.repeats, attn))

    print(f"SmolLM2-135M fp32 on {_cpu_name()}, "
          f"{args.threads} threads ({os.cpu_count()} CPUs), prompt {args.prompt} tokens, "
          f"{args.steps} decode steps, best of {args.repeats}")
    print(f"{'engine':<22} {'open':>10} {'prefill':>10} {'decode':>12}   detail")
    for r in rows:
        print(f"{r['engine']:<22} {r['open'] * 1e3:>8.1f}ms {r['prefill'] * 1e3:>8.1f}ms "
              f"{r['decode']:>8.1f} t/s   {r['detail']}")
    print(f"1-minute load average at the start: {load_before:.2f} (anything else running "
          "competes for the cores and makes every figure meaningless)")
    ours = rows[0]
    for r in rows[1:]:
        print(f"vs {r['engine']}: open {r['open'] / ours['open']:.0f}x faster, prefill "
              f"{r['prefill'] / ours['prefill']:.2f}x, decode {ours['decode'] / r['decode']:.2f}x "
              "(>1: the C runtime is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
