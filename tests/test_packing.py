"""Packing against the element rules of docs/format.md, written out as explicit loops.

The loops below are the format's table, element by element; the library expresses the same
rules as stack/reshape/transpose data in the schemas. Both must agree, and the streaming
writer's row form must agree with both.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bumpconv.format.profile import TensorSlot, expand_tensors, load_profile
from bumpconv.format.packing import first_nonzero_padding, pack, row_map, unpack
from bumpconv.conversion.safetensors_file import TensorInfo, widen
from bumpconv.conversion.stream import packed_chunks

# E=40 -> AE=48, D=10 -> AD=16, I=20 -> AI=32, H=4, KV=2, V=7, L=1
DIMS = {"L": 1, "V": 7, "E": 40, "I": 20, "H": 4, "KV": 2, "D": 10, "T": 5,
        "AE": 48, "AD": 16, "AI": 32, "AC": 16}
FLAGS = {"qkv_bias": True, "qk_norm": True, "untied": True, "post_norms": False, "norm_offset": False}
E, D, I, H, KV, V = DIMS["E"], DIMS["D"], DIMS["I"], DIMS["H"], DIMS["KV"], DIMS["V"]
AE, AD, AI = DIMS["AE"], DIMS["AD"], DIMS["AI"]


def slots(profile: str = "bumpwgt5") -> dict[str, TensorSlot]:
    flags = FLAGS if profile == "bumpwgt5" else {**FLAGS, "untied": False, "qk_norm": False}
    return {s.role: s for s in expand_tensors(load_profile(profile), DIMS, flags, None)}


def random_sources(slot: TensorSlot, rng: np.random.Generator) -> list[np.ndarray]:
    assert slot.source_shape is not None
    return [rng.standard_normal(slot.source_shape).astype(np.float32) for _ in slot.sources]


def element_rule(role: str, src: list[np.ndarray]) -> np.ndarray:
    """The format's table, one element at a time."""
    if role in ("token_emb", "lm_head"):
        out = np.zeros((V, AE), np.float32)
        for v in range(V):
            for c in range(E):
                out[v, c] = src[0][v, c]
    elif role in ("ln1", "ln2", "final_norm"):
        out = np.zeros(AE, np.float32)
        for c in range(E):
            out[c] = src[0][c]
    elif role in ("q_norm", "k_norm"):
        out = np.zeros(AD, np.float32)
        for c in range(D):
            out[c] = src[0][c]
    elif role in ("wq", "wk", "wv"):
        heads = H if role == "wq" else KV
        out = np.zeros((heads, AD, AE), np.float32)
        for h in range(heads):
            for r in range(D):
                for c in range(E):
                    out[h, r, c] = src[0][h * D + r, c]
    elif role in ("bq", "bk", "bv"):
        heads = H if role == "bq" else KV
        out = np.zeros((heads, AD), np.float32)
        for h in range(heads):
            for r in range(D):
                out[h, r] = src[0][h * D + r]
    elif role == "wo":
        out = np.zeros((H, AE, AD), np.float32)
        for h in range(H):
            for r in range(E):
                for c in range(D):
                    out[h, r, c] = src[0][r, h * D + c]
    elif role == "w1":
        out = np.zeros((2 * AI, AE), np.float32)
        for r in range(I):
            for c in range(E):
                out[r, c] = src[0][r, c]          # gate
                out[AI + r, c] = src[1][r, c]     # up
    elif role == "w2":
        out = np.zeros((AE, AI), np.float32)
        for r in range(E):
            for c in range(I):
                out[r, c] = src[0][r, c]
    else:
        raise AssertionError(role)
    return out


ROLES = ["token_emb", "ln1", "q_norm", "k_norm", "wq", "bq", "wk", "bk", "wv", "bv", "wo",
         "ln2", "w1", "w2", "final_norm", "lm_head"]


