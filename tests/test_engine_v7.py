"""The engine-v7 profile: what the engine's current runtime reads (row-major wo, the tokenizer's
arrays after token_emb, sidecars for its build step), read back by bumpconv's own side: inspect,
verify, the C runtime, run with the blob's own tokenizer.

Fast-lane tests use numpy-built checkpoints with a tiny tokenizer copied in; the model tests
check every tiny architecture and SmolLM2 against transformers.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from safetensors.numpy import load_file

from bumpconv.blob.reader import open_blob
from bumpconv.comparison.parity_run import ParityOptions, run_parity
from bumpconv.format.errors import VerifyError
from bumpconv.run.carried_tokenizer import blob_tokenizer
from bumpconv.run.runtime import BumpModel
from runtime_helpers import MODELS, convert
from tokenizer_corpus import corpus
from tools.fixtures import tiny_tokenizer


@pytest.fixture
def with_tokenizer(synthetic: Callable[..., Path], cache_dir: Path,
                   tmp_path: Path) -> Callable[[str, str], Path]:
    """``with_tokenizer(model, kind)``: a numpy-built checkpoint with a tiny tokenizer beside it."""
    def make(model: str, kind: str = "byte-level") -> Path:
        dst = tmp_path / f"{model}-{kind}"
        shutil.copytree(synthetic(model), dst)
        for f in tiny_tokenizer(kind, cache_dir).iterdir():
            shutil.copy(f, dst / f.name)
        return dst
    return make


def engine_v7(src: Path, out: Path, *extra: str) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return convert(src, out, "engine-v7", extra)


def test_wo_is_row_major_with_each_head_at_h_times_ad(synthetic, tmp_path: Path) -> None:
    """wo[r][h][c] = o_proj[r, h*D + c]: rows of H*AD, head h's columns from h*AD, zero after
    each head's D (llama-gqa-pad: D = 72, AD = 80, so the gaps are real)."""
    src = synthetic("llama-gqa-pad")
    o_proj = load_file(src / "model.safetensors")["model.layers.1.self_attn.o_proj.weight"]
    with open_blob(engine_v7(src, tmp_path / "m.bump")) as bf:
        wo = np.array(bf.array("layer.1.wo"))
        spec = bf.spec
    assert spec is not None
    E, H, D = spec.hidden_size, spec.num_heads, spec.head_dim
    AE, AD = wo.shape[0], wo.shape[2]
    assert wo.shape == (AE, H, AD) and AD > D
    for h in range(H):
        np.testing.assert_array_equal(wo[:E, h, :D], o_proj[:, h * D:(h + 1) * D])
    assert not wo[:, :, D:].any() and not wo[E:].any()


def test_a_head_dim_multiple_of_16_is_the_engine_writers_plain_row_major(synthetic,
                                                                          tmp_path: Path) -> None:
    src = synthetic("llama-tied")  # D = 32
    o_proj = load_file(src / "model.safetensors")["model.layers.0.self_attn.o_proj.weight"]
    with open_blob(engine_v7(src, tmp_path / "m.bump")) as bf:
        wo = np.array(bf.array("layer.0.wo"))
    E = o_proj.shape[0]
    np.testing.assert_array_equal(wo.reshape(wo.shape[0], -1)[:E], o_proj)


def test_blob_carries_the_tokenizer_and_runs_with_no_other_file(with_tokenizer, cli,
                                                                tmp_path: Path) -> None:
    src = with_tokenizer("llama-untied", "byte-level")
    blob = engine_v7(src, tmp_path / "out" / "m.bump")
    with open_blob(blob) as bf:
        names = [t.name for t in bf.tensors]
        carried = blob_tokenizer(bf)
    assert names[1:4] == ["vocab_offsets", "vocab_strings", "vocab_merges"]
    assert carried is not None
    from tokenizers import Tokenizer
    hf = Tokenizer.from_file(str(src / "tokenizer.json"))
    texts = corpus()
    assert len(texts) >= 1000
    mismatched = [t for t in texts if carried[0].encode(t).ids != hf.encode(t).ids]
    assert mismatched == []
    assert sorted(p.name for p in blob.parent.iterdir()) == ["m.bump"]  # nothing else needed
    r = cli("run", blob, "--prompt", "the cat sat", "-n", "4")
    assert r.code == 0, r.err
    assert r.out.startswith("the cat sat")
    r = cli("run", blob, "--prompt", "hello", "-n", "2", "--chat")
    assert r.code == 0, r.err
    # the reply alone: not the template's text around the message, nor the message
    assert not any(w in r.out for w in ("user", "assistant", "hello")), r.out


@pytest.mark.parametrize("kind", ["byte-level", "sentencepiece"])
def test_verify_covers_the_tokenizer_arrays(kind: str, with_tokenizer, cli,
                                            tmp_path: Path) -> None:
    src = with_tokenizer("qwen3", kind)
    blob = engine_v7(src, tmp_path / "m.bump")
    r = cli("verify", blob, "--against", src)
    assert r.code == 0 and "tokenizer arrays identical" in r.out, r.err
    doc = json.loads((src / "tokenizer.json").read_text())
    doc["model"]["merges"] = doc["model"]["merges"][:-1]  # a different tokenizer, same vocab
    (src / "tokenizer.json").write_text(json.dumps(doc))
    r = cli("verify", blob, "--against", src)
    assert r.code == 1 and "vocab_merges" in r.err


def test_two_conversions_are_byte_identical_sidecars_included(with_tokenizer,
                                                              tmp_path: Path) -> None:
    src = with_tokenizer("qwen3-engine")
    digests = []
    for run in ("a", "b"):
        engine_v7(src, tmp_path / run / "model")
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in sorted((tmp_path / run / "model").iterdir())})
    assert digests[0] == digests[1]
    assert sorted(digests[0]) == ["config.json", "weights.bump", "weights_manifest.json",
                                  "weights_manifest.map"]


