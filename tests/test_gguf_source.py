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
#: parity prompts that fit the tiny models' 256 positions with their tiny vocabulary
PROMPTS = ("--prompt", "The quick brown fox jumps over the lazy dog; 12345 times, naïvely.",
           "--prompt", "Hi")


@pytest.fixture(scope="module")
def gguf_of(tiny: Callable[..., Path], cache_dir: Path) -> Callable[[str], Path]:
    """``gguf_of(type)``: the tiny model as a GGUF of that type (f32, f16, q8_0: the converter's
    --outtype; q4_k: the f32 file's matrices re-quantized), cached in .cache/gguf-tests."""
    out_dir = cache_dir / "gguf-tests"
    vocab = tiny_tokenizer("byte-level", cache_dir)  # llama.cpp's converter needs one

    def get(qtype: str) -> Path:
        if qtype in gguf_fixtures.CONVERTER_TYPES:
            return gguf_fixtures.hf_to_gguf(tiny(MODEL), out_dir / f"{MODEL}-{qtype}.gguf",
                                            qtype, cache_dir, tokenizer=vocab, pre="llama-bpe")
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
    result = cli("parity", src, blob, *PROMPTS)
    assert result.code == 0, result.out[-2000:] + result.err[-500:]
    assert "PASS" in result.out and "ids identical" in result.out


@pytest.mark.parametrize("name", ["qwen2", "qwen3"])
def test_neox_architectures_are_not_unpermuted(tiny: Callable[..., Path], cache_dir: Path,
                                               tmp_path: Path, cli: Callable[..., object],
                                               name: str) -> None:
    """qwen2/qwen3 GGUFs (NeoX RoPE: llama.cpp leaves Q/K alone) convert to blobs that pass
    parity against the original checkpoint. (transformers' GGUF loader cannot load a qwen3
    whose head_dim is not hidden/heads, as this one's, so the checkpoint is the reference.)"""
    src = gguf_fixtures.hf_to_gguf(tiny(name), cache_dir / "gguf-tests" / f"{name}-f32.gguf",
                                   "f32", cache_dir, tokenizer=tiny_tokenizer("byte-level", cache_dir),
                                   pre="llama-bpe")
    with open_gguf(str(src)) as source:
        assert all(t.rows is None for t in source.gguf_tensors.values())
    blob = tmp_path / "m.bump"
    assert cli("convert", src, blob, "--quiet").code == 0
    result = cli("parity", tiny(name), blob)
    assert result.code == 0, result.out[-2000:]


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
    # the runtime runs the kept blocks; against transformers' GGUF model (the same weights)
    # the fp32 thresholds hold
    result = cli("parity", src, blob, *PROMPTS)
    assert result.code == 0, result.out[-2000:] + result.err[-500:]


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


def test_requantize_with_a_policy(gguf_of: Callable[[str], Path], tmp_path: Path,
                                  cli: Callable[..., object]) -> None:
    """--quant TYPE: the q4_k GGUF dequantized and quantized again by our policy (q8_0 here),
    which verify reproduces block for block from the dequantized source."""
    from bumpconv.blob.reader import open_blob
    src = gguf_of("q4_k")
    blob = tmp_path / "m.bump"
    assert cli("convert", src, blob, "--quant", "q8_0", "--quiet").code == 0
    with open_blob(blob) as bf:
        assert bf.metadata.bumpconv.quantization.policy == "q8_0"
        assert {t.dtype.label for t in bf.tensors if t.slot.role == "wo"} == {"q8_0"}
    assert cli("verify", blob, "--against", src).code == 0


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
    result = cli("parity", src, blob, *PROMPTS)
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


def test_both_sources_are_tensor_sources(gguf_of: Callable[[str], Path],
                                         tiny: Callable[..., Path]) -> None:
    """The converter is typed by the TensorSource protocol, not by either class: a checkpoint
    and a GGUF both are one, and only the GGUF is a BlockSource (``--quant keep``)."""
    from bumpconv.conversion.source import open_source
    from bumpconv.conversion.tensor_source import BlockSource, TensorSource
    with open_source(str(tiny(MODEL))) as checkpoint, \
            open_source(str(gguf_of("f32"))) as gguf:
        assert isinstance(checkpoint, TensorSource) and not isinstance(checkpoint, BlockSource)
        assert isinstance(gguf, BlockSource)
        assert checkpoint.read_all("model.norm.weight").tolist() == \
            gguf.read_all("model.norm.weight").tolist()


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


