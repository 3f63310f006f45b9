"""Parity of quantized blobs: the reference is transformers' own model carrying the blob's
dequantized weights, and the runtime's fp32-activation path must then meet the fp32 thresholds
(the quantization error itself is `bumpconv eval`'s business, not parity's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from parity_helpers import convert


@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m", "q5_1"])
def test_a_quantized_blob_passes_parity_against_hf_with_its_own_weights(
        tiny: Callable[..., Path], cli, tmp_path: Path, quant: str) -> None:
    src = tiny("llama-quant")
    blob = convert(src, tmp_path / "q.bump", "engine-v7", ["--quant", quant])
    r = cli("parity", src, blob, "--json")
    assert r.code == 0, r.out + r.err
    report = json.loads(r.out)
    assert any("dequantized weights" in n for n in report["notes"]), report["notes"]
    assert report["passed"]


def test_the_dequantized_reference_is_not_the_fp32_one(tiny: Callable[..., Path], cli,
                                                       tmp_path: Path) -> None:
    """The same runtime logits compared with HF fp32 instead would be far off: the note is not
    decoration, the reference really carries the blob's weights."""
    from bumpconv.comparison.reference import Reference
    from bumpconv.run.runtime import BumpModel
    src = tiny("llama-quant")
    blob = convert(src, tmp_path / "q.bump", "bumpwgt5", ["--quant", "q4_0"])
    ids = list(range(3, 40))
    with BumpModel.open(blob) as model:
        got = model.forward(ids, all_logits=True)
    fp32 = Reference.load(str(src)).run(ids).logits
    assert abs(got - fp32).max() > 1e-2
