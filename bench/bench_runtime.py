"""Speed of the C runtime on SmolLM2-135M, per weight type, against llama.cpp and transformers.

Same machine, same thread count for every engine, each measured in its own fresh process (so
that no engine's idle threads steal time from another). Figures are printed, never asserted:

* open: ``BumpModel.open`` of the blob vs ``from_pretrained`` of the source directory
* prefill: one forward of a P-token prompt from an empty cache, logits of the last token
  (transformers: ``logits_to_keep=1``), best of R
* decode: S greedy steps with the KV cache after that prefill, tokens per second, best of R

Per weight type (``--types``; fp32 and every ``convert --quant`` name) the blob is converted from
the fp32 checkpoint and run with each activation path (``--activations``). When llama.cpp is
built (``make peer``), its GGUF of the same type is made by its own converter and
``llama-quantize`` and timed by ``llama-bench`` (prefill ``-p P``, decode ``-n S -d P``: after
a P-token context, like ours), and the ratios are printed.

The machines this runs on are shared: another tenant's job can halve a figure for a minute. So
the measurement is repeated in ``--rounds`` rounds, and within a round each type's engines run
back to back (llama.cpp, then each of ours): a ratio is taken within one round, where both
sides saw the same machine, and the median (and range) over rounds is printed. The table shows
each engine's best figure over all rounds. "weights/token" is the bytes of
weights a decode step reads (every matrix once; the embedding table only as the tied head), so
``weights/token x tok/s`` is the memory traffic a decode step achieves, to compare with the
machine's bandwidth.

``--level L`` compares like with like below this machine's best instruction set: the runtime
runs the kernels of level L (``BUMPCONV_KERNELS=L``) and llama.cpp is the build of
``python bench/peer_build.py --level L`` (``<cache>/peer-L``: AVX2 without AVX-512 for avx2).

Usage: python bench/bench_runtime.py [--cache .cache] [--threads 2] [--types fp32 q8_0 q4_k_m]
       [--activations fp32 int8] [--attn eager sdpa] [--rounds 3] [--no-peer] [--level avx2]
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
                    repeats: int, activations: str = "fp32") -> dict[str, Any]:
    """The C runtime: open, prefill, decode (runs in a child process)."""
    from bumpconv.native import kernel_name
    from bumpconv.run.runtime import BumpModel

    def open_model() -> BumpModel:
        extra = {} if activations == "fp32" else {"activations": activations}  # fp32: default
        return BumpModel.open(blob, threads=threads, **extra)
    opens = []
    for _ in range(5):
        start = time.perf_counter()
        open_model().close()
        opens.append(time.perf_counter() - start)
    with open_model() as m:
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
    return {"engine": f"bumpconv ({activations} act.)", "detail": kernel_name(),
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


def weights_per_token(blob: Path) -> int:
    """Bytes of weights one decode step reads: every matrix and vector once, the embedding
    table only when it is also the output head (one row is all a step reads otherwise)."""
    from bumpconv.blob.reader import open_blob
    with open_blob(blob) as bf:
        weights = [t for t in bf.tensors if t.slot.content == "weights" and not t.slot.zeros]
        tied = not any(t.slot.role == "lm_head" for t in weights)
        return sum(t.nbytes for t in weights if tied or t.slot.role != "token_emb")


def peer_ggufs(src: Path, types: list[str], threads: int, cache: Path,
               level: str = "native") -> dict[str, Path]:
    """llama.cpp's GGUF per type, made by its own tools when missing (empty: not built)."""
    import peer
    try:
        found = peer.locate(cache, level)
    except (FileNotFoundError, OSError, KeyError) as exc:
        print(f"llama.cpp not measured ({exc})")
        return {}
    out_dir = found.root / "gguf"
    names = {t: ("f32" if t == "fp32" else t) for t in types}
    missing = [n for n in names.values() if not (out_dir / f"{src.name}-{n}.gguf").exists()]
    if missing:
        quantized = tuple(n for n in missing if n not in ("f32", "f16"))
        peer.make_ggufs(src, out_dir, quantized, cache=cache, threads=threads, level=level)
    return {t: out_dir / f"{src.name}-{n}.gguf" for t, n in names.items()}


def measure_peer(gguf: Path, threads: int, prompt: int, steps: int, repeats: int,
                 cache: Path, level: str = "native") -> dict[str, Any]:
    """llama-bench's prefill of ``prompt`` tokens and decode after a ``prompt``-token context."""
    import peer
    pp = peer.bench(gguf, threads, n_prompt=prompt, n_gen=steps, reps=repeats, cache=cache,
                    level=level)
    tg = peer.bench(gguf, threads, n_prompt=prompt, n_gen=steps, reps=repeats,
                    depth=prompt, cache=cache, level=level)
    built = "" if level == "native" else f", built for {level}"
    return {"engine": "llama.cpp", "detail": f"{gguf.name}, {peer.locate(cache, level).commit}"
            f"{built}", "open": float("nan"), "prefill": pp.prefill_ms_best / 1e3,
            "decode": tg.decode_tps_best, "file": gguf.stat().st_size}


def best_over_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One engine's row: its best prefill and decode over the rounds, its median open."""
    return {**rounds[0], "open": statistics.median(r["open"] for r in rounds),
            "prefill": min(r["prefill"] for r in rounds),
            "decode": max(r["decode"] for r in rounds)}