@pytest.mark.parametrize("role", ROLES)
def test_pack_matches_the_element_rule_and_unpack_inverts_it(role: str) -> None:
    slot = slots()[role]
    rng = np.random.default_rng(ROLES.index(role))
    src = random_sources(slot, rng)
    packed = pack(slot, src)
    assert packed.size * 4 == slot.dtype.nbytes(slot.numel)
    np.testing.assert_array_equal(packed.ravel(), element_rule(role, src).ravel())
    for got, want in zip(unpack(slot, packed), src):
        np.testing.assert_array_equal(got, want)
    assert first_nonzero_padding(slot, packed) is None


class _ArraySource:
    """Stands in for bumpconv.conversion.source.Source: serves named fp32 or bf16 arrays by element range."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self.tensors = {n: TensorInfo(n, Path("mem"), "BF16" if a.dtype == np.uint16 else "F32",
                                      a.shape, 0, a.nbytes) for n, a in arrays.items()}

    def read_raw(self, name: str, start: int, count: int) -> np.ndarray:
        return self.arrays[name].ravel()[start:start + count].copy()

    def read(self, name: str, start: int, count: int, out: np.ndarray | None = None) -> np.ndarray:
        return widen(self.read_raw(name, start, count), out)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("chunk_bytes", [64, 1000, 1 << 20])
@pytest.mark.parametrize("bf16", [False, True])
def test_streaming_row_form_equals_pack(role: str, chunk_bytes: int, bf16: bool,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunk sizes from one row to the whole tensor, with and without whole-source caching,
    from fp32 and from bf16 (widened by the writer only where it is used)."""
    slot = slots()[role]
    src = random_sources(slot, np.random.default_rng(7))
    if bf16:
        stored = [(a.view(np.uint32) >> 16).astype(np.uint16) for a in src]
        src = [widen(a) for a in stored]
    else:
        stored = src
    source = _ArraySource(dict(zip(slot.sources, stored)))
    want = pack(slot, src).reshape(-1, slot.shape[-1])
    for limit in (0, 1 << 30):
        monkeypatch.setattr("bumpconv.conversion.stream.WHOLE_SOURCE_LIMIT", limit)
        blocks = [block.copy() for block, _ in packed_chunks(slot, source, chunk_bytes)]  # type: ignore[arg-type]
        np.testing.assert_array_equal(np.concatenate(blocks), want)


def test_row_map_of_wo_reads_head_columns_with_a_row_stride() -> None:
    rm = row_map(slots()["wo"])
    assert (rm.rows, rm.width, rm.run) == (H * AE, AD, D)
    # logical row (h, r) -> packed row h*AE + r, source o_proj[r, h*D : h*D + D]
    assert rm.pad_rows[1] == 1 and rm.pad_rows[E] == AE
    assert rm.src_start[1] == H * D and rm.src_start[E] == D


def test_nonzero_padding_is_found_with_its_index() -> None:
    slot = slots()["wq"]
    packed = pack(slot, random_sources(slot, np.random.default_rng(1)))
    packed[1, D + 2, 3] = 1.0
    assert first_nonzero_padding(slot, packed, block_rows=1) == (1, D + 2, 3)
    zero = slots("bumpwgt3")
    assert "pos_emb" in zero and zero["pos_emb"].box is None
    z = np.zeros(zero["pos_emb"].shape, np.float32)
    z[-1, -1] = 2.0
    assert first_nonzero_padding(zero["pos_emb"], z) == (DIMS["T"] - 1, AE - 1)


def test_v3_layer_order_and_sizes() -> None:
    v3 = expand_tensors(load_profile("bumpwgt3"), DIMS,
                        {**FLAGS, "untied": False, "qk_norm": False}, None)
    names = [s.name for s in v3]
    assert names[:2] == ["token_emb", "pos_emb"] and names[-2:] == ["final_ln_weight", "final_bias"]
    assert [n.split(".")[-1] for n in names[2:16]] == [
        "ln1_gamma", "ln2_gamma", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "w1", "b1", "w2", "b2"]
    assert len(v3) == 14 * DIMS["L"] + 4
    sizes = {s.role: math.prod(s.shape) for s in v3}
    assert sizes["pos_emb"] == DIMS["T"] * AE and sizes["b1"] == 2 * AI and sizes["bo"] == AE
