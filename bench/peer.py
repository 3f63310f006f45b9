"""llama.cpp as the speed and correctness peer (benchmarks and optional oracle tests, never CI).

Needs ``make peer`` (``bench/peer_build.py``) first; everything lives under ``.cache/peer/``.

* ``locate()``: the built tools and shared libraries.
* ``make_ggufs()``: HF dir -> GGUF f32/f16 with llama.cpp's own ``convert_hf_to_gguf.py`` (from
  the unpacked sdist, with its vendored gguf-py first on PYTHONPATH), then ``llama-quantize``
  (no imatrix) from the f16 file, the usual llama.cpp flow. Each step is timed (wall seconds,
  peak RSS from ``/usr/bin/time -v``) to compare with bumpconv's converter end to end.
* ``bench()``: ``llama-bench`` prefill and decode figures.
* ``requantize_gguf()``: an f32 GGUF with its matrices quantized by the oracle below.
* ``ggml_quantize()`` / ``ggml_dequantize()``: libggml's own quantizers through ctypes, the
  oracle for the project's C quantizer. ``ggml_quantize_chunk(type, src, dst, 0, nrows,
  n_per_row, imatrix=NULL)`` dispatches to ``quantize_<type>()`` in ggml-quants.c, and with
  ``quant_weights == NULL`` each of q4_0, q4_1, q5_0, q5_1, q8_0 (q8_0 always), q2_K, q3_K, q4_K,
  q5_K and q6_K calls ``quantize_row_<type>_ref(src, dst, nrow * n_per_row)`` - the reference
  (scalar) quantizers, read in the vendored ggml/src/ggml-quants.c of llama.cpp 0c1e57098.
  That is also exactly what ``llama-quantize`` does without ``--imatrix``. Dequantization is
  ``ggml_get_type_traits(type)->to_float`` (``dequantize_row_<type>``, also in ggml-base).
  The ggml_type enum values are parsed from the vendored ggml.h and cross-checked against each
  type's ``type_name`` in the library; the ``ggml_type_traits`` layout is checked against the
  header text, so a llama.cpp with a different layout fails loudly instead of reading garbage.
  ggml-base (ggml.c, ggml-quants.c) is compiled without -march=native, so these bytes do not
  depend on the build machine's SIMD. Bad shapes are refused here: in C they are GGML_ASSERTs
  that abort the whole process.

CLI::

    python bench/peer.py --locate
    python bench/peer.py --selftest
    python bench/peer.py --crosscheck .cache/peer/gguf/NAME-f32.gguf  # vs llama-quantize
    python bench/peer.py --report HF_DIR [--out DIR] [--threads 2] [--reps 5] [--reuse]
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

if __package__:  # imported as bench.peer (the tests)
    from .peer_build import peer_dir
else:  # run from bench/, or imported with bench/ on sys.path
    from peer_build import peer_dir

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO / ".cache"
# llama-quantize type names (no imatrix needed for any of these).
QUANT_TYPES = ("q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k", "q5_0", "q5_1", "q4_k_s")
# The only extra package convert_hf_to_gguf.py needs beyond bumpconv's venv: Llama/Qwen2/Qwen3
# set_vocab() try SentencePiece first and `from sentencepiece import ...` runs before the
# tokenizer.model existence check, so the import must succeed even for BPE tokenizers.
CONVERTER_DEPS = ("sentencepiece>=0.1.98,<0.3.0",)


# ----------------------------------------------------------------------------- locate

@dataclass(frozen=True)
class Peer:
    """What ``make peer`` built: tool and library paths, the llama.cpp source tree."""
    tools: dict[str, Path]
    libs: dict[str, Path]
    source: Path  # vendor/llama.cpp of the unpacked sdist
    commit: str
    root: Path  # <cache>/peer

    def tool(self, name: str) -> Path:
        return self.tools[name]


def locate(cache: Path = DEFAULT_CACHE, level: str = "native") -> Peer:
    """Paths of the built llama.cpp (``level``: this machine's SIMD, or the build of
    ``peer_build.py --level``); a clear error if it has not been built."""
    root = peer_dir(cache, level)
    info_path = root / "build-info.json"
    if not info_path.exists():
        how = "`make peer`" if level == "native" else f"`python bench/peer_build.py --level {level}`"
        raise FileNotFoundError(f"{info_path} not found: run {how} (bench/peer_build.py) first")
    info = json.loads(info_path.read_text())
    tools = {k: Path(v) for k, v in info["tools"].items()}
    libs = {k: Path(v) for k, v in info["libs"].items()}
    missing = [str(p) for p in [*tools.values(), *libs.values()] if not p.exists()]
    if missing:
        raise FileNotFoundError(f"peer build incomplete ({missing}): run `make peer` again")
    return Peer(tools, libs, Path(info["source"]), info["llama_cpp_commit"], root)


# ----------------------------------------------------------------------------- timing

@dataclass
class Step:
    """One timed command: wall seconds, peak RSS (MB, None without GNU time), output size."""
    name: str
    seconds: float
    peak_rss_mb: float | None
    output: Path
    size: int = 0
    log: str = field(default="", repr=False)


def timed(name: str, cmd: list[str], output: Path, env: dict[str, str] | None = None) -> Step:
    """Run ``cmd`` under ``/usr/bin/time -v`` when available; fail with its log on error."""
    gnu_time = Path("/usr/bin/time")
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        full = [str(gnu_time), "-v", "-o", tf.name, *cmd] if gnu_time.exists() else cmd
        t0 = time.perf_counter()
        proc = subprocess.run(full, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        log = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed ({proc.returncode}): {' '.join(cmd)}\n{log[-4000:]}")
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", tf.read())
    rss = int(m.group(1)) / 1024 if m else None
    return Step(name, seconds, rss, output, output.stat().st_size, log)


# ----------------------------------------------------------------------------- GGUFs

def converter_env(peer: Peer, python: str = sys.executable) -> dict[str, str]:
    """Environment for convert_hf_to_gguf.py: vendored gguf-py first, then the extra deps.

    Extra packages go to ``<peer>/pydeps`` with ``pip install --target`` (a directory that only
    this PYTHONPATH sees), so bumpconv's venv is never modified and torch/transformers need no
    second install. Installed once, on first use.
    """
    pydeps = peer.root / "pydeps"
    if not (pydeps / ".installed").exists():
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                        str(pydeps), *CONVERTER_DEPS], check=True)
        (pydeps / ".installed").touch()
    env = dict(os.environ)
    paths = [str(peer.source / "gguf-py"), str(pydeps), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def make_ggufs(hf_dir: Path, out_dir: Path, types: tuple[str, ...] = QUANT_TYPES,
               cache: Path = DEFAULT_CACHE, python: str = sys.executable,
               threads: int = 2, level: str = "native") -> dict[str, Step]:
    """HF dir -> ``<name>-f32.gguf``, ``-f16.gguf`` and one file per llama-quantize type.

    Every file is rebuilt (the point is the timings). Quantized files come from the f16 GGUF,
    as in llama.cpp's README flow; K-quant types fall back to q5_0/q8_0-style types for
    tensors whose row length is not a multiple of 256 (llama-quantize prints which).
    """
    peer = locate(cache, level)
    env = converter_env(peer, python)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = hf_dir.resolve().name
    steps: dict[str, Step] = {}
    for outtype in ("f32", "f16"):
        out = out_dir / f"{stem}-{outtype}.gguf"
        steps[outtype] = timed(f"convert {outtype}", [
            python, str(peer.source / "convert_hf_to_gguf.py"), str(hf_dir),
            "--outfile", str(out), "--outtype", outtype], out, env)
    for t in types:
        out = out_dir / f"{stem}-{t}.gguf"
        steps[t] = timed(f"quantize {t}", [
            str(peer.tool("llama-quantize")), str(steps["f16"].output), str(out), t.upper(),
            str(threads)], out)
    return steps


# ----------------------------------------------------------------------------- llama-bench

@dataclass(frozen=True)
class BenchResult:
    """llama-bench figures: prefill of n_prompt tokens (ms) and decode rate (tok/s)."""
    prefill_ms_avg: float
    prefill_ms_best: float
    decode_tps_avg: float
    decode_tps_best: float
    depth: int
    flash_attn: str
    raw: list[dict[str, object]] = field(repr=False)


def bench(gguf: Path, threads: int = 2, n_prompt: int = 128, n_gen: int = 64, reps: int = 3,
          depth: int = 0, cache: Path = DEFAULT_CACHE, level: str = "native") -> BenchResult:
    """``llama-bench -m FILE -t T -p P -n N -r R -d D -o json``.

    ``-d D`` fills the KV cache with D tokens before each test; decode after a 128-token prompt
    (what bench_runtime.py measures) is ``depth=128``. Best = min time / max rate over reps.
    """
    cmd = [str(locate(cache, level).tool("llama-bench")), "-m", str(gguf), "-t", str(threads),
           "-p", str(n_prompt), "-n", str(n_gen), "-r", str(reps), "-d", str(depth), "-o", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rows = json.loads(proc.stdout)
    pp = next(r for r in rows if r["n_prompt"] == n_prompt and r["n_gen"] == 0)
    tg = next(r for r in rows if r["n_gen"] == n_gen and r["n_prompt"] == 0)
    return BenchResult(pp["avg_ns"] / 1e6, min(pp["samples_ns"]) / 1e6, tg["avg_ts"],
                       max(tg["samples_ts"]), depth, str(pp.get("flash_attn")), rows)


# ----------------------------------------------------------------------------- ggml oracle

_TRAITS_DECL = """struct ggml_type_traits {
const char * type_name;
int64_t blck_size;
int64_t blck_size_interleave;
size_t type_size;
bool is_quantized;
ggml_to_float_t to_float;
ggml_from_float_t from_float_ref;
};"""

_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


class _Traits(ctypes.Structure):
    """Mirror of ``struct ggml_type_traits`` (layout checked against ggml.h in ``_Ggml``)."""
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                ("from_float_ref", ctypes.c_void_p)]


def ggml_type_enum(ggml_h: Path) -> dict[str, int]:
    """``enum ggml_type`` from the header text: lower-case name -> value (comments skipped)."""
    text = ggml_h.read_text()
    body = text[text.index("enum ggml_type {"):]
    body = body[:body.index("};")]
    body = re.sub(r"//[^\n]*", "", body)
    return {m.group(1).lower(): int(m.group(2))
            for m in re.finditer(r"GGML_TYPE_(\w+)\s*=\s*(\d+)", body) if m.group(1) != "COUNT"}


class _Ggml:
    """libggml-base loaded once, with the type enum verified against the library."""

    def __init__(self, lib: Path, ggml_h: Path) -> None:
        header = re.sub(r"\s+", " ", re.sub(r"//[^\n]*", "", ggml_h.read_text()))
        if re.sub(r"\s+", " ", _TRAITS_DECL) not in header:
            raise RuntimeError(f"struct ggml_type_traits in {ggml_h} differs from _Traits")
        self.lib = ctypes.CDLL(str(lib))
        self.lib.ggml_get_type_traits.restype = ctypes.POINTER(_Traits)
        self.lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
        self.lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        self.lib.ggml_quantize_chunk.argtypes = [
            ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
            ctypes.c_int64, ctypes.c_void_p]
        self.lib.ggml_row_size.restype = ctypes.c_size_t
        self.lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
        self.lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
        self.lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
        self.types = ggml_type_enum(ggml_h)
        for name, value in self.types.items():
            got = self.traits(value).type_name
            if got is None or got.decode().lower() != name:
                raise RuntimeError(f"GGML_TYPE_{name.upper()} = {value} but the library calls it {got!r}")

    def traits(self, value: int) -> _Traits:
        return self.lib.ggml_get_type_traits(value).contents

    def type_value(self, name: str) -> int:
        try:
            return self.types[name.lower()]
        except KeyError:
            raise ValueError(f"unknown ggml type {name!r}; known: {sorted(self.types)}") from None


_GGML: _Ggml | None = None


def ggml(cache: Path = DEFAULT_CACHE, lib: Path | None = None,
         ggml_h: Path | None = None) -> _Ggml:
    """The loaded, verified libggml-base (once per process; the first call's arguments win).

    Default: the ``make peer`` build. ``lib`` + ``ggml_h`` load a lone libggml-base instead
    (``cmake --build B --target ggml-base``, 19 s) - all the quantizer oracle needs.
    """
    global _GGML
    if _GGML is None:
        if lib is None or ggml_h is None:
            peer = locate(cache)
            lib, ggml_h = peer.libs["libggml-base.so"], peer.source / "ggml/include/ggml.h"
        _GGML = _Ggml(lib, ggml_h)
    return _GGML


def ggml_quantize(type_name: str, data: np.ndarray) -> bytes:
    """libggml's ``ggml_quantize_chunk`` on a float32 [rows, cols] array, imatrix NULL."""
    g = ggml()
    t = g.type_value(type_name)
    src = np.ascontiguousarray(data, dtype=np.float32)
    if src.ndim != 2:
        raise ValueError(f"expected [rows, cols], got shape {src.shape}")
    rows, cols = src.shape
    blck = g.traits(t).blck_size
    if cols % blck:
        raise ValueError(f"{type_name}: cols {cols} is not a multiple of the block size {blck}")
    if g.lib.ggml_quantize_requires_imatrix(t):
        raise ValueError(f"{type_name} needs an importance matrix")
    size = g.lib.ggml_row_size(t, cols) * rows
    dst = ctypes.create_string_buffer(size)
    written = g.lib.ggml_quantize_chunk(t, src.ctypes.data, dst, 0, rows, cols, None)
    if written != size:
        raise RuntimeError(f"ggml_quantize_chunk wrote {written} bytes, expected {size}")
    return dst.raw


def ggml_dequantize(type_name: str, data: bytes, rows: int, cols: int) -> np.ndarray:
    """``ggml_get_type_traits(type)->to_float`` over ``rows * cols`` elements -> float32."""
    g = ggml()
    t = g.type_value(type_name)
    if len(data) != g.lib.ggml_row_size(t, cols) * rows:
        raise ValueError(f"{type_name}: {len(data)} bytes do not hold [{rows}, {cols}]")
    fn = g.traits(t).to_float
    if not fn:
        raise ValueError(f"{type_name} has no to_float")
    out = np.empty((rows, cols), dtype=np.float32)
    src = ctypes.create_string_buffer(bytes(data), len(data))
    _TO_FLOAT(fn)(ctypes.addressof(src), out.ctypes.data, rows * cols)
    return out


def requantize_gguf(src: Path, dst: Path, type_name: str) -> int:
    """Copy an f32 GGUF, every 2-D tensor whose rows fit the block size quantized by libggml.

    A K-quant test GGUF without llama-quantize (only libggml-base, a 19 s build, is needed):
    like ``llama-quantize --pure`` (same bytes per tensor, see ``crosscheck``) except that rows
    that do not fit stay f32 instead of falling back to another type. Returns how many tensors
    were quantized. Works with PyPI's gguf 0.19.0 and the vendored gguf-py alike.
    """
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter

    reader = GGUFReader(src)
    writer = GGUFWriter(dst, reader.fields["general.architecture"].contents())
    for key, f in reader.fields.items():
        if not key.startswith("GGUF.") and key != "general.architecture":
            sub = f.types[-1] if f.types[0] == GGUFValueType.ARRAY else None
            writer.add_key_value(key, f.contents(), f.types[0], sub)
    qt = GGMLQuantizationType[type_name.upper()]
    quantized = 0
    for t in reader.tensors:
        x = np.asarray(t.data, dtype=np.float32)
        if x.ndim == 2 and x.shape[1] % GGML_QUANT_SIZES[qt][0] == 0:
            q = np.frombuffer(ggml_quantize(type_name, x), np.uint8).reshape(x.shape[0], -1)
            writer.add_tensor(t.name, q, raw_dtype=qt)
            quantized += 1
        else:
            writer.add_tensor(t.name, x)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return quantized


# ----------------------------------------------------------------------------- selftest

ROUND_TRIP_TYPES = ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_K", "q3_K", "q4_K", "q5_K",
                    "q6_K")
