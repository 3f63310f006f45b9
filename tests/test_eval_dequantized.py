"""HF's model carrying a blob's weights (bumpconv.comparison.dequantized).

For an fp32 blob of SRC it must be SRC's model bit for bit; for a blob of other weights it must
carry exactly those; every HF parameter is filled exactly once; a non-fp32 tensor goes through
the dequantizer with its packed rows and columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from bumpconv.blob.reader import open_blob
from bumpconv.format.dtypes import DType
from bumpconv.format.errors import ParityError
from bumpconv.blob.tensors import packed_fp32
from bumpconv.comparison.dequantized import load_blob_weights, load_dequantized
from bumpconv.format.packing import quant_row
from bumpconv.comparison.reference import Reference
from parity_helpers import Defect, build_defective, convert


def bf16_rounded() -> Defect:
    """Every weight rounded to bf16 (kept in fp32): a stand-in for a quantized blob, whose
    dequantized weights differ from SRC's while the runtime runs them in fp32."""
    def edit(t: dict[str, np.ndarray], config: dict[str, Any], spec: Any) -> None:
        for name, value in t.items():
            bits = value.astype(np.float32).view(np.uint32)
            rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
            t[name] = rounded.view(np.float32)
    return Defect("bf16 rounded", "-", None, edit)


@pytest.mark.parametrize("model, fmt", [("llama-untied", "bumpwgt5"), ("qwen2", "bumpwgt5"),
                                        ("qwen3", "bumpwgt5"), ("llama-tied", "bumpwgt3")])
def test_an_fp32_blob_gives_the_source_model_bit_for_bit(
        tiny: Callable[..., Path], tmp_path: Path, model: str, fmt: str) -> None:
    import torch
    src = tiny(model)
    blob = convert(src, tmp_path / "b.bump", fmt)
    deq = load_dequantized(str(src), blob)
    ref = Reference.load(str(src))
    assert deq.identical and deq.dtypes == {DType.FP32}
    want = dict(ref.model.named_parameters())
    got = dict(deq.reference.model.named_parameters())
    assert got.keys() == want.keys()
    for name, p in got.items():
        assert torch.equal(p, want[name]), name
    ids = list(range(1, 40))
    assert np.array_equal(deq.reference.run(ids).logits, ref.run(ids).logits)


def test_a_blob_of_other_weights_is_carried_exactly(tiny: Callable[..., Path],
                                                    tmp_path: Path) -> None:
    src = tiny("llama-untied")
    blob = build_defective(src, tmp_path / "r.bump", bf16_rounded())
    deq = load_dequantized(str(src), blob)
    assert not deq.identical
    from safetensors.numpy import load_file
    edited = load_file(next(tmp_path.glob("*-src")) / "model.safetensors")
    for name, p in deq.reference.model.named_parameters():
        assert np.array_equal(p.detach().numpy(), edited[name]), name


def test_every_parameter_is_filled_exactly_once(tiny: Callable[..., Path],
                                                tmp_path: Path) -> None:
    import torch
    src = tiny("llama-untied")
    blob = convert(src, tmp_path / "b.bump")
    model = Reference.load(str(src)).model
    model.register_parameter("extra", torch.nn.Parameter(torch.zeros(3)))
    model.model.norm.weight = None  # HF no longer has the final norm the blob holds
    with open_blob(blob) as bf, pytest.raises(ParityError) as err:
        load_blob_weights(model, bf)
    message = str(err.value)
    assert "HF parameters the blob does not hold: extra" in message
    assert "blob tensors HF has no parameter for: model.norm.weight (from final_ln_weight)" \
        in message


@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m"])
def test_quantized_tensors_are_dequantized_by_packed_rows(tiny: Callable[..., Path],
                                                          tmp_path: Path, quant: str) -> None:
    """Each quantized tensor reaches HF as gguf's own dequantization of its packed rows, and
    the model then holds those values (not SRC's)."""
    from gguf.quants import dequantize as gguf_dequantize
    from gguf.constants import GGMLQuantizationType
    src = tiny("llama-quant")
    blob = convert(src, tmp_path / "b.bump", "engine-v7", ["--quant", quant])
    seen = set()
    with open_blob(blob) as bf:
        for t in bf.tensors:
            if t.dtype == DType.FP32 or t.slot.content != "weights":
                continue
            rows = t.slot.numel // quant_row(t.slot)  # engine-v7's wo: rows of H*D
            raw = np.frombuffer(bf.tensor_bytes(t.name), dtype=np.uint8).reshape(rows, -1)
            want = gguf_dequantize(raw, GGMLQuantizationType[t.dtype.name])
            assert np.array_equal(packed_fp32(bf, t), want.reshape(t.slot.shape)), t.name
            seen.add(t.dtype)
    assert seen, "the policy quantized nothing"
    deq = load_dequantized(str(src), blob)
    assert not deq.identical and deq.dtypes - {DType.FP32, DType.I32, DType.U8} == seen
