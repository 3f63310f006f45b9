"""native/quant.c against two oracles: gguf-py's numpy codecs and llama.cpp's own libggml.

* Fast lane: the numpy reference quantizers of the ``gguf`` package (q8_0, q4_0, q4_1, q5_0,
  q5_1; gguf-py has none for the K-quants) block for block, and ``gguf.quants.dequantize`` bit
  for bit for every type it knows (all but q8_K), on seeded inputs chosen to reach the edge
  cases, and on random bytes.
* ``-m peer``: libggml's ``ggml_quantize_chunk`` (the reference quantizers, what llama-quantize
  writes without an imatrix) and ``to_float`` for every type, through ``bench/peer.py`` on a
  llama.cpp built by ``make peer``, on the same inputs and on every weight of SmolLM2-135M.
  ``BUMPCONV_PEER_DIR`` (default ``.cache/peer``) says where that build is; the tests skip when
  it is absent.

Run with ``-s`` to see the identical-block tables.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from bumpconv.format.dtypes import BLOCKS, DType
from bumpconv.format.errors import QuantizeError
from bumpconv.native import native
from bumpconv.native.quant import dequantize, quantize

ROOT = Path(__file__).resolve().parents[1]
QUANT_TYPES = (DType.Q8_0, DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q4_K,
               DType.Q5_K, DType.Q6_K, DType.Q8_K)
#: Types whose quantizer gguf-py implements in numpy.
GGUF_QUANTIZERS = (DType.Q8_0, DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1)
#: Quantizers that start from the value of largest magnitude (the others from min and max).
SIGNED_MAX_TYPES = (DType.Q4_0, DType.Q5_0)
ROWS, COLS = 96, 1024  # 1024: whole blocks of every type


def gguf_type(dtype: DType) -> Any:
    import gguf
    return gguf.GGMLQuantizationType[dtype.name]


def inputs(seed: int = 0, rows: int = ROWS, cols: int = COLS) -> dict[str, np.ndarray]:
    """Seeded inputs by name, each reaching a different path of the quantizers."""
    rng = np.random.default_rng(seed)
    normal = rng.standard_normal((rows, cols))
    spike_at = rng.integers(0, 32, size=(rows, cols // 32))
    spikes = np.zeros((rows, cols // 32, 32))
    np.put_along_axis(spikes, spike_at[..., None], 8.0, axis=-1)
    spikes = spikes.reshape(rows, cols)
    scaled = normal * 10.0 ** rng.uniform(-4, 2, size=(rows, 1))
    scaled[rng.random((rows, cols)) < 0.001] *= 50
    data = {
        "normal": normal,
        "student_t2": rng.standard_t(2, (rows, cols)),  # heavy tails
        "cauchy": rng.standard_cauchy((rows, cols)),
        "row_scales": scaled,  # six decades between rows, rare outliers
        "zeros": np.zeros((rows, cols)),
        "signed_zeros": np.where(rng.random((rows, cols)) < 0.5, -0.0, 0.0),
        "sparse": np.where(rng.random((rows, cols)) < 0.9, 0.0, normal),
        "constant_rows": np.repeat(rng.standard_normal((rows, 1)), cols, axis=1),
        "max_negative": np.abs(normal) - spikes,  # the largest |x| of each block is negative
        "max_positive": -np.abs(normal) + spikes,
        "integers": rng.integers(-16, 17, (rows, cols)),  # x / d lands on .5 boundaries
        "halves": rng.integers(-64, 65, (rows, cols)) / 2,
        "tiny": normal * 1e-6,  # fp16 scales are subnormal
        "subnormal_fp32": normal * 1e-40,  # 1 / d overflows to infinity
        "huge": normal * 1e6,  # fp16 scales overflow to infinity for the 4- and 5-bit types
        "huge_fp32": normal * 1e30,
    }
    return {name: np.ascontiguousarray(x, dtype=np.float32) for name, x in data.items()}


def blocks_of(data: np.ndarray, dtype: DType) -> np.ndarray:
    """uint8 [n_blocks, block bytes]."""
    return np.asarray(data, dtype=np.uint8).reshape(-1, dtype.block.nbytes)


def same_floats(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit for bit, except that any NaN equals any NaN (payloads are not part of the codec)."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    return (a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))


def signed_zero_tie(x_block: np.ndarray, dtype: DType) -> bool:
    """Whether the value a quantizer starts from is a zero present with both signs.

    q4_0/q5_0 start from the value of largest magnitude: for a block of zeros ggml keeps its
    initial +0 while gguf-py's argmax takes the first element, possibly -0. q4_1/q5_1 start
    from min and max: ggml takes the first of the tied zeros, numpy's min/max either one.
    Either way the choice between tied candidates decides only the sign of a zero scale or
    min, which decodes to the same numbers.
    """
    def tied_zero(values: np.ndarray) -> bool:
        signs = np.signbit(values[values == 0])
        return bool(signs.any() and not signs.all())
    if dtype in SIGNED_MAX_TYPES:
        return bool(np.all(x_block == 0)) and tied_zero(x_block)
    lo, hi = x_block.min(), x_block.max()
    return (lo == 0 and tied_zero(x_block)) or (hi == 0 and tied_zero(x_block))


# ----------------------------------------------------------------------------- the C enum

def test_c_enum_and_block_geometry_match_dtypes() -> None:
    """blocks.h's enum bump_dtype is DType, and bump_block_bytes/elems are DType.BLOCKS."""
    lib = native().lib
    c_enum = {name[len("BUMP_DTYPE_"):]: getattr(lib, name)
              for name in dir(lib) if name.startswith("BUMP_DTYPE_")}
    assert c_enum == {t.name: t.value for t in DType}
    header = (ROOT / "native" / "blocks.h").read_text(encoding="utf-8")
    parsed = {m.group(1): int(m.group(2))
              for m in re.finditer(r"BUMP_DTYPE_(\w+)\s*=\s*(\d+)", header)}
    assert parsed == c_enum
    for t in DType:
        assert (lib.bump_block_bytes(t.value), lib.bump_block_elems(t.value)) == \
            (BLOCKS[t].nbytes, BLOCKS[t].elements), t.name
    for code in (-1, max(DType) + 1):
        assert (lib.bump_block_bytes(code), lib.bump_block_elems(code)) == (0, 0)


