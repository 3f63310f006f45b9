"""Single-thread speed of the block codecs (native/quant.c) against gguf-py's numpy codecs.

One 2048x2048 fp32 matrix of normal values; per type, the best of R calls of
``bumpconv.native.quant.quantize`` and ``dequantize``, as MB/s of fp32 (the matrix is 16.8 MB
either way), and the same for ``gguf.quants.quantize``/``dequantize`` where gguf-py has them
(quantizers: q8_0, q4_0, q4_1, q5_0, q5_1; dequantizers: all but q8_K). With ``--peer DIR``
(a llama.cpp build made by ``make peer``, default $BUMPCONV_PEER_DIR) libggml's reference
quantizer (``ggml_quantize_chunk``) is timed too. Every call runs on the calling thread.

The machine is shared: compare ratios from one run, not figures across runs.

Usage: python bench/bench_quant.py [--size 2048] [--repeats 5] [--peer .cache/peer]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench.peer, when it is there

from bumpconv.format.dtypes import DType  # noqa: E402
from bumpconv.native import kernel_name  # noqa: E402
from bumpconv.native.quant import dequantize, quantize  # noqa: E402

TYPES = (DType.Q8_0, DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q4_K, DType.Q5_K,
         DType.Q6_K, DType.Q8_K)
GGUF_QUANTIZERS = {DType.Q8_0, DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1}


def best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def load_peer(peer_dir: Path | None) -> Any:
    """bench/peer.py bound to the libggml in ``peer_dir``, or None."""
    if peer_dir is None or not (peer_dir / "build-info.json").exists():
        return None
    try:
        from bench import peer
    except ImportError:
        return None
    peer.ggml(peer_dir.parent)
    return peer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048, help="rows = cols (a multiple of 256)")
    ap.add_argument("--repeats", type=int, default=5)
    env_peer = os.environ.get("BUMPCONV_PEER_DIR")
    ap.add_argument("--peer", type=Path, default=Path(env_peer) if env_peer else None,
                    help="llama.cpp peer build directory (.cache/peer) to time libggml too")
    args = ap.parse_args(argv)
    if args.size % 256:
        ap.error("--size must be a multiple of 256 (the K-quant block)")

    import gguf
    from gguf.quants import dequantize as gguf_dequantize
    from gguf.quants import quantize as gguf_quantize

    peer = load_peer(args.peer)
    x = np.random.default_rng(0).standard_normal((args.size, args.size)).astype(np.float32)
    mb = x.nbytes / 1e6
    print(f"{args.size}x{args.size} fp32 ({mb:.1f} MB), one thread, best of {args.repeats}; "
          f"{platform.processor() or platform.machine()}, kernels: {kernel_name()}")
    head = "| type | quantize MB/s | gguf-py MB/s | ratio |"
    if peer:
        head += " libggml ref MB/s | ratio |"
    head += " dequantize MB/s | gguf-py MB/s | ratio |"
    print("\n" + head + "\n|" + "---|" * (head.count("|") - 1))
    for t in TYPES:
        q = quantize(x, t)
        ours_q = mb / best_seconds(lambda: quantize(x, t), args.repeats)
        ours_d = mb / best_seconds(lambda: dequantize(q, t, args.size, args.size), args.repeats)
        qt = gguf.GGMLQuantizationType[t.name]
        cells = [t.label, f"{ours_q:.0f}"]
        if t in GGUF_QUANTIZERS:
            theirs = mb / best_seconds(lambda: gguf_quantize(x, qt), max(1, args.repeats // 2))
            cells += [f"{theirs:.0f}", f"{ours_q / theirs:.1f}x"]
        else:
            cells += ["-", "-"]
        if peer:
            name = t.label[:-1] + "K" if t.label.endswith("_k") else t.label
            if t == DType.Q8_K:  # not a ggml_quantize_chunk type
                cells += ["-", "-"]
            else:
                ggml = mb / best_seconds(lambda: peer.ggml_quantize(name, x), args.repeats)
                cells += [f"{ggml:.0f}", f"{ours_q / ggml:.1f}x"]
        cells.append(f"{ours_d:.0f}")
        if t != DType.Q8_K:
            theirs = mb / best_seconds(lambda: gguf_dequantize(q, qt), max(1, args.repeats // 2))
            cells += [f"{theirs:.0f}", f"{ours_d / theirs:.1f}x"]
        else:
            cells += ["-", "-"]
        print("| " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