def round_ratios(ours: list[dict[str, Any]], peer_rounds: list[dict[str, Any]],
                 ) -> tuple[list[float], list[float]]:
    """Decode and prefill speed ratios (>1: ours faster), one per round, each within a round."""
    decode = [o["decode"] / p["decode"] for o, p in zip(ours, peer_rounds)]
    prefill = [p["prefill"] / o["prefill"] for o, p in zip(ours, peer_rounds)]
    return decode, prefill


def _spread(ratios: list[float]) -> str:
    text = f"{statistics.median(ratios):.2f}x"
    if len(ratios) > 1:
        text += f" ({min(ratios):.2f}-{max(ratios):.2f})"
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path(".cache"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=128, help="prompt length in tokens")
    ap.add_argument("--steps", type=int, default=64, help="decode steps")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--types", nargs="+", default=["fp32", "q8_0", "q4_0", "q4_k_m"],
                    help="weight types: fp32 and convert --quant names")
    ap.add_argument("--activations", nargs="+", default=["fp32", "int8"],
                    help="the runtime's activation paths to measure (fp32 weights: fp32 only)")
    ap.add_argument("--attn", nargs="*", default=["sdpa"],
                    help="transformers attention implementations to measure (fp32 only)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of every measurement; ratios are taken within a round")
    ap.add_argument("--no-peer", action="store_true", help="skip llama.cpp")
    here = Path(__file__).resolve()
    sys.path[:0] = [str(here.parents[1]), str(here.parent)]  # the repo's tools/, bench/peer.py
    from peer_build import LEVEL_FLAGS
    ap.add_argument("--level", choices=sorted(set(LEVEL_FLAGS) - {"native"}),
                    help="the runtime's kernels at this level (BUMPCONV_KERNELS) against "
                         "llama.cpp built for it (peer_build.py --level); default: both at "
                         "this machine's best")
    args = ap.parse_args()
    if args.rounds < 1 or args.repeats < 1:
        ap.error("--rounds and --repeats must be at least 1")
    level = args.level or "native"
    if args.level:  # inherited by every child process that runs the runtime
        os.environ["BUMPCONV_KERNELS"] = args.level

    from bumpconv.cli import main as cli_main
    from bumpconv.format.engine_policy import refused_quant
    from tools.fixtures import smollm2
    src = smollm2(args.cache, "fp32")
    load_before = os.getloadavg()[0]
    prompt = np.random.default_rng(0).integers(0, 49152, args.prompt).tolist()
    ggufs = {} if args.no_peer else peer_ggufs(src, args.types, args.threads, args.cache, level)
    # (type, engine) -> one result per round; file size and weights/token per type
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        blobs = {}
        for t in args.types:
            blobs[t] = Path(tmp) / f"smollm2-{t}.bump"
            quant = [] if t == "fp32" else ["--quant", t]
            if t != "fp32" and refused_quant(t):  # no engine kernel (q4_0): bumpconv's layout
                quant += ["--profile", "bumpwgt5"]
            if cli_main(["convert", str(src), str(blobs[t]), "--quiet", "--no-engine-sidecars",
                         *quant]):
                return 1
            sizes[t] = blobs[t].stat().st_size, weights_per_token(blobs[t])
        for _ in range(args.rounds):
            for t in args.types:
                if t in ggufs:
                    r = measure_peer(ggufs[t], args.threads, args.prompt, args.steps,
                                     args.repeats, args.cache, level)
                    results.setdefault((t, r["engine"]), []).append(r)
                for act in (["fp32"] if t == "fp32" else args.activations):
                    r = _in_child(measure_runtime, str(blobs[t]), args.threads, prompt,
                                  args.steps, args.repeats, act)
                    results.setdefault((t, r["engine"]), []).append(r)
    if "fp32" in args.types:
        for attn in args.attn:
            r = _in_child(measure_torch, str(src), args.threads, prompt, args.steps,
                          args.repeats, attn)
            results[("fp32", r["engine"])] = [r]

    print(f"SmolLM2-135M on {_cpu_name()}, {args.threads} threads ({os.cpu_count()} CPUs), "
          f"prompt {args.prompt} tokens, {args.steps} decode steps, best of {args.repeats} "
          f"x {args.rounds} rounds")
    print(f"{'type':<8} {'engine':<22} {'file MB':>8} {'open':>9} {'prefill':>10} "
          f"{'decode':>10} {'GB/s':>6}  detail")
    for (t, _), rounds in results.items():
        r = best_over_rounds(rounds)
        size, per_token = sizes[t]
        size = r.get("file", 0 if r["engine"].startswith("transformers") else size)
        print(f"{t:<8} {r['engine']:<22} {size / 1e6:>8.1f} {r['open'] * 1e3:>7.1f}ms "
              f"{r['prefill'] * 1e3:>8.1f}ms {r['decode']:>6.1f} t/s "
              f"{per_token * r['decode'] / 1e9:>6.1f}  {r['detail']}")
    print("ratios against llama.cpp at the same type, within each round (>1: bumpconv is "
          "faster); median (range) over rounds:")
    for (t, engine), rounds in results.items():
        peer_rounds = results.get((t, "llama.cpp"))
        if peer_rounds is None or not engine.startswith("bumpconv"):
            continue
        decode, prefill = round_ratios(rounds, peer_rounds)
        print(f"  {t:<8} {engine:<22} decode {_spread(decode)}, "
              f"prefill-{args.prompt} {_spread(prefill)}")
    print(f"1-minute load average: {load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at "
          "the end (about the thread count is this run alone; more means other jobs competed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
