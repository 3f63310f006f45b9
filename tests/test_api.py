"""The front door: ``import bumpconv`` and its verbs, end to end on numpy-built checkpoints
(fast lane: no torch), and the reading verb ``safe_open`` against the source's own tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from safetensors.numpy import load_file

import bumpconv
from bumpconv.format.dtypes import dtype_named
from bumpconv.format.packing import pack, quant_row, unpack
from bumpconv.native.quant import dequantize, quantize


def test_convert_inspect_verify_load_generate(synthetic: Callable[..., Path],
                                              tmp_path: Path) -> None:
    src = synthetic("llama-untied")
    out = tmp_path / "m.bump"
    result = bumpconv.convert(src, out)
    assert out.stat().st_size == result.size
    info = bumpconv.inspect(out, check=True)
    assert info["checksum_status"] == "ok" and info["profile"] == "engine-v7"
    assert bumpconv.verify(out, src).elements == info["totals"]["parameters"]
    with bumpconv.load_model(out) as model:
        logits = model.forward([1, 2, 3])
        tokens = model.generate([1, 2, 3], 5)
        assert isinstance(model, bumpconv.BumpModel)
        for bad in (-1, 0, 2.5, True):
            with pytest.raises(bumpconv.BumpError, match="max_new_tokens must be a positive"):
                model.generate([1, 2, 3], bad)  # type: ignore[arg-type]
    assert logits.shape == (3, info["model"]["vocab_size"])
    assert len(tokens) == 5 and tokens[0] == int(logits[-1].argmax())
    with pytest.raises(bumpconv.BumpError, match="already exists"):
        bumpconv.convert(src, out)
    assert bumpconv.__version__
    assert set(bumpconv.__all__) >= {"convert", "safe_open", "load_model", "parity"}


def test_open_is_the_old_name_of_load_model(synthetic: Callable[..., Path],
                                            tmp_path: Path) -> None:
    out = tmp_path / "m.bump"
    bumpconv.convert(synthetic("llama-tied"), out)
    with pytest.warns(DeprecationWarning, match="renamed bumpconv.load_model"):
        opened = bumpconv.open(out)
    with opened as model:
        assert isinstance(model, bumpconv.BumpModel)
    assert "open" not in bumpconv.__all__
    with pytest.raises(AttributeError):
        bumpconv.no_such_verb  # noqa: B018


@pytest.mark.parametrize("profile", ["engine-v7", "bumpwgt5", "bumpwgt3"])
def test_safe_open_gives_every_source_tensor_back_bit_for_bit(
        profile: str, synthetic: Callable[..., Path], tmp_path: Path) -> None:
    """fp32 blobs of every profile: keys() are the checkpoint's names, get_tensor() its arrays
    exactly (un-padded, heads and stacks undone)."""
    src = synthetic("llama-tied" if profile == "bumpwgt3" else "qwen2")
    out = tmp_path / "m.bump"
    bumpconv.convert(src, out, profile=profile, engine_sidecars=False)
    want = load_file(str(src / "model.safetensors"))
    config = src / "config.json" if profile == "bumpwgt3" else None
    with bumpconv.safe_open(out, framework="np", config=config) as f:
        assert sorted(f.keys()) == sorted(want)
        for name, array in want.items():
            got = f.get_tensor(name)
            assert got.dtype == np.float32 and got.shape == array.shape, name
            assert np.array_equal(got.view(np.uint32), array.view(np.uint32)), name
        meta = f.metadata()
        assert (meta is None) == (profile == "bumpwgt3")
        if meta is not None:
            assert meta["bumpconv"]["profile"] == profile
        raw = f.get_raw(f.packed_keys()[0])
        assert raw.dtype == np.float32 and f.dtype(f.packed_keys()[0]) == "fp32"
    got.fill(0)  # a copy: valid and writable after close


def test_safe_open_dequantizes_and_unpacks_a_quantized_blob(synthetic: Callable[..., Path],
                                                            tmp_path: Path) -> None:
    """A q8_0 blob: get_raw() is each packed tensor's ggml blocks, one row of blocks per
    quantized row; get_tensor() is the source packed, quantized, dequantized and unpacked - ggml's
    arithmetic, which verify and parity's dequantized reference run too."""
    src = synthetic("llama-quant")
    out = tmp_path / "q.bump"
    bumpconv.convert(src, out, quant="Q8_0")  # llama.cpp's spelling, any case
    want = load_file(str(src / "model.safetensors"))
    with bumpconv.safe_open(out) as f:
        bf = f._bf  # the placed tensors, to know each one's slot
        quantized = [t for t in bf.tensors if t.dtype.label != "fp32"]
        assert quantized
        for t in quantized:
            raw = f.get_raw(t.name)
            cols = quant_row(t.slot)  # the rows its blocks run along (engine-v7's wo: H*D)
            rows = t.slot.numel // cols
            assert raw.dtype == np.uint8 and raw.shape == (rows, t.nbytes // rows)
            packed = pack(t.slot, [want[n] for n in t.slot.sources])
            blocks = quantize(packed.reshape(rows, -1), dtype_named(f.dtype(t.name)))
            assert blocks.tobytes() == raw.tobytes(), t.name
            values = dequantize(blocks, t.dtype, rows, cols).reshape(t.slot.shape)
            for name, expected in zip(t.slot.sources, unpack(t.slot, values)):
                assert np.array_equal(f.get_tensor(name), expected), name
                assert f.dtype(name) == "q8_0"
                err = np.abs(f.get_tensor(name) - want[name]).max()
                assert 0 < err <= np.abs(want[name]).max() / 127, name


def test_safe_open_names_what_it_does_not_hold(synthetic: Callable[..., Path],
                                               tmp_path: Path) -> None:
    out = tmp_path / "m.bump"
    bumpconv.convert(synthetic("llama-untied"), out)
    with bumpconv.safe_open(out) as f:
        with pytest.raises(bumpconv.BlobError, match="'layer.0.w1' is a packed tensor: "
                                                     "get_raw"):
            f.get_tensor("layer.0.w1")
        with pytest.raises(bumpconv.BlobError, match="is an HF name, held by packed tensor "
                                                     "'layer.0.w1'"):
            f.get_raw("model.layers.0.mlp.up_proj.weight")
        with pytest.raises(bumpconv.BlobError, match="no tensor 'nope'"):
            f.get_tensor("nope")
    with pytest.raises(bumpconv.BumpError, match="framework 'pt'"):
        bumpconv.safe_open(out, framework="pt")


def test_swapped_arguments_name_the_right_order(synthetic: Callable[..., Path], cli,
                                                tmp_path: Path) -> None:
    src = synthetic("llama-untied")
    out = tmp_path / "m.bump"
    bumpconv.convert(src, out)
    r = cli("verify", src, "--against", out)
    assert r.code == 1 and f"the blob comes first (bumpconv verify {out} --against {src}" in r.err
    for verb in ("parity", "eval"):  # refused before anything slow (or torch) starts
        r = cli(verb, out, src)
        assert r.code == 1 and f"the source comes first (bumpconv {verb} {src} {out}" in r.err
    with pytest.raises(bumpconv.BumpError, match="the source comes first"):
        bumpconv.parity(out, src)
    with pytest.raises(bumpconv.BumpError, match="the blob comes first"):
        bumpconv.verify(src, out)