def test_every_other_dtype_is_refused() -> None:
    for t in set(DType) - set(QUANT_TYPES):
        for rows in (0, 1):  # empty matrices too
            with pytest.raises(QuantizeError, match=f"{t.label} is not a quantized type"):
                quantize(np.zeros((rows, 256), dtype=np.float32), t)
            with pytest.raises(QuantizeError, match=f"{t.label} is not a quantized type"):
                dequantize(np.zeros((rows, t.nbytes(256)), np.uint8), t, rows, 256)


# ----------------------------------------------------------------------------- gguf-py

@pytest.mark.parametrize("dtype", GGUF_QUANTIZERS, ids=lambda t: t.label)
def test_quantizer_matches_gguf(dtype: DType) -> None:
    """Every block identical to gguf-py's, except blocks whose only difference is which of
    two tied signed zeros became the scale (shown case by case, and decoding the same)."""
    from gguf.quants import quantize as gguf_quantize

    report = []
    for name, x in inputs().items():
        with np.errstate(all="ignore"):  # gguf-py casts 1/d = inf to uint8 for subnormal d
            theirs = blocks_of(gguf_quantize(x, gguf_type(dtype)), dtype)
        ours = blocks_of(quantize(x, dtype), dtype)
        same = (ours == theirs).all(axis=1)
        x_blocks = x.reshape(-1, dtype.block.elements)
        for i in np.flatnonzero(~same):
            assert signed_zero_tie(x_blocks[i], dtype), (name, i, x_blocks[i], ours[i], theirs[i])
            assert np.array_equal(dequantize(ours[i], dtype, 1, dtype.block.elements),
                                  dequantize(theirs[i], dtype, 1, dtype.block.elements))
        report.append(f"{name} {same.mean():.4f} ({(~same).sum()} ties)")
    print(f"\n{dtype.label} vs gguf-py, identical blocks of {ROWS}x{COLS}: " + ", ".join(report))


