"""GGUF files as a source: tiny GGUFs made by llama.cpp's own converter from the tiny HF models,
converted and proven against transformers' GGUF loader (which dequantizes and un-permutes on
its own); the Q/K un-permutation's absence and doubling caught by parity; hostile files refused
by name, leaving nothing behind."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bumpconv.conversion import gguf_source
from bumpconv.conversion.gguf_source import open_gguf
from bumpconv.format.errors import LayoutError
from tools import gguf_fixtures
from tools.fixtures import tiny_tokenizer

pytestmark = pytest.mark.model  # building a GGUF runs llama.cpp's converter (torch)

MODEL = "llama-quant"  # rows of 256: q8_0 and K-quant blocks fit everywhere but wo's heads


@pytest.fixture(scope="module")
def gguf_of(tiny: Callable[..., Path], cache_dir: Path) -> Callable[[str], Path]:
    """``gguf_of(type)``: the tiny model as a GGUF of that type (f32, f16, q8_0: the converter's
    --outtype; q4_k: the f32 file's matrices re-quantized), cached in .cache/gguf-tests."""
    out_dir = cache_dir / "gguf-tests"
    vocab = tiny_tokenizer("sentencepiece", cache_dir)  # llama.cpp's converter needs one

    def get(qtype: str) -> Path:
        if qtype in gguf_fixtures.CONVERTER_TYPES:
            return gguf_fixtures.hf_to_gguf(tiny(MODEL), out_dir / f"{MODEL}-{qtype}.gguf",
                                            qtype, cache_dir, tokenizer=vocab)
        return gguf_fixtures.requantize(get("f32"), out_dir / f"{MODEL}-{qtype}.gguf", qtype)
    return get


def _own_dir(gguf: Path, tmp_path: Path) -> Path:
    """The GGUF alone in a directory (parity's source directory holds nothing else)."""
    dst = tmp_path / "src" / gguf.name
    dst.parent.mkdir(exist_ok=True)
    shutil.copy(gguf, dst)
    return dst


@pytest.mark.parametrize("qtype", ["f32", "f16", "q8_0", "q4_k"])
def test_gguf_converts_and_passes_parity(gguf_of: Callable[[str], Path], tmp_path: Path,
                                         cli: Callable[..., object], qtype: str) -> None:
    """Every type converts dequantized (--quant f32), is the GGUF's values bit for bit, and
    meets the fp32 parity thresholds against transformers' GGUF model."""
    src = _own_dir(gguf_of(qtype), tmp_path)
    blob = tmp_path / "m.bump"
    assert cli("convert", src, blob, "--quant", "f32", "--quiet").code == 0
    assert cli("verify", blob, "--against", src).code == 0
    result = cli("parity", src, blob)
    assert result.code == 0, result.out[-2000:]
    assert "PASS" in result.out


def test_keep_passes_blocks_through(gguf_of: Callable[[str], Path], tmp_path: Path,
                                   cli: Callable[..., object]) -> None:
    """q8_0 by default keeps its blocks: the blob's dequantized weights are transformers' GGUF
    weights bit for bit (un-permuted Q/K included), and verify proves the blocks."""
    from bumpconv.comparison.dequantized import load_dequantized
    from bumpconv.blob.reader import open_blob
    src = _own_dir(gguf_of("q8_0"), tmp_path)
    blob = tmp_path / "m.bump"
    assert cli("convert", src, blob, "--quiet").code == 0
    with open_blob(blob) as bf:
        assert {t.dtype.label for t in bf.tensors if t.slot.role == "wq"} == {"q8_0"}
        assert bf.metadata.bumpconv.quantization.policy == "keep"
    assert cli("verify", blob, "--against", src).code == 0
    assert load_dequantized(str(src), blob).identical


def test_keep_refuses_blocks_the_layout_splits(gguf_of: Callable[[str], Path],
                                               tmp_path: Path, cli: Callable[..., object]) -> None:
    """q4_k wo rows are 256 wide in the GGUF but 64 per head in the blob: refused by name,
    suggesting --quant; nothing is written."""
    src = gguf_of("q4_k")
    blob = tmp_path / "m.bump"
    result = cli("convert", src, blob, "--quiet")
    assert result.code != 0
    assert "blk.0.attn_output.weight" in result.err and "Q4_K" in result.err
    assert "--quant" in result.err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("mistake", ["missing", "double"])
def test_unpermutation_mistakes_fail_parity(gguf_of: Callable[[str], Path], tmp_path: Path,
                                            cli: Callable[..., object],
                                            monkeypatch: pytest.MonkeyPatch, mistake: str) -> None:
    """Converting without un-permuting Q/K, or un-permuting twice, is RoPE applied to the
    wrong pairs: parity fails, in layer 0."""
    src = _own_dir(gguf_of("f32"), tmp_path)
    real = gguf_source.llama_permutation
    if mistake == "missing":
        monkeypatch.setattr(gguf_source, "llama_permutation",
                            lambda rows, heads: np.arange(rows))
    else:
        monkeypatch.setattr(gguf_source, "llama_permutation",
                            lambda rows, heads: real(rows, heads)[real(rows, heads)])
    blob = tmp_path / "m.bump"
    assert cli("convert", src, blob, "--quiet").code == 0
    monkeypatch.setattr(gguf_source, "llama_permutation", real)
    result = cli("parity", src, blob)
    assert result.code == 1
    assert "FAIL" in result.out


def test_spec_from_keys(gguf_of: Callable[[str], Path], tiny: Callable[..., Path]) -> None:
    """The GGUF's keys give the checkpoint's own spec (tied-ness from output.weight)."""
    from bumpconv.files.checkpoint import load_spec
    want = load_spec(tiny(MODEL) / "config.json")
    with open_gguf(str(gguf_of("f32"))) as source:
        got = source.spec
    for field in ("num_layers", "vocab_size", "hidden_size", "intermediate_size", "num_heads",
                  "num_kv_heads", "head_dim", "rms_norm_eps", "tie_word_embeddings"):
        assert getattr(got, field) == pytest.approx(getattr(want, field)), field
    assert got.rope.theta == want.rope.theta


def test_keep_is_only_for_gguf(tiny: Callable[..., Path], tmp_path: Path,
                               cli: Callable[..., object]) -> None:
    result = cli("convert", tiny(MODEL), tmp_path / "m.bump", "--quant", "keep", "--quiet")
    assert result.code != 0 and "only a GGUF source" in result.err


def test_kept_dtype_names_unsupported_type(gguf_of: Callable[[str], Path]) -> None:
    """A type the blob has no code for is refused by tensor and type under keep."""
    with open_gguf(str(gguf_of("f32"))) as source:
        t = source.gguf_tensors["model.layers.0.self_attn.v_proj.weight"]
        source.gguf_tensors[t.hf_name] = gguf_source.GGUFTensor(t.hf_name, t.gguf_name, "Q2_K",
                                                                 t.rows, t.data)
        from bumpconv.conversion.plan import plan_conversion
        with pytest.raises(LayoutError, match=r"'blk\.0\.attn_v\.weight' is Q2_K"):
            plan_conversion(source, "engine-v7")
