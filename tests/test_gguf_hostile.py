"""Hostile GGUF files (made with the gguf package's writer, no torch): each is refused with an
error naming the file and what is wrong, no traceback, and nothing written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


def _write_gguf(path: Path, arch: str, keys: dict[str, object],
                tensors: dict[str, np.ndarray], quantized: object = None) -> Path:
    """``quantized``: the ggml type of the uint8 (block) arrays among ``tensors``."""
    from gguf import GGUFWriter
    w = GGUFWriter(path, arch)
    for key, value in keys.items():
        if isinstance(value, float):
            w.add_float32(key, value)
        else:
            w.add_uint32(key, int(value))
    for name, array in tensors.items():
        w.add_tensor(name, array, raw_dtype=quantized if array.dtype == np.uint8 else None)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


_KEYS = {"llama.block_count": 1, "llama.context_length": 64, "llama.embedding_length": 32,
         "llama.feed_forward_length": 64, "llama.attention.head_count": 2,
         "llama.attention.head_count_kv": 2, "llama.rope.freq_base": 10000.0,
         "llama.attention.layer_norm_rms_epsilon": 1e-5}


def _tensors() -> dict[str, np.ndarray]:
    z = lambda *shape: np.zeros(shape, dtype=np.float32)  # noqa: E731
    return {"token_embd.weight": z(40, 32), "output_norm.weight": z(32),
            "blk.0.attn_norm.weight": z(32), "blk.0.ffn_norm.weight": z(32),
            "blk.0.attn_q.weight": z(32, 32), "blk.0.attn_k.weight": z(32, 32),
            "blk.0.attn_v.weight": z(32, 32), "blk.0.attn_output.weight": z(32, 32),
            "blk.0.ffn_gate.weight": z(64, 32), "blk.0.ffn_up.weight": z(64, 32),
            "blk.0.ffn_down.weight": z(32, 64)}


@pytest.mark.parametrize("damage, message", [
    ("truncated", "truncated: tensor 'blk.0.ffn_down.weight' (F32) ends at byte"),
    ("truncated-header", "not a readable GGUF file"),
    ("magic", "not a GGUF file"),
    ("arch", "GGUF architecture 'falcon' is not supported"),
    ("key", "required GGUF key 'llama.embedding_length' is missing"),
    ("ill-typed", "GGUF key 'llama.block_count' must be an integer"),
    ("tensor", "GGUF tensor 'blk.0.attn_mystery.weight' has no Hugging Face counterpart"),
    ("rope-freqs", "rope_freqs.weight"),
])
def test_hostile_gguf_is_refused(tmp_path: Path, cli: Callable[..., object], damage: str,
                                 message: str) -> None:
    keys, tensors, arch = dict(_KEYS), _tensors(), "llama"
    if damage == "arch":
        arch = "falcon"
        keys = {k.replace("llama.", "falcon."): v for k, v in keys.items()}
    if damage == "key":
        del keys["llama.embedding_length"]
    if damage == "ill-typed":
        keys["llama.block_count"] = 1.5
    if damage == "tensor":
        tensors["blk.0.attn_mystery.weight"] = np.zeros(32, dtype=np.float32)
    if damage == "rope-freqs":
        tensors["rope_freqs.weight"] = np.ones(8, dtype=np.float32)
    src = _write_gguf(tmp_path / "bad.gguf", arch, keys, tensors)
    if damage == "truncated":
        data = src.read_bytes()
        src.write_bytes(data[:len(data) - 1000])
    if damage == "truncated-header":  # cut inside the key-value section
        src.write_bytes(src.read_bytes()[:100])
    if damage == "magic":
        data = src.read_bytes()
        src.write_bytes(b"GGUX" + data[4:])
    out = tmp_path / "out" / "m.bump"
    out.parent.mkdir()
    result = cli("convert", src, out, "--quiet")
    assert result.code != 0
    assert message in result.err and str(src) in result.err
    assert "Traceback" not in result.err
    assert not list(out.parent.iterdir())


def test_well_formed_synthetic_gguf_converts(tmp_path: Path, cli: Callable[..., object]) -> None:
    """The hostile cases' base file is itself fine (so each case fails for its one damage)."""
    src = _write_gguf(tmp_path / "ok.gguf", "llama", dict(_KEYS), _tensors())
    assert cli("convert", src, tmp_path / "m.bump", "--quiet").code == 0


def test_inspect_describes_a_gguf(tmp_path: Path, cli: Callable[..., object]) -> None:
    """``inspect FILE.gguf``: the model as read, the un-permuted tensors, what keep would do."""
    src = _write_gguf(tmp_path / "ok.gguf", "llama", dict(_KEYS), _tensors())
    result = cli("inspect", src)
    assert result.code == 0
    assert "llama: 1 layers, hidden 32, heads 2 (kv 2) x 16" in result.out
    assert "tokenizer none carried" in result.out and "keep      engine-v7: ok" in result.out
    q = next(line for line in result.out.splitlines() if "blk.0.attn_q.weight" in line)
    v = next(line for line in result.out.splitlines() if "blk.0.attn_v.weight" in line)
    assert q.rstrip().endswith("yes") and not v.rstrip().endswith("yes")


def test_requantizing_a_quantized_gguf_says_so(tmp_path: Path, cli: Callable[..., object]) -> None:
    """--quant TYPE on a GGUF whose tensors are already quantized converts (the user asked),
    with one warning naming the types and --quant keep; a float GGUF gets no warning."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize
    tensors = _tensors()
    rng = np.random.default_rng(0)
    for name in ("blk.0.ffn_gate.weight", "blk.0.ffn_up.weight"):
        tensors[name] = quantize(rng.standard_normal((64, 32)).astype(np.float32),
                                 GGMLQuantizationType.Q8_0)
    src = _write_gguf(tmp_path / "q.gguf", "llama", dict(_KEYS), tensors,
                      GGMLQuantizationType.Q8_0)
    result = cli("convert", src, tmp_path / "m.bump", "--quant", "q8_0", "--quiet")
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if "already quantized" in line]
    assert len(warnings) == 1 and "(Q8_0)" in warnings[0] and "--quant keep" in warnings[0]
    assert "--allow-requantize" in warnings[0] and str(src) in warnings[0]
    dry = cli("convert", src, tmp_path / "n.bump", "--quant", "Q4_0", "--dry-run", "--quiet",
              "--profile", "bumpwgt5")  # q4_0: no engine kernel
    assert dry.code == 0 and "already quantized" in dry.err
    float_src = _write_gguf(tmp_path / "f.gguf", "llama", dict(_KEYS), _tensors())
    (tmp_path / "f").mkdir()  # the engine's sidecars of the first blob are in tmp_path
    result = cli("convert", float_src, tmp_path / "f" / "f.bump", "--quant", "q8_0", "--quiet")
    assert result.code == 0 and "already quantized" not in result.err