@pytest.mark.parametrize("dtype", [t for t in QUANT_TYPES if t != DType.Q8_K],
                         ids=lambda t: t.label)
def test_dequantize_matches_gguf(dtype: DType) -> None:
    """Bit for bit on our blocks of every input and on random bytes (any bit pattern is a
    block; fp16 scales may then be infinite or NaN)."""
    from gguf.quants import dequantize as gguf_dequantize

    rng = np.random.default_rng(1)
    cases = {name: quantize(x, dtype) for name, x in inputs().items()}
    cases["random_bytes"] = rng.integers(0, 256, (ROWS, dtype.nbytes(COLS)), dtype=np.uint8)
    for name, data in cases.items():
        ours = dequantize(data, dtype, ROWS, COLS)
        with np.errstate(all="ignore"):  # infinite and NaN scales in random bytes
            theirs = gguf_dequantize(data, gguf_type(dtype))
        assert same_floats(ours, theirs).all(), (dtype.label, name)


def test_dequantize_q8_k() -> None:
    """gguf-py has no q8_K; ggml's dequantize_row_q8_K is x[i].d * x[i].qs[j] in fp32."""
    rng = np.random.default_rng(2)
    data = rng.integers(0, 256, (ROWS, DType.Q8_K.nbytes(COLS)), dtype=np.uint8)
    blocks = data.reshape(-1, DType.Q8_K.block.nbytes)
    d = np.ascontiguousarray(blocks[:, :4]).view(np.float32)
    qs = blocks[:, 4:4 + 256].view(np.int8).astype(np.float32)
    with np.errstate(all="ignore"):
        expected = (d * qs).reshape(ROWS, COLS)
    assert same_floats(dequantize(data, DType.Q8_K, ROWS, COLS), expected).all()


def test_q8_k_blocks_carry_their_sums() -> None:
    """q8_K's bsums are the sums of 16 quants (the K-quant dot products rely on them)."""
    x = inputs()["normal"]
    blocks = blocks_of(quantize(x, DType.Q8_K), DType.Q8_K)
    qs = blocks[:, 4:260].view(np.int8).astype(np.int32)
    bsums = np.ascontiguousarray(blocks[:, 260:292]).view(np.int16)
    assert np.array_equal(bsums, qs.reshape(-1, 16, 16).sum(axis=-1))


# ----------------------------------------------------------------------------- API

def test_quantize_refuses_non_finite_values() -> None:
    x = np.ones((3, 64), dtype=np.float32)
    for bad in (np.nan, np.inf, -np.inf):
        x[2, 37] = bad
        with pytest.raises(QuantizeError, match=r"row 2, column 37 .*only finite values"):
            quantize(x, DType.Q8_0)


@pytest.mark.parametrize("call, message", [
    (lambda: quantize(np.zeros((2, 100), np.float32), DType.Q4_0), "not a whole number"),
    (lambda: quantize(np.zeros((2, 288), np.float32), DType.Q4_K), "not a whole number"),
    (lambda: quantize(np.zeros((2, 64), np.float64), DType.Q4_0), "expected float32"),
    (lambda: quantize(np.zeros(64, np.float32), DType.Q4_0), "expected a 2-D array"),
    (lambda: dequantize(b"\0" * 17, DType.Q4_0, 1, 32), "17 bytes given, .* takes 18"),
    (lambda: dequantize(b"", DType.Q4_0, -1, 32), "negative shape"),
    (lambda: dequantize(b"\0" * 18, DType.Q4_0, 1, 33), "not a whole number"),
])
def test_bad_arguments(call: Callable[[], object], message: str) -> None:
    with pytest.raises(QuantizeError, match=message):
        call()


