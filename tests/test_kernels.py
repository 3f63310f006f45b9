"""The matrix kernels against numpy on gguf's dequantized weights, for every weight type the
runtime reads, every layout the runtime hands them and every kernel level (the ``kernel_level``
fixture: each level this CPU has, a skip naming the missing features for the others).

The weights sit in a buffer whose padding (around rows, between head segments) is garbage, so a
kernel that reads outside its view shows. Quantized products must equal the product with
``gguf.quants.dequantize``'s fp32 matrix up to fp32 summation order. No torch.
"""

from __future__ import annotations

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

from bumpconv.format.dtypes import DType
from bumpconv.format.errors import KernelError
from bumpconv.native.kernels import View, int8_products, matmul
from bumpconv.native.quant import quantize
from kernel_levels import int8_round_trip

TYPES = [DType.FP32, DType.Q8_0, DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q4_K,
         DType.Q5_K, DType.Q6_K]

def packed(dtype: DType, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows [R, C] as ``dtype`` bytes [R, row_bytes], and the fp32 values those bytes hold."""
    if dtype == DType.FP32:
        return rows.view(np.uint8).reshape(rows.shape[0], -1), rows
    q = quantize(rows, dtype)
    return q, gguf_dequantize(q, GGMLQuantizationType[dtype.name]).reshape(rows.shape)


def misaligned(data: np.ndarray) -> np.ndarray:
    """The same bytes at an odd address: bump files place tensors at any byte offset (the
    sanitizer run, which runs this file, catches a misaligned typed access)."""
    buf = np.empty(data.nbytes + 1, np.uint8)
    buf[1:] = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return buf[1:]


def view_index(view: View, N: int, K: int) -> np.ndarray:
    """[N, K]: the packed element index of every (n, k) of the view, enumerated (View's rule)."""
    n, k = np.arange(N)[:, None], np.arange(K)[None, :]
    return (n // view.row_seg * view.row_seg_stride + n % view.row_seg * view.ld
            + k // view.col_seg * view.col_seg_stride + k % view.col_seg)


def layout(name: str, N: int, K: int, be: int) -> tuple[View, int, int]:
    """(view, row length in elements, rows in the buffer) of a layout the runtime uses, with
    padding: row-major with a padded row; per-head rows (wq [H][D][K]: rows in segments of D with
    a gap between heads); stacked halves (w1's gate and up, two segments of rows with a gap);
    per-head columns (wo [E][H][D]: columns in segments with gaps)."""
    pad = be if be > 1 else 3
    if name == "row-major":
        return View(K + pad, N, N * (K + pad), K, K), K + pad, N
    if name == "per-head rows":
        seg = N // 3
        return View(K + pad, seg, (seg + 1) * (K + pad), K, K), K + pad, 3 * (seg + 1)
    if name == "stacked gate/up":
        seg = N // 2
        return View(K + pad, seg, (seg + 2) * (K + pad), K, K), K + pad, 2 * (seg + 2)
    if name == "per-head cols":
        seg = K // 2  # two heads of K/2 columns, a gap of `pad` after each
        return View(2 * (seg + pad), N, N * 2 * (seg + pad), seg, seg + pad), 2 * (seg + pad), N
    raise KeyError(name)


@pytest.mark.parametrize("activations", ["fp32", "int8"])
@pytest.mark.parametrize("dtype", TYPES, ids=lambda d: d.label)
@pytest.mark.parametrize("shape", ["row-major", "per-head rows", "stacked gate/up",
                                   "per-head cols"])
def test_products_equal_numpy_on_the_dequantized_weights(kernel_level: str, dtype: DType,
                                                         shape: str, activations: str) -> None:
    """fp32 activations: the product with the dequantized matrix up to summation order. int8
    activations (where the level has int8 products for the type and M): the same with x
    replaced by its int8 round trip, so a wrong unpacking or scale fails at fp32 tolerance,
    not at int8's."""
    be = dtype.block.elements
    K = 512 if be == 256 else 192
    N = 54  # two chunks of 27 rows: kernels that take rows four at a time have a remainder
    view, row_len, buf_rows = layout(shape, N, K, be)
    rng = np.random.default_rng(7)
    buf_values = rng.standard_normal((buf_rows, row_len)).astype(np.float32) * 100  # garbage
    data, values = packed(dtype, buf_values)
    # the logical matrix: element (n, k) read through the view, from the dequantized buffer
    flat = values.reshape(-1)
    W = flat[view_index(view, N, K)].astype(np.float64)
    for M in (1, 5, 20):
        x = rng.standard_normal((M, K)).astype(np.float32)
        got = matmul(dtype, misaligned(data), flat.size, view, N, K, x, threads=2,
                     activations=activations)
        xr = x.astype(np.float64)
        if activations == "int8" and int8_products(dtype, M):
            xr = int8_round_trip(x)
        want = xr @ W.T
        scale = np.abs(xr) @ np.abs(W).T  # the size of the sums' terms
        assert np.all(np.abs(got - want) <= 1e-5 * scale + 1e-30), (kernel_level, dtype, shape, M)


@pytest.mark.parametrize("activations", ["fp32", "int8"])
@pytest.mark.parametrize("dtype", [DType.FP32, DType.Q4_K, DType.Q5_0, DType.Q6_K],
                         ids=lambda d: d.label)
def test_one_and_two_threads_agree_bit_for_bit(kernel_level: str, dtype: DType,
                                              activations: str) -> None:
    rng = np.random.default_rng(1)
    N, K = 200, 512
    data, values = packed(dtype, rng.standard_normal((N, K)).astype(np.float32))
    view = View.row_major(N, K)
    for M in (1, 33):
        x = rng.standard_normal((M, K)).astype(np.float32)
        one = matmul(dtype, data, N * K, view, N, K, x, threads=1, activations=activations)
        two = matmul(dtype, data, N * K, view, N, K, x, threads=2, activations=activations)
        assert np.array_equal(one, two)


def test_a_view_that_splits_a_block_or_leaves_the_buffer_is_refused() -> None:
    rng = np.random.default_rng(2)
    data, _ = packed(DType.Q8_0, rng.standard_normal((4, 64)).astype(np.float32))
    x = np.ones((1, 64), np.float32)
    with pytest.raises(KernelError, match="splits a block"):
        matmul(DType.Q8_0, data, 256, View(48, 4, 192, 64, 64), 4, 64, x)
    with pytest.raises(KernelError, match="leaves the buffer"):
        matmul(DType.Q8_0, data, 256, View(64, 5, 320, 64, 64), 5, 64, x)


@pytest.mark.parametrize("dtype, view, N, K, numel, reach", [
    # issue 21's case: rows in segments of 4 at one base, a fifth row alone in the second
    # segment; the last row sits at element 0, row 3 at 30-34 of a 10-float buffer
    (DType.FP32, View(ld=10, row_seg=4, row_seg_stride=0, col_seg=5, col_seg_stride=5), 5, 5,
     10, 34),
    # the same with columns: K = 5 in segments of 4 at one base, column 3 reaches furthest
    (DType.FP32, View(ld=4, row_seg=2, row_seg_stride=0, col_seg=4, col_seg_stride=0), 2, 5,
     6, 7),
    # both axes at once, and a second row segment that starts below the first one's end
    (DType.FP32, View(ld=7, row_seg=3, row_seg_stride=2, col_seg=3, col_seg_stride=1), 4, 4,
     16, 16),
    # blocks: q8_0 rows of one block in segments of 4 at one base, row 3 is block 3 of 2
    (DType.Q8_0, View(ld=32, row_seg=4, row_seg_stride=0, col_seg=32, col_seg_stride=32), 5,
     32, 64, 127),
], ids=["rows", "columns", "both", "q8_0 rows"])
def test_a_view_whose_short_last_segment_hides_its_reach_is_refused(
        dtype: DType, view: View, N: int, K: int, numel: int, reach: int) -> None:
    """Issue 21: a view's furthest element is not always that of the last row and column: when
    the last segment is short, the end of the one before it reaches further. bump_matmul_view
    checks the view with the runtime's own table check (validate.h), which the runtime never
    let through; it used to take the last element's offset and read past the buffer."""
    assert view_index(view, N, K).max() == reach >= numel  # the oracle agrees it leaves
    data, _ = packed(dtype, np.ones((numel // dtype.block.elements, dtype.block.elements),
                                    np.float32))
    with pytest.raises(KernelError, match=fr"view reaches element {reach} of {numel} \(it "
                                          "leaves the buffer"):
        matmul(dtype, data.reshape(-1), numel, view, N, K, np.ones((1, K), np.float32))


@pytest.mark.parametrize("dtype", [DType.FP32, DType.Q8_0], ids=lambda d: d.label)
def test_random_segmented_views_are_refused_exactly_when_they_leave_the_buffer(
        dtype: DType) -> None:
    """Small random views (segments short and long, strides that overlap, gaps, zero) against
    the enumerated oracle: refused when an element lies at or past numel or a stride or
    segment length exceeds it (the runtime's rule for its tables: none points outside the
    tensor, used or not), else computed right, read through the view from a buffer of
    garbage."""
    rng = np.random.default_rng(21)
    be = dtype.block.elements
    refused = accepted = 0
    for _ in range(150):
        N, K = int(rng.integers(1, 7)), be * int(rng.integers(1, 4 if be > 1 else 7))
        view = View(ld=be * int(rng.integers(0, 9)), row_seg=int(rng.integers(1, 8)),
                    row_seg_stride=be * int(rng.integers(0, 30)),
                    col_seg=be * int(rng.integers(1, 5)) if be > 1 else int(rng.integers(1, 8)),
                    col_seg_stride=be * int(rng.integers(0, 6)))
        reach = int(view_index(view, N, K).max())
        blocks = (reach + 1 + be - 1) // be + int(rng.integers(-1, 2))  # around the reach
        numel = max(blocks, 1) * be
        ok = reach < numel and max(view.ld, view.row_seg, view.row_seg_stride, view.col_seg,
                                   view.col_seg_stride) <= numel
        values = rng.standard_normal((numel // be, be)).astype(np.float32) * 100
        data, deq = packed(dtype, values)
        x = rng.standard_normal((2, K)).astype(np.float32)
        if not ok:
            refused += 1
            with pytest.raises(KernelError, match="leaves the buffer"):
                matmul(dtype, data.reshape(-1), numel, view, N, K, x)
            continue
        accepted += 1
        W = deq.reshape(-1)[view_index(view, N, K)].astype(np.float64)
        got = matmul(dtype, misaligned(data), numel, view, N, K, x)
        want = x.astype(np.float64) @ W.T
        assert np.all(np.abs(got - want) <= 1e-5 * (np.abs(x) @ np.abs(W).T) + 1e-30), view
    assert refused > 20 and accepted > 20  # both sides of the rule were exercised


def test_a_buffer_shorter_than_numel_or_activations_of_another_width_are_refused() -> None:
    """C gets a bare pointer and trusts numel: the wrapper checks that the buffer holds it."""
    rng = np.random.default_rng(2)
    data, _ = packed(DType.Q8_0, rng.standard_normal((4, 64)).astype(np.float32))
    x = np.ones((1, 64), np.float32)
    with pytest.raises(KernelError, match="272 bytes, but 512 q8_0 elements take 544"):
        matmul(DType.Q8_0, data, 512, View.row_major(8, 64), 8, 64, x)
    with pytest.raises(KernelError, match="not a whole number of Q8_0 blocks"):
        matmul(DType.Q8_0, data, 250, View.row_major(4, 64), 4, 64, x)
    with pytest.raises(KernelError, match=r"activations: shape \(1, 32\), expected \[M, 64\]"):
        matmul(DType.Q8_0, data, 256, View.row_major(4, 64), 4, 64, x[:, :32])


def test_an_unknown_level_is_refused_by_name(monkeypatch) -> None:
    monkeypatch.setenv("BUMPCONV_KERNELS", "avx9000")
    data, _ = packed(DType.FP32, np.ones((2, 8), np.float32))
    with pytest.raises(KernelError, match="BUMPCONV_KERNELS=avx9000: unknown kernel level"):
        matmul(DType.FP32, data, 16, View.row_major(2, 8), 2, 8, np.ones((1, 8), np.float32))


def swiglu(g: np.ndarray, u: np.ndarray) -> np.ndarray:
    from bumpconv.native import native
    mod = native()
    ffi = mod.ffi
    g, u = np.ascontiguousarray(g, np.float32), np.ascontiguousarray(u, np.float32)
    out = np.empty_like(g)
    err = ffi.new("char[]", 256)
    assert mod.lib.bump_swiglu_rows(ffi.from_buffer("float[]", g), ffi.from_buffer("float[]", u),
                                    g.size, ffi.from_buffer("float[]", out), err, 256) == 0
    return out


def test_swiglu_is_within_three_ulp_of_the_exact_value(kernel_level: str) -> None:
    """The vectorized exp behind SwiGLU (and the softmax): within 3 ulp of silu(g) * u computed
    in float64 (exp correctly rounded, then 1 + exp, the division and the product with u one
    rounding each; measured 2.74 at most) wherever the result is a normal float, 0 where
    fp32's exp(-g) overflows (libm's and torch's answer there), and libm's answer at the edges
    (+inf stays inf, -inf gives NaN as g / (1 + exp(inf)) does). The length is not a multiple of the vector width, so the scalar
    tail is covered too."""
    rng = np.random.default_rng(3)
    g = np.concatenate([np.linspace(-87, 100, 100_003), rng.standard_normal(50_001) * 4,
                        [-88.5, -88.72, -88.8, -100, -1e30]]).astype(np.float32)
    u = rng.uniform(0.5, 2, g.size).astype(np.float32)
    got = swiglu(g, u).astype(np.float64)
    g64 = g.astype(np.float64)
    with np.errstate(over="ignore"):
        want = np.where(-g64 > np.log(np.finfo(np.float32).max), 0.0,
                        g64 / (1 + np.exp(-g64)) * u)
    normal = np.abs(want) >= np.finfo(np.float32).tiny
    ulp = np.spacing(np.abs(want[normal]).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got[normal] - want[normal]) / ulp) <= 3.0
    assert np.all(np.abs(got[~normal]) <= np.finfo(np.float32).tiny)
    edges = swiglu(np.array([np.inf, -np.inf, np.nan, 0.0], np.float32), np.ones(4, np.float32))
    assert edges[0] == np.inf and np.isnan(edges[1]) and np.isnan(edges[2]) and edges[3] == 0


def geglu(g: np.ndarray, u: np.ndarray) -> np.ndarray:
    from bumpconv.native import native
    mod = native()
    ffi = mod.ffi
    g, u = np.ascontiguousarray(g, np.float32), np.ascontiguousarray(u, np.float32)
    out = np.empty_like(g)
    err = ffi.new("char[]", 256)
    assert mod.lib.bump_geglu_rows(ffi.from_buffer("float[]", g), ffi.from_buffer("float[]", u),
                                   g.size, ffi.from_buffer("float[]", out), err, 256) == 0
    return out


def softcap(x: np.ndarray, cap: float) -> np.ndarray:
    from bumpconv.native import native
    mod = native()
    ffi = mod.ffi
    x = np.array(x, np.float32)
    err = ffi.new("char[]", 256)
    assert mod.lib.bump_softcap_rows(ffi.from_buffer("float[]", x), x.size, cap, err, 256) == 0
    return x


def _rounded_tanh(x: np.ndarray) -> np.ndarray:
    """tanh of float32 values, computed in float64 and rounded once (the exact tanh, but for
    ties closer than float64's precision)."""
    return np.tanh(x.astype(np.float64)).astype(np.float32)


def torch_order_geglu(g: np.ndarray, u: np.ndarray) -> np.ndarray:
    """torch's fp32 gelu(approximate="tanh") * up, operation for operation in float32 (numpy
    rounds each to float32 as C does), with a correctly rounded tanh."""
    x = g.astype(np.float32)
    beta, kappa, half, one = (np.float32(0.7978845608028654), np.float32(0.044715),
                              np.float32(0.5), np.float32(1.0))
    inner = beta * (x + kappa * (x * x * x))
    return half * x * (one + _rounded_tanh(inner)) * u.astype(np.float32)


def test_geglu_is_torchs_formula_with_a_correctly_rounded_tanh(kernel_level: str) -> None:
    """GeGLU: torch's fp32 gelu(approximate="tanh") computed operation for operation, its tanh
    correctly rounded (in double): bit for bit the float32 emulation with float64's tanh
    rounded once, on values spanning the tanh's polynomial and exp branches, its saturation
    and fp32's cube overflow (a scalar tail included); NaN stays NaN."""
    rng = np.random.default_rng(5)
    g = np.concatenate([np.linspace(-12, 12, 200_003), rng.standard_normal(50_001) * 3,
                        rng.standard_normal(1001) * 1e-3, [1e-30, -1e-38, 0.0, 40.0, -40.0,
                                                            3e12, -3e12]]).astype(np.float32)
    u = rng.uniform(-2, 2, g.size).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        want = torch_order_geglu(g, u)
    got = geglu(g, u)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    assert same.mean() > 0.99999, np.flatnonzero(~same)[:5]
    off = ~same
    ulp = np.spacing(np.abs(want[off]))
    assert np.all(np.abs(got[off] - want[off]) <= ulp)  # a tie of float64's tanh, at most
    nan = geglu(np.array([np.nan], np.float32), np.ones(1, np.float32))
    assert np.isnan(nan[0])


def test_softcap_is_division_tanh_product(kernel_level: str) -> None:
    """The final logit soft-cap: x / cap, tanh, * cap, each rounded to float32, the tanh
    correctly rounded; bit for bit the float32 emulation, over logits' range and beyond."""
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.standard_normal(100_003) * 20, np.linspace(-200, 200, 4001),
                        [0.0, -0.0, 1e-30, np.inf, -np.inf]]).astype(np.float32)
    cap = np.float32(30.0)
    want = _rounded_tanh(x / cap) * cap
    got = softcap(x, 30.0)
    same = got == want
    assert same.mean() > 0.99999
    assert np.all(np.abs(got[~same] - want[~same]) <= np.spacing(np.abs(want[~same])))
    assert got[-2] == 30.0 and got[-1] == -30.0


def test_softmax_exp_is_correctly_rounded_and_sums_what_it_stores(kernel_level: str) -> None:
    """The softmax numerators exp(s - max) over the range they take (s - max <= 0, down into
    fp32's subnormals, and the positive side for completeness): each the float64 exp rounded to
    float32 (vexp computes in double: a float-precision exp's extra ulp failed parity on a real
    model; numpy's float32 exp is off by up to 2.4 ulp), +inf, 0 and NaN at the edges, and the
    returned sum is the sum of the stored values."""
    from bumpconv.native import native
    mod = native()
    ffi = mod.ffi
    x = np.concatenate([np.linspace(-87, 0, 200_003), np.linspace(0, 88.7, 20_001),
                        np.linspace(-104, -87, 10_001),
                        [-87.5, -100.0, -np.inf]]).astype(np.float32)
    s = x.copy()
    err = ffi.new("char[]", 256)
    total = mod.lib.bump_exp_sum_rows(ffi.from_buffer("float[]", s), s.size, 0.0, err, 256)
    with np.errstate(over="ignore"):
        want = np.exp(x.astype(np.float64)).astype(np.float32)
    assert np.array_equal(s, want)
    assert total == np.inf  # the positive side overflows the fp32 sum, as it would in C
    edges = np.array([89.0, 100.0, np.inf, np.nan], np.float32)
    mod.lib.bump_exp_sum_rows(ffi.from_buffer("float[]", edges), 4, 0.0, err, 256)
    assert np.all(edges[:3] == np.inf) and np.isnan(edges[3])
    softmax_range = x[x <= 0].copy()
    total = mod.lib.bump_exp_sum_rows(ffi.from_buffer("float[]", softmax_range),
                                      softmax_range.size, 0.0, err, 256)
    assert total == pytest.approx(float(np.sum(softmax_range, dtype=np.float64)), rel=1e-6)
    shifted = np.array([3.0, 1.0, -2.0], np.float32)
    mod.lib.bump_exp_sum_rows(ffi.from_buffer("float[]", shifted), 3, 3.0, err, 256)
    assert np.allclose(shifted, np.exp(np.array([0.0, -2.0, -5.0])), rtol=2e-7)


def test_fp32_products_with_ragged_shapes(kernel_level: str) -> None:
    """fp32 weights with K, N and M that are multiples of nothing (K = 53 in two column
    segments of 29 and 24 with a gap): the GEMM's transposed-panel tail, a part-empty panel and
    a part-empty activation panel, and the GEMV's scalar tail."""
    rng = np.random.default_rng(11)
    N, K, seg = 37, 53, 29
    view = View(ld=60, row_seg=N, row_seg_stride=N * 60, col_seg=seg, col_seg_stride=seg + 2)
    buf = rng.standard_normal((N, 60)).astype(np.float32)
    flat = buf.reshape(-1)
    n, k = np.arange(N)[:, None], np.arange(K)[None, :]
    W = flat[n * 60 + k // seg * (seg + 2) + k % seg].astype(np.float64)
    for M in (1, 17):
        x = rng.standard_normal((M, K)).astype(np.float32)
        got = matmul(DType.FP32, misaligned(buf), flat.size, view, N, K, x, threads=2)
        want = x.astype(np.float64) @ W.T
        scale = np.abs(x.astype(np.float64)) @ np.abs(W).T
        assert np.all(np.abs(got - want) <= 1e-5 * scale), (kernel_level, M)


@pytest.mark.parametrize("dtype", TYPES[1:], ids=lambda d: d.label)
def test_int8_products_at_the_extremes_of_the_integer_sums(kernel_level: str, dtype: DType) -> None:
    """The int8 kernels keep partial sums in 16-bit lanes where they can (the GEMM adds up to 8
    column groups' products before widening them; the rows multiply q6_K's and the K-quants'
    scales into 16-bit pair sums): weights whose quantized values all sit at one end of their
    range (one small value per block, the rest large, or the reverse) against activations that
    all quantize to +127 or -127 make those sums as large as they can be, so a wrong bound
    wraps or saturates and fails at fp32 tolerance. Exact up to summation order, as above."""
    be = dtype.block.elements
    K = 1024 if be == 256 else 256
    rows = []
    for low, high in ((-1.0, 1.0), (1.0, -1.0), (-0.25, 1.0), (0.0, 1.0)):
        r = np.full(K, high, np.float32)
        r[::32] = low  # one value per 32 at the other end
        rows += [r, -r]
    W_in = np.array(rows * 3, np.float32)  # 24 rows: three QNR-row panels, pairs of rows
    data, values = packed(dtype, W_in)
    N = W_in.shape[0]
    W = values.astype(np.float64)
    for M in (1, 13):
        for x in (np.ones((M, K), np.float32), -np.ones((M, K), np.float32),
                  np.where(np.arange(K) % 2, 1.0, -1.0).astype(np.float32)[None].repeat(M, 0)):
            got = matmul(dtype, misaligned(data), N * K, View.row_major(N, K), N, K, x,
                         threads=2, activations="int8")
            xr = int8_round_trip(x) if int8_products(dtype, M) else x.astype(np.float64)
            want = xr @ W.T
            scale = np.abs(xr) @ np.abs(W).T
            assert np.all(np.abs(got - want) <= 1e-5 * scale + 1e-30), (kernel_level, dtype, M)
