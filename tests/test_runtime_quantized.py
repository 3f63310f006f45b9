"""The C runtime on quantized blobs: a blob converted with ``--quant`` runs, and its logits equal
those of the same model with the blob's weights dequantized into an fp32 blob (fp32 activations:
only the order of the fp32 sums differs). int8 activations stay close to them. No torch: the
models are the numpy-built synthetic fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from bumpconv.blob.reader import open_blob
from bumpconv.cli import main as cli_main
from bumpconv.format.dtypes import DType
from bumpconv.format.errors import KernelError
from bumpconv.format.packing import quant_row
from bumpconv.native.quant import dequantize
from bumpconv.format.stages import STAGES
from bumpconv.run.runtime import BumpModel

IDS = [3, 17, 5, 60, 2, 9, 41, 33, 8, 21, 14, 50]


def convert(src: Path, out: Path, *extra: str) -> Path:
    out.parent.mkdir()
    assert cli_main(["convert", str(src), str(out), "--quiet", *extra]) == 0
    return out


def dequantized_copy(quantized: Path, fp32: Path, out: Path) -> Path:
    """``fp32`` (the same source converted without --quant) with every tensor's bytes replaced
    by ``quantized``'s tensor dequantized (same slots, same padded shapes)."""
    shutil.copyfile(fp32, out)
    with open_blob(quantized) as q, open_blob(fp32) as f, open(out, "r+b") as dst:
        places = {t.name: t for t in f.tensors}
        for t in q.tensors:
            if t.slot.content != "weights" or t.slot.zeros:
                continue
            if t.dtype == DType.FP32:
                values = q.array(t.name)
            else:
                cols = quant_row(t.slot)  # engine-v7's wo: rows of H*D
                values = dequantize(q.tensor_bytes(t.name), t.dtype, t.slot.numel // cols, cols)
            place = places[t.name]
            assert place.dtype == DType.FP32 and place.nbytes == values.nbytes, t.name
            dst.seek(place.offset)
            dst.write(np.ascontiguousarray(values, dtype=np.float32).tobytes())
    return out


@pytest.fixture(scope="module")
def blobs(synthetic: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
          ) -> Callable[[str, str], tuple[Path, Path]]:
    """``blobs(model, quant)`` -> (quantized blob, its dequantized fp32 twin)."""
    made: dict[tuple[str, str], tuple[Path, Path]] = {}

    def get(model: str, quant: str) -> tuple[Path, Path]:
        if (model, quant) not in made:
            src = synthetic(model)
            d = tmp_path_factory.mktemp(f"{model}-{quant}")
            fp32 = convert(src, d / "fp32" / "m.bump")
            q = convert(src, d / "q" / "m.bump", "--quant", quant)
            made[model, quant] = q, dequantized_copy(q, fp32, d / "deq.bump")
        return made[model, quant]
    return get


@pytest.mark.parametrize("model", ["llama-quant", "llama-tied"])
@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m"])
def test_a_quantized_blob_runs_as_its_dequantized_fp32_twin(blobs, model: str,
                                                            quant: str) -> None:
    qblob, deq = blobs(model, quant)
    with open_blob(qblob) as bf:
        dtypes = {t.dtype for t in bf.tensors if t.slot.content == "weights"}
    assert dtypes - {DType.FP32}, "the blob is not quantized at all"
    with BumpModel.open(qblob, threads=2) as q, BumpModel.open(deq, threads=2) as f:
        got, want = q.forward(IDS), f.forward(IDS)  # prefill: the GEMM path
        q.reset()
        f.reset()
        steps = [(q.decode(t), f.decode(t)) for t in IDS[:4]]  # decode: the GEMV path
    bound = 1e-4 * np.abs(want).max()
    assert np.abs(got - want).max() <= bound
    for a, b in steps:
        assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()


@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m"])
def test_int8_activations_close_to_fp32_ones(blobs, quant: str) -> None:
    """Decode (GEMV) and prefill (the int8 GEMM, where the level has one): not exact (the
    activations are rounded to 8 bits, and this random model grows that rounding over its
    layers: measured 2-5 % of the largest logit), but a wrong scale or unpacking would be off by
    the logits' own size. The kernels' exactness is test_kernels.py's job."""
    qblob, _ = blobs("llama-quant", quant)
    with BumpModel.open(qblob, threads=2) as f, \
            BumpModel.open(qblob, threads=2, activations="int8") as i8:
        for t in IDS[:6]:
            a, b = i8.decode(t), f.decode(t)
            assert 0 < np.abs(a - b).max() <= 0.1 * np.abs(b).max()
        i8.reset()
        f.reset()
        a, b = i8.prefill(IDS), f.prefill(IDS)
        assert 0 < np.abs(a - b).max() <= 0.1 * np.abs(b).max()


def test_an_unknown_activation_type_is_refused(blobs) -> None:
    qblob, _ = blobs("llama-quant", "q8_0")
    with pytest.raises(ValueError, match="activations must be one of fp32, int8"):
        BumpModel.open(qblob, activations="int4")


def test_an_unusable_kernel_level_fails_open_by_name(blobs, monkeypatch, cli) -> None:
    qblob, _ = blobs("llama-quant", "q8_0")
    monkeypatch.setenv("BUMPCONV_KERNELS", "avx9000")
    with pytest.raises(KernelError, match="BUMPCONV_KERNELS=avx9000: unknown kernel level"):
        BumpModel.open(qblob)
    r = cli("run", qblob, "--prompt", "hi", "-n", "1")
    assert r.code != 0 and "BUMPCONV_KERNELS=avx9000" in r.err, r.err


def test_the_model_reports_the_level_it_runs(blobs, monkeypatch) -> None:
    qblob, _ = blobs("llama-quant", "q8_0")
    monkeypatch.setenv("BUMPCONV_KERNELS", "portable")
    with BumpModel.open(qblob) as m:
        assert m.kernels.startswith("portable")


@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m"])
def test_int8_prefill_first_row_equals_int8_decode_stage_by_stage(blobs, quant: str) -> None:
    """The first position of a prefill (GEMM: Q/K/V in one call, wo, the stacked gate/up, down)
    against the same token decoded alone (GEMV), every stage of a layer, both on int8
    activations: the same quantized inputs, so they agree up to fp32 summation order (the int8
    rounding amplifies differences only across layers)."""
    qblob, _ = blobs("llama-quant", quant)
    with BumpModel.open(qblob, threads=2, activations="int8") as m:
        many = m.taps(IDS, 0)
        m.reset()
        one = m.taps(IDS[:1], 0)
    checked = [s.key for s in STAGES if s.key in many and s.position_axis == 0]
    assert len(checked) >= 12
    for stage in checked:
        got, want = many[stage][0], one[stage][0]
        assert np.abs(got - want).max() <= 1e-5 * max(np.abs(want).max(), 1e-30), stage