def test_c_entry_points_refuse_bad_calls() -> None:
    """What the Python layer never passes: the C functions check it themselves."""
    mod = native()
    ffi, lib = mod.ffi, mod.lib
    err = ffi.new("char[]", 200)
    buf = ffi.new("float[]", 64)
    out = ffi.new("char[]", 64)
    cases = [
        (lambda: lib.bump_quantize(DType.Q8_0, buf, 1, 30, out, err, 200), "30 values"),
        (lambda: lib.bump_quantize(DType.Q8_0, buf, -1, 32, out, err, 200), "negative shape"),
        (lambda: lib.bump_quantize(DType.Q8_0, ffi.NULL, 1, 32, out, err, 200), "NULL"),
        (lambda: lib.bump_dequantize(99, out, 1, 32, buf, err, 200), "unknown dtype code 99"),
        (lambda: lib.bump_dequantize(DType.FP16, out, 1, 32, buf, err, 200), "fp16 is not"),
    ]
    for call, message in cases:
        assert call() == lib.BUMP_ERR_INPUT
        assert message in ffi.string(err).decode()
    assert lib.bump_quantize(DType.Q8_0, ffi.NULL, 0, 32, ffi.NULL, err, 200) == lib.BUMP_OK


@pytest.mark.parametrize("dtype", QUANT_TYPES, ids=lambda t: t.label)
def test_shapes_and_layouts(dtype: DType) -> None:
    """Rows of whole blocks back to back; strided input; empty matrices."""
    x = inputs(rows=6, cols=2 * COLS)["normal"]
    q = quantize(x, dtype)
    assert q.shape == (6, dtype.nbytes(2 * COLS)) and q.dtype == np.uint8
    assert np.array_equal(q[3], quantize(x[3:4], dtype)[0])
    assert np.array_equal(quantize(x[:, ::2], dtype), quantize(x[:, ::2].copy(), dtype))
    assert np.array_equal(dequantize(q.tobytes(), dtype, 6, 2 * COLS),
                          dequantize(q, dtype, 6, 2 * COLS))
    assert quantize(np.zeros((0, COLS), np.float32), dtype).shape == (0, dtype.nbytes(COLS))
    assert dequantize(b"", dtype, 0, COLS).shape == (0, COLS)


def test_two_threads_give_the_sequential_bytes() -> None:
    """Reentrant: the converter quantizes tensors on two threads (the GIL is released)."""
    xs = [inputs(seed=s, rows=64)["row_scales"] for s in (3, 4)]
    expected = [quantize(x, DType.Q4_K) for x in xs]
    got: list[np.ndarray | None] = [None, None]

    def work(i: int) -> None:
        for _ in range(3):
            got[i] = quantize(xs[i], DType.Q4_K)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(g, e) for g, e in zip(got, expected))


# ----------------------------------------------------------------------------- llama.cpp

def ggml_name(dtype: DType) -> str:
    """ggml's type name: q4_K, not q4_k."""
    return re.sub(r"_k$", "_K", dtype.label)


@pytest.fixture(scope="module")
def ggml() -> Any:
    """bench/peer.py bound to the libggml under BUMPCONV_PEER_DIR (default .cache/peer)."""
    peer_dir = Path(os.environ.get("BUMPCONV_PEER_DIR") or ROOT / ".cache" / "peer")
    if not (peer_dir / "build-info.json").exists():
        pytest.skip(f"no llama.cpp peer build in {peer_dir} (make peer, or set "
                    "BUMPCONV_PEER_DIR)")
    try:
        from bench import peer
    except ImportError as exc:
        pytest.skip(f"bench/peer.py is not importable ({exc})")
    peer.ggml(peer_dir.parent)  # loads and checks libggml once; later calls reuse it
    return peer