# -- the tokenizer ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smol_gguf(smol: Path, cache_dir: Path) -> Path:
    """SmolLM2's own Q4_1 GGUF (the `smol` fixture fetches it)."""
    from tools.fixtures import SMOLLM2_GGUF
    return cache_dir / "smollm2-gguf" / SMOLLM2_GGUF


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_tokenizer_json_is_transformers_own(gguf_of: Callable[[str], Path], smol_gguf: Path,
                                            which: str) -> None:
    """The tokenizer.json built from the GGUF's keys is the one transformers' GGUF loader builds
    (less the '<|endoftext|>' its GPT2Tokenizer appends, past the embedding's rows, when the
    vocabulary lacks one: no model row exists for it)."""
    import json

    from transformers import AutoTokenizer
    src = gguf_of("f32") if which == "tiny" else smol_gguf
    want = json.loads(AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
                      .backend_tokenizer.to_str())
    with open_gguf(str(src)) as source:
        rows = source.spec.vocab_size
        want["added_tokens"] = [t for t in want["added_tokens"] if t["id"] < rows]
        assert source.tokenizer_document() == want


def test_blob_carries_the_gguf_tokenizer(smol_gguf: Path, tmp_path: Path,
                                         cli: Callable[..., object]) -> None:
    """SmolLM2's Q4_1 GGUF -> blob: the carried tokenizer encodes as transformers' GGUF
    tokenizer does, and the chat template and special ids come along."""
    from transformers import AutoTokenizer

    from bumpconv.blob.reader import open_blob
    from bumpconv.run.carried_tokenizer import blob_tokenizer
    from bumpconv.run.tokenizer import encode_text
    blob = tmp_path / "m.bump"
    r = cli("convert", smol_gguf, blob, "--quiet")  # its q4_1 blocks: no engine kernel for them
    assert r.code == 1 and "--quant keep: layer.0.wq is q4_1: the engine has no q4_1" in r.err
    assert cli("convert", smol_gguf, blob, "--quiet", "--quant", "q8_0").code == 0
    hf = AutoTokenizer.from_pretrained(smol_gguf.parent, gguf_file=smol_gguf.name)
    with open_blob(blob) as bf:
        carried = blob_tokenizer(bf)
    assert carried is not None
    tokenizer, record = carried
    for text in ("The capital of France is", "  two  spaces, digits 12345 and <|im_end|>!",
                 "naïve café – ünïcödé\n\ttabs"):
        assert encode_text(tokenizer, text) == hf(text)["input_ids"], text
    assert record.chat_template and "<|im_start|>" in record.chat_template
    assert (record.bos_token_id, record.eos_token_ids) == (1, [2])


def test_unsupported_tokenizer_is_refused(gguf_of: Callable[[str], Path], tmp_path: Path,
                                          cli: Callable[..., object]) -> None:
    """A non byte-level tokenizer (SentencePiece: tokenizer.ggml.model 'llama') is refused by
    name for a profile that carries the tokenizer."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter
    reader = GGUFReader(gguf_of("f32"))
    src = tmp_path / "spm.gguf"
    writer = GGUFWriter(src, "llama")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        value = "llama" if field.name == "tokenizer.ggml.model" else field.contents()
        sub = field.types[-1] if field.types[0] == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, field.types[0], sub_type=sub)
    for t in reader.tensors:
        writer.add_tensor(t.name, np.asarray(t.data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    result = cli("convert", src, tmp_path / "m.bump", "--quiet")
    assert result.code != 0 and "tokenizer.ggml.model 'llama' is not supported" in result.err


def test_eval_takes_a_gguf_source(gguf_of: Callable[[str], Path], tmp_path: Path,
                                  cli: Callable[..., object]) -> None:
    """eval FILE.gguf BLOB: the GGUF's own tokenizer scores the text, transformers' GGUF model is
    the reference; a kept blob holds exactly its weights, so only kernel noise is left."""
    import json
    src = _own_dir(gguf_of("q8_0"), tmp_path)
    blob = tmp_path / "m.bump"
    assert cli("convert", src, blob, "--quiet").code == 0
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    result = cli("eval", src, blob, "--corpus", text, "--ctx", "64", "--chunks", "2", "--json",
                 "--quiet")
    assert result.code == 0, result.out[-2000:] + result.err[-500:]
    report = json.loads(result.out)
    assert report["blobs"][0]["weights_identical_to_source"] and report["passed"]