def test_sidecars_describe_the_blob_and_a_wrong_one_fails_the_check(with_tokenizer, cli,
                                                                    tmp_path: Path) -> None:
    src = with_tokenizer("qwen3-engine")
    model = engine_v7(src, tmp_path / "model")
    blob = model / "weights.bump"
    manifest = json.loads((model / "weights_manifest.json").read_text())
    lines = (model / "weights_manifest.map").read_text().splitlines()
    config = json.loads((model / "config.json").read_text())
    with open_blob(blob) as bf:
        want = [(t.name, t.dtype.label, t.offset, t.nbytes) for t in bf.tensors]
        tokenizer = bf.metadata.bumpconv.tokenizer  # type: ignore[union-attr]
    assert manifest["weights_path"] == "weights.bump" and manifest["template"] == {"name": "qwen3"}
    assert [(e["name"], e["dtype"], e["file_offset"], e["size"])
            for e in manifest["entries"]] == want
    assert manifest["num_merges"] == tokenizer.num_merges
    assert manifest["tokenizer_contract"] == {"tokenizer_type": "bpe"}
    assert lines[2].split("|")[:2] == ["token_emb", "fp32"] and len(lines) == 2 + len(want)
    assert config["rope_layout"] == "split" and config["rope_theta"] == 1e6
    assert cli("inspect", blob, "--check").code == 0
    assert cli("inspect", model, "--check").code == 0
    manifest["entries"][5]["size"] += 4
    (model / "weights_manifest.json").write_text(json.dumps(manifest))
    r = cli("inspect", model, "--check")
    assert r.code == 1 and "FAIL engine sidecars" in r.out


def test_no_model_directory_for_a_model_the_engine_would_run_differently(synthetic, cli,
                                                                         tmp_path: Path) -> None:
    r = cli("convert", synthetic("qwen2"), tmp_path / "q.bump", "--profile", "engine-v7")
    assert r.code == 0 and "the engine's runtime cannot run this model" in r.err
    assert "has no q/k/v bias" in r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.bump"]
    r = cli("convert", synthetic("qwen2"), tmp_path / "model", "--profile", "engine-v7")
    assert r.code == 1 and "no model directory for the engine: the engine's v7 runtime" in r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.bump"]


def test_a_model_directory_never_replaces_the_checkpoint(with_tokenizer, cli) -> None:
    src = with_tokenizer("llama-quant")
    before = sorted(p.name for p in src.iterdir())
    r = cli("convert", src, src, "--profile", "engine-v7", "--force")
    assert r.code == 1 and "an input of this command" in r.err
    assert sorted(p.name for p in src.iterdir()) == before


def test_engine_v7_is_the_default(with_tokenizer, cli, tmp_path: Path) -> None:
    assert cli("convert", with_tokenizer("llama-quant"), tmp_path / "m", "--quiet").code == 0
    with open_blob(tmp_path / "m") as bf:
        assert bf.profile.profile == "engine-v7" and bf.path == tmp_path / "m" / "weights.bump"


# -- against transformers -------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_every_tiny_model_verifies_and_passes_parity(name: str, tiny, hf, cli,
                                                     tmp_path: Path) -> None:
    src = tiny(name)
    blob = engine_v7(src, tmp_path / "m.bump")
    assert cli("verify", blob, "--against", src).code == 0
    report = run_parity(str(src), blob, ParityOptions(layer=1), reference=hf(src))
    assert report.passed, report.verdict


def test_smollm2_verifies_runs_alone_and_passes_parity(smol: Path, hf, cli,
                                                       tmp_path: Path) -> None:
    blob = engine_v7(smol, tmp_path / "smol.bump")
    r = cli("verify", blob, "--against", smol)
    assert r.code == 0 and "tokenizer arrays identical" in r.out, r.err
    r = cli("run", blob, "--prompt", "The capital of France is", "-n", "6")
    assert r.code == 0 and "Paris" in r.out, r.err
    report = run_parity(str(smol), blob, ParityOptions(), reference=hf(smol))
    assert report.passed, report.verdict
    with open_blob(blob) as bf:
        carried = blob_tokenizer(bf)
    assert carried is not None
    from transformers import AutoTokenizer
    hf_tok = AutoTokenizer.from_pretrained(smol)
    message = [{"role": "user", "content": "What is the capital of France?"}]
    want = hf_tok.apply_chat_template(message, tokenize=False, add_generation_prompt=True)
    from bumpconv.run.chat import render_chat
    record = carried[1]
    got = render_chat(record.chat_template, message[0]["content"],
                      {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"})
    assert got == want
    with BumpModel.open(blob) as model:
        ids = carried[0].encode(got).ids
        assert ids == hf_tok(got)["input_ids"]
        assert "Paris" in carried[0].decode(model.generate(ids, 8, record.eos_token_ids))


def test_a_tokenizer_changed_after_conversion_fails_verify(with_tokenizer,
                                                           tmp_path: Path) -> None:
    import bumpconv
    src = with_tokenizer("llama-untied", "sentencepiece")
    blob = engine_v7(src, tmp_path / "m.bump")
    assert bumpconv.verify(blob, src).tokenizer
    doc = json.loads((src / "tokenizer.json").read_text())
    doc["added_tokens"][0]["content"] = "<unk-renamed>"
    doc["model"]["unk_token"] = "<unk-renamed>"
    doc["model"]["vocab"]["<unk-renamed>"] = doc["model"]["vocab"].pop("<unk>")
    (src / "tokenizer.json").write_text(json.dumps(doc))
    with pytest.raises(VerifyError, match="vocab_"):
        bumpconv.verify(blob, src)