def ggml_quantize(peer: Any, x: np.ndarray, dtype: DType) -> np.ndarray:
    """libggml's bytes. q8_K has no ggml_quantize_chunk case: its reference quantizer is
    called by name (exported by libggml-base)."""
    import ctypes

    if dtype != DType.Q8_K:
        return blocks_of(np.frombuffer(peer.ggml_quantize(ggml_name(dtype), x), np.uint8), dtype)
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = ctypes.create_string_buffer(dtype.nbytes(x.size))
    peer.ggml().lib.quantize_row_q8_K_ref(ctypes.c_void_p(x.ctypes.data), out,
                                          ctypes.c_int64(x.size))
    return blocks_of(np.frombuffer(out.raw, np.uint8), dtype)


def ggml_dequantize(peer: Any, data: np.ndarray, dtype: DType, rows: int, cols: int) -> np.ndarray:
    import ctypes

    if dtype != DType.Q8_K:
        return peer.ggml_dequantize(ggml_name(dtype), data.tobytes(), rows, cols)
    src = np.ascontiguousarray(data)
    out = np.empty((rows, cols), np.float32)
    peer.ggml().lib.dequantize_row_q8_K(ctypes.c_void_p(src.ctypes.data),
                                        ctypes.c_void_p(out.ctypes.data),
                                        ctypes.c_int64(rows * cols))
    return out


@pytest.mark.peer
@pytest.mark.parametrize("dtype", QUANT_TYPES, ids=lambda t: t.label)
def test_peer_synthetic(ggml: Any, dtype: DType) -> None:
    """Every block identical to libggml's on every input; dequantization bit for bit."""
    report, blocks = [], 0
    rng = np.random.default_rng(5)
    for name, x in inputs().items():
        ours = quantize(x, dtype)
        same = (blocks_of(ours, dtype) == ggml_quantize(ggml, x, dtype)).all(axis=1)
        blocks += same.size
        report.append(f"{name} {same.mean():.4f}")
        assert same.all(), (dtype.label, name, np.flatnonzero(~same)[:10])
        assert same_floats(dequantize(ours, dtype, ROWS, COLS),
                           ggml_dequantize(ggml, ours, dtype, ROWS, COLS)).all()
    noise = rng.integers(0, 256, (ROWS, dtype.nbytes(COLS)), dtype=np.uint8)
    assert same_floats(dequantize(noise, dtype, ROWS, COLS),
                       ggml_dequantize(ggml, noise, dtype, ROWS, COLS)).all()
    print(f"\n{dtype.label} vs libggml, {blocks} blocks: " + ", ".join(report))


@pytest.mark.peer
def test_peer_smollm2_weights(ggml: Any, request: pytest.FixtureRequest) -> None:
    """Every 2-D weight of SmolLM2-135M in every type: its rows when they are whole blocks,
    else (576-wide rows and 256-value K-blocks) its values as rows of one block."""
    from safetensors import safe_open

    smol: Path = request.getfixturevalue("smol")  # only once the peer build is known there

    totals = {t: [0, 0, 0, 0] for t in QUANT_TYPES}  # tensors, rows, blocks, identical blocks
    with safe_open(str(smol / "model.safetensors"), framework="np") as f:
        for key in f.keys():
            tensor = f.get_tensor(key)
            if tensor.ndim != 2:
                continue
            tensor = np.ascontiguousarray(tensor, dtype=np.float32)
            for t in QUANT_TYPES:
                w = tensor if tensor.shape[1] % t.block.elements == 0 \
                    else tensor.reshape(-1, t.block.elements)
                same = (blocks_of(quantize(w, t), t) == ggml_quantize(ggml, w, t)).all(axis=1)
                acc = totals[t]
                acc[0] += 1
                acc[1] += w.shape[0]
                acc[2] += same.size
                acc[3] += int(same.sum())
    print("\nSmolLM2-135M weights, ours vs libggml:")
    for t, (tensors, rows, blocks, identical) in totals.items():
        print(f"  {t.label:5s} {tensors:3d} tensors {rows:7d} rows {blocks:9d} blocks "
              f"identical {identical / max(blocks, 1):.6f}")
    assert all(acc[2] == acc[3] for acc in totals.values())
