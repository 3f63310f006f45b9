"""Convert speed and memory: `bumpconv convert` vs `cp` of the same source, in one run.

Prints figures; asserts nothing (machines are shared and noisy: compare ratios measured in the
same run). Each command runs in a fresh process under `/usr/bin/time -v` for wall time and
peak RSS, after `sync` so no earlier run's dirty pages are flushed on its clock. Runs of the
two commands are interleaved and the median is reported.

Sources: SmolLM2-135M fp32 and bf16 (built by tools.fixtures), and two synthetic
~1B-parameter llama checkpoints (random bf16 weights, written here: a 1B geometry and a 13B-wide
geometry with 2 layers) to show that peak memory does not grow with model size.

Quantized conversion (``--quant q4_k_m q8_0``, SmolLM2 fp32): ``convert --quant NAME`` against
the fp32 conversion of the same run and, when llama.cpp is built (``make peer``), against its
own flow for the same file type: ``convert_hf_to_gguf.py --outtype f16`` then ``llama-quantize``
(2 threads), timed end to end.

    python bench/bench_convert.py [--cache .cache] [--repeat 3] [--skip-1b] [--quant q4_k_m ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ONE_B = dict(model_type="llama", hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
             num_key_value_heads=8, intermediate_size=8192, vocab_size=32000,
             max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False,
             rope_theta=500000.0, hidden_act="silu", torch_dtype="bfloat16")
#: About as many parameters in a 13B model's geometry (2 layers): its o_proj (50 MiB bf16) is
#: over the writer's whole-source cap, so this exercises the bounded strided path for WO.
ONE_B_WIDE = {**ONE_B, "hidden_size": 5120, "num_hidden_layers": 2, "num_attention_heads": 40,
              "num_key_value_heads": 40, "intermediate_size": 13824}


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of ``cmd`` in a fresh process, after a sync."""
    subprocess.run(["sync"], check=True)
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", r.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    assert wall and rss
    parts = [float(p) for p in wall.group(1).split(":")]
    seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return seconds, int(rss.group(1))


def prewarm_memory(gib: int) -> None:
    """Touch ``gib`` GiB of RAM once, in a child process that then exits.

    On a microVM (this project's CI and dev machines), the first touch of a guest page costs a
    host page fault: writing 512 MB into never-used page cache measured 1.2 s, and 0.09 s once
    the memory had been touched before. Without this, whichever command first needs fresh page
    cache pays the hypervisor's cost, not its own.
    """
    subprocess.run([sys.executable, "-c",
                    f"import numpy as np; a = np.ones(({gib} << 30) // 8); a[::512] += 1"],
                   check=True)


