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
from bumpconv.blob.tensors import packed_fp32
from bumpconv.format.dtypes import DType
from bumpconv.format.packing import quant_row, unpack
from bumpconv.native.kernels import int8_products
from bumpconv.native.quant import dequantize
from bumpconv.format.registry import registry
from bumpconv.format.stages import STAGES
from bumpconv.run.runtime import BumpModel
from kernel_levels import int8_round_trip

pytestmark = pytest.mark.usefixtures("kernel_level")

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
    """Decode (the GEMV, int8 for every quantized type) and prefill: not exact (the activations
    are rounded to 8 bits, and this random model grows that rounding over its layers: measured
    2-5 % of the largest logit), but a wrong scale or unpacking would be off by the logits' own
    size. The kernels' exactness is test_kernels.py's job.

    Prefill's layers take the int8 GEMM only where the level has one (``int8_products`` at
    M = 12): where no layer weight has, its hidden states are the fp32 ones bit for bit (the
    GEMM falls back to fp32, the same code on the same inputs), and the logits still differ,
    through the output head's GEMV over the last position (M = 1, int8)."""
    qblob, _ = blobs("llama-quant", quant)
    with open_blob(qblob) as bf:
        layer_dtypes = {t.dtype for t in bf.tensors if t.slot.content == "weights"
                        and t.name.startswith("layer.") and t.dtype != DType.FP32}
    with BumpModel.open(qblob, threads=2) as f, \
            BumpModel.open(qblob, threads=2, activations="int8") as i8:
        for t in IDS[:6]:
            a, b = i8.decode(t), f.decode(t)
            assert 0 < np.abs(a - b).max() <= 0.1 * np.abs(b).max()
        i8.reset()
        f.reset()
        a, b = i8.prefill(IDS), f.prefill(IDS)
        assert 0 < np.abs(a - b).max() <= 0.1 * np.abs(b).max()
        same = np.array_equal(i8.hidden_states(IDS), f.hidden_states(IDS))
    assert same == (not any(int8_products(d, len(IDS)) for d in layer_dtypes))


def test_an_unknown_activation_type_is_refused(blobs) -> None:
    qblob, _ = blobs("llama-quant", "q8_0")
    with pytest.raises(ValueError, match="activations must be one of fp32, int8"):
        BumpModel.open(qblob, activations="int4")


#: The products of a decoder layer: stage -> the stage it multiplies (its input tap). The weight
#: is the HF module STAGES names for the stage.
PRODUCTS = {"q": "ln1", "k": "ln1", "v": "ln1", "wo": "attn", "gate": "ln2", "up": "ln2",
            "down": "swiglu"}
#: The products the runtime runs in one kernel call (native/bump.c): a call of M > 1 rows takes
#: the int8 GEMM only when every one of its weights has one (kernels_int8.h, qgemm_applies);
#: ``int8_products`` answers per weight type, so the test combines its answers over the call.
CALLS = (("q", "k", "v"), ("wo",), ("gate", "up"), ("down",))


def hf_weights(blob: Path) -> dict[str, tuple[np.ndarray, DType]]:
    """Every HF weight the blob holds, dequantized and unpacked to HF's shape, with the dtype
    the runtime multiplies it in."""
    out: dict[str, tuple[np.ndarray, DType]] = {}
    with open_blob(blob) as bf:
        for t in bf.tensors:
            if t.slot.content == "weights" and not t.slot.zeros:
                for name, value in zip(t.slot.sources, unpack(t.slot, packed_fp32(bf, t))):
                    out[name] = (np.array(value, dtype=np.float64), t.dtype)
    return out


@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m"])
def test_int8_prefill_and_decode_run_the_path_the_runtime_names(blobs, quant: str,
                                                                kernel_level: str) -> None:
    """Prefill (M = 12 rows: the GEMM, with Q/K/V in one call, the stacked gate/up, the per-head
    wo) and the first token decoded alone (M = 1: the GEMV), both opened on int8 activations,
    every product of every layer. Which activations a product runs on is the runtime's answer
    (``int8_products(dtype, M)``): the GEMV runs int8 for every quantized type; the GEMM only
    where the level has an int8 GEMM for the type, else fp32 (AVX2 and portable today) - for
    every weight of the call (Q/K/V share one: a q6_K V keeps Q and K on fp32 too).

    1. Each side, each product: the stage equals the product of that side's own input tap with
       the blob's dequantized weight - the input's int8 round trip where the runtime says int8,
       the input itself where it says fp32 - up to fp32 summation order (1e-5 of the sum of
       |terms|, the kernel tests' bound). A product on the other path is off by the 8-bit
       rounding, ~1/254 of the terms: 400x the bound, so the path is proven, not assumed.
    2. Across sides, every stage in forward order while every product so far ran the same path
       on both (the int8 GEMM and the int8 GEMV: the same quantized inputs): the first prefill
       row equals the decoded token up to fp32 summation order (1e-5 of max|stage|). After the
       first product where prefill runs fp32 and decode int8, the rows differ by that rounding,
       grown by every later layer; 1. is then the exact statement.
    """
    qblob, _ = blobs("llama-quant", quant)
    weights = hf_weights(qblob)
    with BumpModel.open(qblob, threads=2, activations="int8") as m:
        assert m.kernels.split()[0] == kernel_level
        layers = m.spec.num_layers
        many = [m.taps(IDS, layer) for layer in range(layers)]
        one = [m.taps(IDS[:1], layer) for layer in range(layers)]
    family = registry().family("llama")
    assert family is not None
    role = {s.key: s.of for s in STAGES}
    same_path = True
    compared = 0
    for layer in range(layers):
        for stage in (s.key for s in STAGES if s.key in many[layer] and s.position_axis == 0):
            if stage in PRODUCTS:
                w, dtype = weights[family.hf_name(role[stage], layer)]
                call = next(c for c in CALLS if stage in c)
                dtypes = [weights[family.hf_name(role[s], layer)][1] for s in call]
                int8 = {}
                for side, taps in (("prefill", many[layer]), ("decode", one[layer])):
                    x = taps[PRODUCTS[stage]].reshape(len(taps[stage]), -1)
                    int8[side] = int8_products(dtype, len(x)) and (
                        len(x) == 1 or all(int8_products(d, len(x)) for d in dtypes))
                    xr = int8_round_trip(x) if int8[side] else x.astype(np.float64)
                    got = taps[stage].reshape(len(x), -1)
                    bound = 1e-5 * (np.abs(xr) @ np.abs(w).T) + 1e-30
                    assert np.all(np.abs(got - xr @ w.T) <= bound), (layer, stage, side, int8)
                assert int8["decode"], f"{dtype.label}: the GEMV has no int8 path"
                same_path = same_path and int8["prefill"]
            if same_path:
                got, want = many[layer][stage][0], one[layer][stage][0]
                assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), (layer, stage)
                compared += 1
    assert compared >= 1