NUMPY_QUANT_TYPES = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1")


def _test_data(rows: int, cols: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs that reach the quantizers' edge cases, by name.

    gauss: rows with scales over 6 decades, outliers, one all-zero block (scale 0 paths);
    ties: small integers, so x / d lands exactly on .5 and the rounding rule shows;
    tiny: magnitudes ~1e-6, so fp16 scales are subnormal.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    x *= (10.0 ** rng.uniform(-4, 2, size=(rows, 1))).astype(np.float32)
    x[rng.random((rows, cols)) < 0.001] *= 50
    x[0, :64] = 0.0
    ties = rng.integers(-16, 17, size=(rows, cols)).astype(np.float32)
    tiny = (rng.standard_normal((rows, cols)) * 1e-6).astype(np.float32)
    return {"gauss": x, "ties": ties, "tiny": tiny}


def selftest(rows: int = 64, cols: int = 1024) -> bool:
    """ggml vs gguf-py: dequantization bit for bit, numpy quantizers block for block."""
    import gguf  # bumpconv's venv: gguf 0.19.0 from PyPI
    from gguf.quants import dequantize, quantize

    g = ggml()
    print(f"llama.cpp {locate().commit}; gguf from {gguf.__file__}")
    print("enum ggml_type (ggml.h, checked against traits.type_name):",
          {k: g.types[k.lower()] for k in ROUND_TRIP_TYPES})
    data = _test_data(rows, cols)
    ok = True
    print(f"\nround trip on [{rows}, {cols}] x {list(data)}: ggml to_float vs gguf.quants.dequantize")
    for name in ROUND_TRIP_TYPES:
        qt = gguf.GGMLQuantizationType[name.upper()]
        blck, tsize = gguf.GGML_QUANT_SIZES[qt]
        tr = g.traits(g.type_value(name))
        assert (tr.blck_size, tr.type_size) == (blck, tsize), (name, tr.blck_size, tr.type_size)
        line = f"  {name:5s} block {blck:3d} x {tsize:3d} B"
        for dname, x in data.items():
            q = ggml_quantize(name, x)
            ours = ggml_dequantize(name, q, rows, cols)
            theirs = dequantize(np.frombuffer(q, np.uint8).reshape(rows, -1), qt)
            same = ours.view(np.uint32) == np.asarray(theirs, np.float32).view(np.uint32)
            err = np.max(np.abs(ours - x), axis=1) / np.maximum(np.max(np.abs(x), axis=1), 1e-30)
            ok &= bool(same.all())
            line += f" | {dname}: identical {same.mean():7.2%}, worst row err {err.max():.3g}"
        print(line)
    print("\nquantize: ggml_quantize_chunk vs gguf.quants.quantize (identical blocks)")
    for name in NUMPY_QUANT_TYPES:
        qt = gguf.GGMLQuantizationType[name.upper()]
        tsize = gguf.GGML_QUANT_SIZES[qt][1]
        line = f"  {name:5s}"
        for dname, x in data.items():
            ours_b = np.frombuffer(ggml_quantize(name, x), np.uint8).reshape(-1, tsize)
            theirs_b = np.asarray(quantize(x, qt), dtype=np.uint8).reshape(-1, tsize)
            same = (ours_b == theirs_b).all(axis=1)
            line += f" | {dname}: {same.mean():8.4%} of {len(same)}"
        print(line)
    print("\nselftest", "passed" if ok else "FAILED (round trip not bit-identical)")
    return ok


def crosscheck(f32_gguf: Path, types: tuple[str, ...] = ("q8_0", "q5_0", "q4_k_m", "q6_k"),
               cache: Path = DEFAULT_CACHE) -> bool:
    """``llama-quantize --pure`` vs ``ggml_quantize`` on every quantized tensor, byte for byte.

    Shows the ctypes oracle is what llama.cpp itself writes (K-quant types fall back per tensor
    when the row length is not a multiple of 256; each tensor is checked as the type it got).
    """
    from gguf import GGUFReader  # PyPI gguf reads the tensor table; the bytes are what matter

    src = {t.name: t for t in GGUFReader(f32_gguf).tensors}
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for t in types:
            out = Path(tmp) / f"{t}.gguf"
            subprocess.run([str(locate(cache).tool("llama-quantize")), "--pure", str(f32_gguf),
                            str(out), t.upper(), "2"], check=True, capture_output=True)
            stats: dict[str, list[int]] = {}
            for ten in GGUFReader(out).tensors:
                ty = ten.tensor_type.name.lower()
                if ty in ("f32", "f16"):
                    continue
                x = np.asarray(src[ten.name].data, dtype=np.float32)
                same = ggml_quantize(ty, x.reshape(-1, x.shape[-1])) == ten.data.tobytes()
                st = stats.setdefault(ty, [0, 0])
                st[0] += same
                st[1] += 1
                ok &= same
            print(f"  llama-quantize --pure {t.upper()}: " + ", ".join(
                f"{ty} {a}/{b} tensors identical" for ty, (a, b) in stats.items()))
    return ok


# ----------------------------------------------------------------------------- report

def report(hf_dir: Path, out_dir: Path, threads: int, reps: int = 5, reuse: bool = False,
           bench_types: tuple[str, ...] = ("f32", "f16", "q8_0", "q4_0", "q4_k_m", "q5_k_m",
                                           "q6_k")) -> None:
    """Make every GGUF (timed) unless ``reuse``, then llama-bench ``bench_types``; markdown out.

    ``os.sync()`` first: right after writing ~1.7 GB of GGUFs, page-cache writeback otherwise
    halves the first decode figures on this 2-core machine.
    """
    if not reuse:
        steps = make_ggufs(hf_dir, out_dir, threads=threads)
        print("\n| step | output | wall s | peak RSS MB |\n|---|---|---|---|")
        for s in steps.values():
            rss = f"{s.peak_rss_mb:.0f}" if s.peak_rss_mb is not None else "-"
            print(f"| {s.name} | {s.size / 1e6:.1f} MB | {s.seconds:.2f} | {rss} |", flush=True)
    os.sync()
    load_before = os.getloadavg()[0]
    print(f"\nllama-bench -t {threads} -p 128 -n 64 -r {reps}, -d 0 and -d 128 (avg / best)\n")
    print("| type | file MB | prefill-128 ms | decode tok/s (d 0) | decode tok/s (d 128) |\n"
          "|---|---|---|---|---|")
    fa = "?"
    for t in bench_types:
        f = out_dir / f"{hf_dir.resolve().name}-{t}.gguf"
        b0 = bench(f, threads, reps=reps)
        b1 = bench(f, threads, reps=reps, depth=128)
        fa = b0.flash_attn
        print(f"| {t} | {f.stat().st_size / 1e6:.1f} | {b0.prefill_ms_avg:.1f} / "
              f"{b0.prefill_ms_best:.1f} | {b0.decode_tps_avg:.1f} / {b0.decode_tps_best:.1f} | "
              f"{b1.decode_tps_avg:.1f} / {b1.decode_tps_best:.1f} |", flush=True)
    print(f"\nllama-bench flash_attn setting: {fa}; 1-minute load average before {load_before:.2f}, "
          f"after {os.getloadavg()[0]:.2f} (about {threads} is this run alone; more means other "
          "jobs competed and the figures are worthless)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="llama.cpp peer: locate, selftest, report")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--locate", action="store_true", help="print the built tools and libraries")
    mode.add_argument("--selftest", action="store_true", help="ggml oracle vs gguf-py")
    mode.add_argument("--crosscheck", type=Path, metavar="F32_GGUF",
                      help="ggml_quantize vs llama-quantize --pure, byte for byte")
    mode.add_argument("--report", type=Path, metavar="HF_DIR", help="GGUFs + llama-bench table")
    ap.add_argument("--out", type=Path, default=DEFAULT_CACHE / "peer" / "gguf")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5, help="llama-bench -r")
    ap.add_argument("--reuse", action="store_true", help="bench the GGUFs already in --out")
    args = ap.parse_args(argv)
    if args.locate:
        p = locate()
        print(f"llama.cpp {p.commit} at {p.source}")
        for k, v in {**p.tools, **p.libs}.items():
            print(f"  {k:18s} {v}")
        return 0
    if args.selftest:
        return 0 if selftest() else 1
    if args.crosscheck:
        return 0 if crosscheck(args.crosscheck) else 1
    report(args.report, args.out, args.threads, args.reps, args.reuse)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
