"""The engine's traps (schemas/engine.policy.json; issue 19's list), each shown twice: bumpconv
never writes it (refused, or the engine policy chooses around it), and ``inspect --check`` names
it in a hand-edited directory - bumpconv's, or one shaped like the engine's own converters'
output, whose blob bumpconv's reader does not read.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from bumpconv.format.dtypes import DType
from bumpconv.format.engine_policy import (check_kept, engine_dtypes, load_engine_policy,
                                           refused_quant)
from bumpconv.format.errors import LayoutError
from bumpconv.format.profile import expand_tensors, load_profile
from bumpconv.format.quant_policy import choose_dtype, quant_names
from bumpconv.format.spec import spec_from_config
from tools.fixtures import tiny_tokenizer

SMOLLM2 = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
           "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
           "vocab_size": 49152, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
           "rope_theta": 100000.0, "tie_word_embeddings": True}
#: the tiny untied Qwen3 the engine is checked on: E, H*D and I whole 256-blocks
QWEN3_ENGINE = {"model_type": "qwen3", "hidden_size": 256, "intermediate_size": 512,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                "head_dim": 64, "vocab_size": 517, "max_position_embeddings": 1024,
                "rms_norm_eps": 1e-5, "rope_theta": 1e6, "tie_word_embeddings": False}


def engine_choice(quant: str, config: dict[str, Any],
                  choose: Callable[..., DType] | None = None) -> dict[str, str]:
    """The dtypes the engine-v7 profile gives every tensor (llama.cpp's policy, or ``choose``,
    then the engine's rules)."""
    spec = spec_from_config(config)
    slots = expand_tensors(load_profile("engine-v7"), spec.dims(), spec.flags(), spec.family)
    base = choose or (lambda s: choose_dtype(quant, s, spec.num_layers, spec.tie_word_embeddings))
    return {k: v.label for k, v in engine_dtypes(slots, base, spec.dims()).items()}


@pytest.fixture
def model(synthetic, cache_dir: Path, cli, tmp_path: Path) -> Callable[..., Path]:
    """``model(quant)``: bumpconv's engine-v7 model directory of the synthetic llama-quant
    (E 256, H*D 256, I 512, untied) with a tiny byte-level tokenizer: no trap in it."""
    src = tmp_path / "src"
    shutil.copytree(synthetic("llama-quant"), src)
    for f in tiny_tokenizer("byte-level", cache_dir).iterdir():
        shutil.copy(f, src / f.name)

    def make(quant: str = "q8_0") -> Path:
        out = tmp_path / f"model-{quant}"
        r = cli("convert", src, out, "--quiet", "--quant", quant)
        assert r.code == 0, r.err
        r = cli("inspect", out, "--check")
        assert r.code == 0 and "ok   engine traps" in r.out, r.out
        r = cli("verify", out, "--against", src)  # wo's blocks run along H*D: verify agrees
        assert r.code == 0, r.err
        return out
    return make


def edit(directory: Path, change: Callable[[dict[str, Any]], None]) -> None:
    manifest = json.loads((directory / "weights_manifest.json").read_text())
    change(manifest)
    (directory / "weights_manifest.json").write_text(json.dumps(manifest))


def entry(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in manifest["entries"] if e["name"] == name)


def trap_lines(cli, directory: Path) -> list[str]:
    r = cli("inspect", directory, "--check")
    assert r.code == 1, r.out
    return [line for line in r.out.splitlines() if "FAIL engine trap" in line]


# -- q4_0 (read by the Q4_K kernels) and q4_1 (no kernel) ------------------------------------

@pytest.mark.parametrize("quant", ["q4_0"])
def test_q4_0_is_refused_for_the_engine_in_one_line(quant: str, synthetic, cli,
                                                    tmp_path: Path) -> None:
    r = cli("convert", synthetic("llama-quant"), tmp_path / "m", "--quant", quant)
    assert r.code == 1 and len(r.err.strip().splitlines()) == 1
    assert "the engine has no q4_0 kernel: its build step routes q4_0 weights to its Q4_K " \
           "kernels" in r.err and "use --quant q4_k_m" in r.err and "--profile bumpwgt5" in r.err
    assert list(tmp_path.iterdir()) == []
    assert cli("convert", synthetic("llama-quant"), tmp_path / "b.bump", "--quant", quant,
               "--profile", "bumpwgt5", "--quiet").code == 0  # bumpconv's own layout keeps it


def test_every_quant_name_but_q4_0_is_one_the_engine_runs() -> None:
    assert [n for n in quant_names() if refused_quant(n)] == ["q4_0"]


@pytest.mark.parametrize("dtype", [DType.Q4_0, DType.Q4_1])
def test_kept_blocks_the_engine_has_no_kernel_for_are_refused(dtype: DType) -> None:
    spec = spec_from_config(QWEN3_ENGINE)
    slots = expand_tensors(load_profile("engine-v7"), spec.dims(), spec.flags(), spec.family)
    kept = {s.name: (dtype if s.role == "wq" else DType.Q8_0 if len(s.shape) > 1 else s.dtype)
            for s in slots}
    with pytest.raises(LayoutError, match=f"--quant keep: layer.0.wq is {dtype.label}: the "
                                          f"engine has no {dtype.label} kernel"):
        check_kept(slots, lambda s: kept[s.name], spec.dims())


@pytest.mark.parametrize("dtype,words", [("q4_0", "routes q4_0 weights to its Q4_K kernels"),
                                         ("q4_1", "HARD FAULT")])
def test_check_names_q4_0_and_q4_1(dtype: str, words: str, model, cli) -> None:
    directory = model()
    edit(directory, lambda m: entry(m, "layer.1.w2").update(dtype=dtype))
    lines = trap_lines(cli, directory)
    assert any("refused type: layer.1.w2 is " + dtype in line and words in line
               for line in lines), lines


# -- token_emb only fp32, q8_0, q4_k, q6_k ----------------------------------------------------

def test_the_embedding_gets_a_type_the_engines_lookup_reads() -> None:
    tied = {q: engine_choice(q, SMOLLM2)["token_emb"] for q in ("q5_0", "q5_1", "q5_k", "q4_k")}
    assert tied == {"q5_0": "q8_0", "q5_1": "q8_0", "q5_k": "q8_0", "q4_k": "q8_0"}
    untied = {q: engine_choice(q, QWEN3_ENGINE)["token_emb"]
              for q in ("q5_0", "q5_1", "q5_k", "q4_k", "q6_k", "q8_0")}
    assert untied == {"q5_0": "q8_0", "q5_1": "q8_0", "q5_k": "q6_k", "q4_k": "q4_k",
                      "q6_k": "q6_k", "q8_0": "q8_0"}
    assert engine_choice("q5_0", QWEN3_ENGINE)["output.weight"] == "q5_0"  # the head is free


@pytest.mark.parametrize("dtype", ["q5_0", "q5_1", "q5_k"])
def test_check_names_an_embedding_the_engine_drops(dtype: str, model, cli) -> None:
    directory = model()
    edit(directory, lambda m: entry(m, "token_emb").update(dtype=dtype))
    lines = trap_lines(cli, directory)
    assert any(f"embedding type: token_emb is {dtype}" in line and "drops the embedding" in line
               for line in lines), lines


# -- wq/wk/wv share one quantized input --------------------------------------------------------

def test_q_k_v_stay_in_one_activation_class() -> None:
    """A q8_K-class member among q8_0-class ones falls back as llama.cpp falls back."""
    mixed = {"wq": DType.Q4_K, "wk": DType.Q5_0, "wv": DType.Q6_K}
    got = engine_choice("q8_0", QWEN3_ENGINE,
                        lambda s: mixed.get(s.role, DType.Q8_0 if len(s.shape) > 1 else s.dtype))
    assert (got["layer.0.wq"], got["layer.0.wk"], got["layer.0.wv"]) == ("q5_0", "q5_0", "q8_0")
    fp32_class = {"wq": DType.Q5_K, "wk": DType.Q5_1, "wv": DType.Q6_K}  # fp32 activations mix
    got = engine_choice("q8_0", QWEN3_ENGINE,
                        lambda s: fp32_class.get(s.role,
                                                 DType.Q8_0 if len(s.shape) > 1 else s.dtype))
    assert (got["layer.1.wq"], got["layer.1.wk"], got["layer.1.wv"]) == ("q5_k", "q5_1", "q6_k")


def test_check_names_mixed_q_k_v_activations(model, cli) -> None:
    directory = model("q4_k")
    def change(m: dict[str, Any]) -> None:
        wv = entry(m, "layer.2.wv")
        wv["dtype"], wv["size"] = "q8_0", wv["size"] // 144 * 8 * 34  # a whole q8_0 matrix
        m["quant_summary"]["layer.2"]["wv"] = "q8_0"
    edit(directory, change)
    lines = trap_lines(cli, directory)
    assert any("mixed activation: layer 2: wq q4_k, wk q4_k, wv q8_0" in line for line in lines)


# -- no padding: input dims E (wq/wk/wv/w1/head), H*D (wo), I (w2) ----------------------------

def test_k_quants_only_where_the_input_dimension_is_whole_blocks() -> None:
    """SmolLM2: E = H*D = 576 are not 256-multiples, I = 1536 is; the tiny Qwen3: all are."""
    smol = engine_choice("q4_k", SMOLLM2)
    assert {smol[f"layer.0.{r}"] for r in ("wq", "wk", "wv", "wo", "w1")} == {"q5_0"}
    assert smol["layer.0.w2"] == "q4_k"
    qwen = engine_choice("q4_k", QWEN3_ENGINE)
    assert {qwen[f"layer.1.{r}"] for r in ("wq", "wk", "wv", "wo", "w1", "w2")} == {"q4_k"}
    wo_short = engine_choice("q4_k", {**QWEN3_ENGINE, "num_attention_heads": 2})  # H*D = 128
    assert wo_short["layer.0.wo"] == "q5_0" and wo_short["layer.0.wq"] == "q4_k"
    padded = engine_choice("q8_0", {**QWEN3_ENGINE, "intermediate_size": 200})  # AI = 208
    assert padded["layer.0.w1"] == padded["layer.0.w2"] == "fp32"


def test_q5_1_and_q5_k_only_up_to_the_input_their_kernels_compute() -> None:
    """The engine's q5_1 kernels leave their output unwritten past K = 8192, its q5_k kernels
    misread past K = 32768 (probed through its library): a Llama-3-8B-sized w2 (I = 14336)
    falls back to q5_0 in q5_1 and stays q5_k (within its limit); I = 33024 takes q6_k."""
    big = {**QWEN3_ENGINE, "intermediate_size": 14336}
    q51 = engine_choice("q5_1", big)
    assert q51["layer.0.w2"] == "q5_0" and q51["layer.0.w1"] == "q5_1"
    assert engine_choice("q5_k", big)["layer.0.w2"] == "q5_k"
    huge = engine_choice("q5_k", {**QWEN3_ENGINE, "intermediate_size": 33024})
    assert huge["layer.0.w2"] == "q6_k" and huge["layer.0.w1"] == "q5_k"


def test_check_names_a_q5_1_matrix_past_its_kernels_input_limit(model, cli) -> None:
    directory = model("q5_1")
    edit(directory, lambda m: m["config"].update(intermediate_size=8224))
    lines = trap_lines(cli, directory)
    assert any("input limit: layer.0.w2 is q5_1 with input dimension I = 8224: its q5_1 "
               "kernels" in line and "return without writing" in line for line in lines), lines


@pytest.mark.parametrize("key,value,tensor,dim", [
    ("embed_dim", 576, "layer.0.wq", "E = 576"),
    ("intermediate_size", 640, "layer.0.w2", "I = 640"),
    ("head_dim", 72, "layer.0.wo", "H*D = 288"),
])
def test_check_names_input_dims_that_are_not_whole_blocks(key: str, value: int, tensor: str,
                                                          dim: str, model, cli) -> None:
    directory = model("q4_k")
    edit(directory, lambda m: m["config"].update({key: value}))
    lines = trap_lines(cli, directory)
    assert any(f"input dim: {tensor} is q4_k but its input dimension {dim} is not whole "
               "256-value blocks" in line for line in lines), lines


# -- the untied head's name, quant_summary, v8 template policy ---------------------------------

def test_check_names_an_untied_head_named_lm_head_weight(model, cli) -> None:
    directory = model()
    edit(directory, lambda m: entry(m, "output.weight").update(name="lm_head_weight"))
    lines = trap_lines(cli, directory)
    assert any("head name: the untied head is named lm_head_weight" in line for line in lines)


def test_bumpconvs_quant_summary_is_the_entries(model) -> None:
    manifest = json.loads((model("q4_k_m") / "weights_manifest.json").read_text())
    dtypes = {e["name"]: e["dtype"] for e in manifest["entries"]}
    summary = manifest["quant_summary"]
    assert summary["token_emb"] == dtypes["token_emb"]
    assert summary["lm_head"] == dtypes["output.weight"] == "q6_k"
    for layer in range(3):
        assert summary[f"layer.{layer}"] == {r: dtypes[f"layer.{layer}.{r}"]
                                             for r in ("wq", "wk", "wv", "wo", "w1", "w2")}
    policy = load_engine_policy()
    template = manifest["template"]
    assert template == {"name": "llama"} and not set(template) & set(policy.template_policy_keys)


def test_check_names_a_missing_or_wrong_quant_summary(model, cli) -> None:
    directory = model()
    edit(directory, lambda m: m["quant_summary"]["layer.1"].update(w1="fp32"))
    lines = trap_lines(cli, directory)
    assert any("quant summary: quant_summary says layer.1.w1 is fp32, the entry is q8_0" in line
               for line in lines), lines
    edit(directory, lambda m: m.pop("quant_summary"))
    lines = trap_lines(cli, directory)
    assert any("quant summary: no quant_summary while token_emb is q8_0" in line
               and "takes fp32 ones" in line for line in lines), lines


def test_check_names_dtype_policy_in_the_template_the_v8_build_refuses(model, cli) -> None:
    directory = model()
    edit(directory, lambda m: m.update(template={"name": "llama", "flags": {
        "prefer_q8_0_contract": True}, "ops": [{"op": "q_proj", "weight_dtype": "q8_0"}]}))
    lines = trap_lines(cli, directory)
    assert any("template policy: the manifest's template carries flags.prefer_q8_0_contract"
               in line for line in lines), lines
    assert any("carries ops.[0].weight_dtype" in line for line in lines), lines


# -- a directory shaped like the engine's own HF converter's ----------------------------------

def test_check_runs_on_a_directory_whose_blob_bumpconv_does_not_read(model, cli,
                                                                     tmp_path: Path) -> None:
    """The engine's HF converter (991d0874) writes: an absolute weights_path, the llama template
    embedded with a sentencepiece tokenizer, identity q/k norms for every model, no
    rope_layout, no config.json; its blob's dtype table lists IR buffers, which bumpconv's
    reader refuses. The check still runs on the sidecars and names B1, B3 and B4."""
    theirs = tmp_path / "engine-own"
    shutil.copytree(model("q8_0"), theirs)
    (theirs / "config.json").unlink()
    blob = theirs / "weights.bump"
    data = bytearray(blob.read_bytes())
    data[0x80:0x84] = (10_000).to_bytes(4, "little")  # a dtype table bumpconv cannot parse
    blob.write_bytes(bytes(data))

    def engine_style(m: dict[str, Any]) -> None:
        m["weights_path"] = str(blob)
        m["template"] = {"name": "llama", "flags": {"tokenizer": "sentencepiece"}}
        m.pop("tokenizer_contract")
        norm = dict(entry(m, "layer.0.ln1_gamma"), name="layer.0.q_norm")
        m["entries"].insert(1, norm)
    edit(theirs, engine_style)
    r = cli("inspect", theirs, "--check")
    assert r.code == 1 and "its blob is not one bumpconv reads" in r.out, r.out
    for words in ("qk norm: q_norm/k_norm entries for the llama template",
                  "rope layout: no rope_layout for the llama template: the build step picks "
                  "the pairwise kernel", "tokenizer type: BPE merges but the llama template's "
                  "tokenizer is sentencepiece", "bounds: "):
        assert words in r.out, (words, r.out)
    r = cli("inspect", theirs, "--check", "--json")
    doc = json.loads(r.out)
    assert doc["blob"].startswith("not read:") and not all(c["ok"] for c in doc["checks"])


def test_the_policy_table_of_docs_engine_md_is_what_the_policy_chooses() -> None:
    """docs/engine.md's table of matrix types per --quant, for both models, row by row."""
    import re
    from collections import Counter
    doc = (Path(__file__).resolve().parents[1] / "docs" / "engine.md").read_text()
    rows = [line for line in doc.splitlines() if re.match(r"\| q\d_\w+ \|", line)]
    policy = load_engine_policy()
    checked = 0
    for line in rows:
        quant, *cells = [c.strip() for c in line.strip("|").split("|")]
        if refused_quant(quant):
            assert cells[0].startswith("refused: `" + refused_quant(quant)[:40])
            continue
        for config, cell in zip((SMOLLM2, QWEN3_ENGINE), cells):
            spec = spec_from_config(config)
            roles = {s.name: s.role for s in expand_tensors(load_profile("engine-v7"),
                                                             spec.dims(), spec.flags(),
                                                             spec.family)}
            got = Counter(t for name, t in engine_choice(quant, config).items()
                          if roles[name] in policy.matrices)
            assert got == {t: int(n) for t, n in re.findall(r"(q\d_\w+|fp32) x(\d+)", cell)}, \
                (quant, config["model_type"], cell)
            checked += 1
    assert checked == 16