def write_synthetic(dst: Path, cfg: dict) -> Path:
    """A llama checkpoint of random bf16 weights, written tensor by tensor (bounded memory)."""
    if (dst / "model.safetensors").exists():
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    E, I, V, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    D = E // cfg["num_attention_heads"]
    KV = cfg["num_key_value_heads"] * D
    shapes: dict[str, list[int]] = {"model.embed_tokens.weight": [V, E], "model.norm.weight": [E],
                                    "lm_head.weight": [V, E]}
    for i in range(L):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": [E], p + "post_attention_layernorm.weight": [E],
                       p + "self_attn.q_proj.weight": [E, E], p + "self_attn.k_proj.weight": [KV, E],
                       p + "self_attn.v_proj.weight": [KV, E], p + "self_attn.o_proj.weight": [E, E],
                       p + "mlp.gate_proj.weight": [I, E], p + "mlp.up_proj.weight": [I, E],
                       p + "mlp.down_proj.weight": [E, I]})
    header, offset = {}, 0
    for name in sorted(shapes):
        n = int(np.prod(shapes[name])) * 2
        header[name] = {"dtype": "BF16", "shape": shapes[name], "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    rng = np.random.default_rng(0)
    block = (rng.standard_normal(1 << 22).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    tmp = dst / "model.safetensors.partial"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name in sorted(shapes):
            left = int(np.prod(shapes[name]))
            while left:
                k = min(left, block.size)
                f.write(block[:k].tobytes())
                left -= k
    tmp.rename(dst / "model.safetensors")
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    return dst


def bench(label: str, src: Path, out_dir: Path, repeat: int, bumpconv: str) -> dict:
    st = sorted(src.glob("*.safetensors"))
    src_bytes = sum(p.stat().st_size for p in st)
    out = out_dir / "out.bump"
    cp_dst = out_dir / "copy.safetensors"
    conv, cps, cps_sync, rss = [], [], [], []
    for _ in range(repeat):
        for p in (out, cp_dst):
            p.unlink(missing_ok=True)
        w, _ = timed(["cp", str(st[0]), str(cp_dst)])
        cps.append(w)
        cp_dst.unlink()
        w, _ = timed(["sh", "-c", f"cp '{st[0]}' '{cp_dst}' && sync -f '{cp_dst}'"])
        cps_sync.append(w)
        w, r = timed([bumpconv, "convert", str(src), str(out), "--quiet", "--no-engine-sidecars"])
        conv.append(w)
        rss.append(r)
    row = dict(label=label, source_mb=src_bytes / 1e6, output_mb=out.stat().st_size / 1e6,
               convert_s=statistics.median(conv), cp_s=statistics.median(cps),
               cp_sync_s=statistics.median(cps_sync), rss_mb=max(rss) / 1024)
    row["ratio_cp"] = row["convert_s"] / row["cp_s"]
    row["ratio_cp_sync"] = row["convert_s"] / row["cp_sync_s"]
    out.unlink()
    return row


def bench_quant(src: Path, out_dir: Path, repeat: int, bumpconv: str, quants: list[str],
                cache: Path) -> None:
    """Quantized conversion against fp32 and against llama.cpp's convert + quantize."""
    out = out_dir / "q.bump"

    def ours(extra: list[str]) -> tuple[float, int]:
        runs = []
        for _ in range(repeat):
            out.unlink(missing_ok=True)
            runs.append(timed([bumpconv, "convert", str(src), str(out), "--quiet", "--force",
                               "--no-engine-sidecars", *extra]))
        return statistics.median(w for w, _ in runs), max(r for _, r in runs)
    fp32_s, fp32_rss = ours([])
    print(f"SmolLM2-135M fp32 -> fp32 blob: {fp32_s:.2f} s, peak RSS {fp32_rss / 1024:.0f} MB")
    try:
        import peer
        tools = peer.locate(cache)
        env = peer.converter_env(tools)
    except (ImportError, FileNotFoundError) as exc:
        tools, env = None, None
        print(f"llama.cpp not measured ({exc})")
    for q in quants:
        w, r = ours(["--quant", q])
        line = (f"--quant {q}: {w:.2f} s ({w / fp32_s:.2f}x the fp32 conversion), peak RSS "
                f"{r / 1024:.0f} MB, {out.stat().st_size / 1e6:.1f} MB")
        if tools is not None:
            f16 = out_dir / "peer-f16.gguf"
            qg = out_dir / f"peer-{q}.gguf"
            conv = [timed([sys.executable, str(tools.source / "convert_hf_to_gguf.py"), str(src),
                           "--outfile", str(f16), "--outtype", "f16"], env)[0]
                    for _ in range(repeat)]
            quant = [timed([str(tools.tool("llama-quantize")), str(f16), str(qg), q.upper(),
                            "2"])[0] for _ in range(repeat)]
            theirs = statistics.median(conv) + statistics.median(quant)
            line += (f"; llama.cpp convert f16 {statistics.median(conv):.2f} s + quantize "
                     f"{statistics.median(quant):.2f} s = {theirs:.2f} s ({theirs / w:.2f}x ours)")
            f16.unlink(missing_ok=True)
            qg.unlink(missing_ok=True)
        print(line, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=Path(".cache"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-1b", action="store_true")
    ap.add_argument("--quant", nargs="*", default=["q4_k_m", "q8_0"],
                    help="quantized conversions to time on SmolLM2 fp32 (none: skip)")
    ap.add_argument("--prewarm-gib", type=int, default=12,
                    help="RAM to touch before measuring (0 = off); see prewarm_memory")
    args = ap.parse_args()
    here = Path(__file__).resolve()
    sys.path[:0] = [str(here.parents[1]), str(here.parent)]  # the repo's tools/, bench/peer.py
    from tools.fixtures import smollm2
    bumpconv = shutil.which("bumpconv", path=os.path.dirname(sys.executable)) or "bumpconv"
    sources = [("SmolLM2-135M fp32", smollm2(args.cache, "fp32")),
               ("SmolLM2-135M bf16", smollm2(args.cache, "bf16"))]
    if not args.skip_1b:
        sources.append(("synthetic 1.1B bf16", write_synthetic(args.cache / "synthetic-1b", ONE_B)))
        sources.append(("synthetic 1.0B wide", write_synthetic(args.cache / "synthetic-1b-wide",
                                                                ONE_B_WIDE)))
    if args.prewarm_gib:
        prewarm_memory(args.prewarm_gib)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        for label, src in sources:
            rows.append(bench(label, src, Path(tmp), args.repeat, bumpconv))
            r = rows[-1]
            print(f"{r['label']:<22} src {r['source_mb']:8.0f} MB -> {r['output_mb']:8.0f} MB  "
                  f"convert {r['convert_s']:6.2f} s  cp {r['cp_s']:5.2f} s  cp+sync "
                  f"{r['cp_sync_s']:5.2f} s  ratio {r['ratio_cp']:4.2f}x cp, "
                  f"{r['ratio_cp_sync']:4.2f}x cp+sync  peak RSS {r['rss_mb']:5.0f} MB", flush=True)
        if args.quant:
            bench_quant(sources[0][1], Path(tmp), args.repeat, bumpconv, args.quant, args.cache)
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
