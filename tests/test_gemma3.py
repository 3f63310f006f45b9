"""Gemma 3 in the converter: tiny random checkpoints built at test time (padded sizes, H != KV,
windows shorter than the prompts, local and global RoPE bases that differ, soft-capping on and
off, a multimodal checkpoint's text model), their GGUFs made by llama.cpp's own converter, and
transformers as the reference for names, hooks, the +1 llama.cpp adds to norms, and the
tokenizer.

Fast lane (numpy checkpoints): every profile, every --quant, the engine profile's baked
(1 + w), the metadata, the engine refusals. Model lane: transformers' own parameters, stages
and tokenizers.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bumpconv.blob.reader import open_blob
from bumpconv.format.packing import source_values, unpack
from bumpconv.format.profile import profile_hash
from bumpconv.format.quant_policy import quant_names
from bumpconv.format.registry import registry
from bumpconv.format.spec import SLIDING
from tools.fixtures import tiny_config

GEMMAS = ("gemma3-pad", "gemma3-softcap", "gemma3-mm")
NORMS = {role for role, info in registry().roles.items() if info.kind == "norm"}


def _blob(cli: Callable[..., Any], src: Path, out: Path, *args: str) -> Path:
    r = cli("convert", src, out, "--quiet", "--no-engine-sidecars", *args)
    assert r.code == 0, r.err
    assert cli("verify", out, "--against", src).code == 0
    return out


# -- fast lane: numpy checkpoints ----------------------------------------------------------------

@pytest.mark.parametrize("name", GEMMAS)
def test_profiles_hold_gemma_and_the_engine_profile_bakes_one_plus_w(
        synthetic: Callable[[str], Path], tmp_path: Path, cli: Callable[..., Any],
        name: str) -> None:
    """engine-v7 and bumpwgt5 blobs verify bit for bit; their matrices are the same bytes, and
    every norm is w in bumpwgt5 and fl(1 + w) in engine-v7 (what transformers multiplies by);
    the metadata gives the spec back; bumpwgt3 refuses the model by name."""
    src = synthetic(name)
    v5 = _blob(cli, src, tmp_path / "v5.bump", "--profile", "bumpwgt5")
    v7 = _blob(cli, src, tmp_path / "v7.bump")
    with open_blob(v5) as a, open_blob(v7) as b:
        assert a.spec == b.spec and a.spec is not None
        want = json.loads((src / "config.json").read_text())
        from bumpconv.format.spec import spec_from_config
        assert a.spec == spec_from_config(want).model_copy(update={"derived_keys": ()})
        ta = {t.slot.role: t for t in a.tensors if t.slot.layer is None}
        ta.update({t.name: t for t in a.tensors if t.slot.layer is not None})
        baked = 0
        for t in b.tensors:
            if t.slot.content != "weights":
                continue
            other = ta[t.name if t.slot.layer is not None else t.slot.role]
            if t.slot.source_roles and t.slot.source_roles[0] in NORMS:
                w = unpack(other.slot, a.array(t.name))[0]
                got = unpack(t.slot, b.array(t.name))[0]
                assert t.slot.offset == 1.0 and other.slot.offset == 0.0
                np.testing.assert_array_equal(got, np.float32(1.0) + w)
                np.testing.assert_array_equal(source_values(t.slot, b.array(t.name))[0],
                                              got - np.float32(1.0))
                baked += 1
            elif t.slot.role == "wo":  # engine-v7 stores wo row-major, bumpwgt5 per head
                np.testing.assert_array_equal(unpack(t.slot, b.array(t.name))[0],
                                              unpack(other.slot, a.array(other.name))[0])
            else:  # the same bytes (the untied head named as each layout names it)
                assert b.tensor_bytes(t.name) == a.tensor_bytes(other.name), t.name
        spec = b.spec
        assert baked == 6 * spec.num_layers + 1  # ln1, q/k norms, post norms, ln2; final
        meta = b.metadata
        assert meta is not None
        assert meta.template_hash == profile_hash("engine-v7", spec.flags(tokenizer=False))
        assert meta.template_hash != profile_hash("engine-v7")
    r = cli("convert", src, tmp_path / "v3.bump", "--profile", "bumpwgt3", "--quiet")
    assert r.code != 0 and "BUMPWGT3 has no" in r.err
    assert not (tmp_path / "v3.bump").exists()


def test_the_spec_reads_both_config_layouts_and_derives_as_transformers(
        synthetic: Callable[[str], Path]) -> None:
    """gemma3-softcap: layer types from the pattern key, linear scaling on the full layers
    only, its own local base, the soft-cap; the same model in transformers 4's layout (top-level
    rope_theta, rope_scaling, rope_local_base_freq) is the same spec."""
    from bumpconv.format.spec import spec_from_config
    cfg = tiny_config("gemma3-softcap")
    spec = spec_from_config(cfg)
    assert spec.layer_types == ("sliding_attention", "full_attention") * 2
    assert [spec.window(i) for i in range(4)] == [16, None, 16, None]
    assert spec.rope.type == "linear" and spec.rope.factor == 2.0
    assert spec.rope_of(0).theta == 50000.0 and spec.rope_of(0).type == "default"
    assert spec.rope_of(1) == spec.rope
    assert spec.final_logit_softcapping == 3.0 and spec.query_pre_attn_scalar == 40.0
    params = cfg.pop("rope_parameters")
    v4 = {**cfg, "rope_theta": 1000000.0, "rope_scaling": {"rope_type": "linear", "factor": 2.0},
          "rope_local_base_freq": params["sliding_attention"]["rope_theta"]}
    assert spec_from_config(v4) == spec
    bare = {k: v for k, v in v4.items() if k not in ("rope_local_base_freq",
                                                      "query_pre_attn_scalar",
                                                      "sliding_window_pattern")}
    derived = spec_from_config(bare)
    assert derived.rope_local.theta == 10000.0 and derived.query_pre_attn_scalar == 256.0
    assert derived.layer_types[5] == "full_attention" if derived.num_layers > 5 else True
    assert set(derived.derived_keys) >= {"rope_local_base_freq", "query_pre_attn_scalar",
                                         "sliding_window_pattern", "layer_types"}


@pytest.mark.parametrize("change, message", [
    ({"layer_types": ["sliding_attention"]}, "'layer_types' lists 1 layers"),
    ({"layer_types": ["sliding", "full"]}, "must be a list of 'full_attention'"),
    ({"attn_logit_softcapping": 50.0}, "attention logit soft-capping is not implemented"),
    ({"use_bidirectional_attention": True}, "bidirectional attention"),
    ({"hidden_activation": "gelu"}, "hidden_activation 'gelu' is not supported"),
    ({"final_logit_softcapping": -1.0}, "'final_logit_softcapping' must be a finite positive"),
    ({"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                          "global": {}}}, "mixes layer types and ['global']"),
])
def test_bad_gemma_configs_are_refused_by_key(change: dict[str, Any], message: str) -> None:
    from bumpconv.format.errors import ConfigError
    from bumpconv.format.spec import spec_from_config
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        spec_from_config({**tiny_config("gemma3-pad"), **change})


@pytest.mark.parametrize("quant", quant_names())
def test_every_quant_policy(synthetic: Callable[[str], Path], tmp_path: Path,
                            cli: Callable[..., Any], quant: str) -> None:
    """Every --quant on Gemma (tied: the embeddings are the output head) verifies block for
    block; norms stay fp32 (baked in engine-v7). In bumpwgt5 the tied head follows llama.cpp's
    output rule (q6_k in the K-mixes, q8_0 for q8_0, else the policy's type); in engine-v7 the
    engine's rules apply on top (an embedding type its lookup has, no q4_0 at all)."""
    from bumpconv.format.dtypes import DType
    from bumpconv.format.engine_policy import load_engine_policy, refused_quant
    src = synthetic("gemma3-quant")
    mix = quant.endswith("_m")  # llama.cpp's mixes: q6_k head, matrices in the base K-quant
    base = DType[quant.upper().removesuffix("_M")]
    output = DType.Q6_K if mix else base
    embeddings = {DType[n.upper()] for n in load_engine_policy().embedding.types}
    for profile in ("bumpwgt5", "engine-v7"):
        out = tmp_path / f"{profile}.bump"
        if profile == "engine-v7" and refused_quant(quant) is not None:
            r = cli("convert", src, out, "--quant", quant, "--quiet")
            assert r.code != 0 and "the engine has no" in r.err and not out.exists()
            continue
        blob = _blob(cli, src, out, "--profile", profile, "--quant", quant)
        with open_blob(blob) as bf:
            for t in bf.tensors:
                if t.slot.source_roles and t.slot.source_roles[0] in NORMS:
                    assert t.dtype == DType.FP32
            emb = bf.by_name["token_emb"].dtype
            if profile == "bumpwgt5":
                assert emb == output
            else:
                assert emb in embeddings and (emb == output or output not in embeddings)
            assert bf.by_name["layer.1.w1"].dtype == base


def _with_config(src: Path, tmp_path: Path, **change: Any) -> Path:
    out = tmp_path / "src"
    shutil.copytree(src, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg.update(change)
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def test_engine_sidecars_only_for_a_gemma_the_engine_computes(
        synthetic: Callable[[str], Path], tmp_path: Path, cli: Callable[..., Any]) -> None:
    """The engine's gemma3 template has one window, one RoPE base, 1/sqrt(head_dim) and no
    soft-cap: each difference is named and no model directory is written; a Gemma within those
    limits (and unpadded: the engine reads every matrix unpadded) gets one."""
    src = synthetic("gemma3-quant")
    one_base = {"full_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}
    cases = [
        ({}, "full-attention layers (1) attend to every position"),
        ({"sliding_window": 256}, "one rope_theta for every layer"),
        ({"layer_types": [SLIDING] * 3, "rope_parameters": one_base,
          "query_pre_attn_scalar": 30}, "1/sqrt(query_pre_attn_scalar=30)"),
        ({"layer_types": [SLIDING] * 3, "rope_parameters": one_base,
          "final_logit_softcapping": 30.0}, "no logit soft-cap"),
    ]
    for k, (change, message) in enumerate(cases):
        d = _with_config(src, tmp_path / str(k), **change)
        out = tmp_path / str(k) / "out"
        r = cli("convert", d, out)
        assert r.code != 0 and "no model directory for the engine" in r.err, (change, r.err)
        assert message in r.err, (change, r.err)
        assert not out.exists()
    d = _with_config(src, tmp_path / "ok", layer_types=[SLIDING] * 3, rope_parameters=one_base)
    out = tmp_path / "ok" / "out"
    assert cli("convert", d, out, "--quiet").code == 0
    engine = json.loads((out / "config.json").read_text())
    assert engine["sliding_window"] == 12 and engine["model_type"] == "gemma3_text"
    manifest = json.loads((out / "weights_manifest.json").read_text())
    assert manifest["template"] == {"name": "gemma3"}
    names = {e["name"] for e in manifest["entries"]}
    assert {"layer.0.post_attention_norm", "layer.0.post_ffn_norm"} <= names


# -- model lane: transformers ------------------------------------------------------------------

@pytest.mark.parametrize("name", GEMMAS)
def test_checkpoints_convert_and_verify(tiny: Callable[..., Path], tmp_path: Path,
                                        cli: Callable[..., Any], name: str) -> None:
    """transformers' own checkpoints (the multimodal one under its saved names, vision tower
    ignored) convert and verify in both profiles and both config layouts."""
    for layout in ("v5", "v4"):
        src = tiny(name, config_layout=layout)
        for profile in ("engine-v7", "bumpwgt5"):
            _blob(cli, src, tmp_path / f"{layout}-{profile}.bump", "--profile", profile)
    with open_blob(tmp_path / "v5-bumpwgt5.bump") as a, open_blob(tmp_path / "v4-bumpwgt5.bump") as b:
        assert a.spec == b.spec


def test_reference_stages_are_gemmas_modules(tiny: Callable[..., Path],
                                            hf: Callable[[Path], Any]) -> None:
    """The stage table hooks Gemma's own modules: post_attention_norm is its
    post_attention_layernorm's output and resid1 the layer input plus it (the input of
    pre_feedforward_layernorm, which ln2 is), out is resid1 plus post_ffn_norm; a sliding
    layer's scores are -inf beyond its window, a full layer's only above the diagonal."""
    ref = hf(tiny("gemma3-pad"))
    ids = list(np.random.default_rng(0).integers(0, 517, 60))
    run = ref.run(ids, [0, 1])
    spec = ref.spec
    for layer in (0, 1):
        s = run.stages[layer]
        x = run.hidden_states[layer]
        np.testing.assert_array_equal(s["resid1"], x + s["post_attention_norm"])
        np.testing.assert_array_equal(s["out"], s["resid1"] + s["post_ffn_norm"])
        assert not np.array_equal(s["post_attention_norm"], s["wo"])
        window = spec.window(layer)
        q, k = np.indices((len(ids), len(ids)))
        masked = k > q if window is None else (k > q) | (k <= q - window)
        assert np.array_equal(np.isneginf(s["scores"][0]), masked), layer
    assert spec.window(0) == 24 and spec.window(1) is None


def test_gguf_weights_are_transformers_own(tiny: Callable[..., Path], cache_dir: Path,
                                          tmp_path: Path, cli: Callable[..., Any]) -> None:
    """A tiny Gemma 3 through llama.cpp's converter (which stores 1 + w for every norm): the
    GGUF source's tensors are transformers' GGUF loader's parameters bit for bit (w - 1 in
    fp32, as it undoes it), the blob verifies against the GGUF, and the engine profile's norms
    are fl(1 + that)."""
    import torch
    import transformers
    from bumpconv.conversion.gguf_source import open_gguf
    g = _gemma_gguf(tiny, cache_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(g.parent, gguf_file=g.name,
                                                              dtype=torch.float32)
    params = {n: p.detach().numpy() for n, p in model.named_parameters()}
    with open_gguf(str(g)) as source:
        assert list(source.spec.layer_types) == model.config.layer_types
        assert source.spec.sliding_window == model.config.sliding_window
        shifted = 0
        for name in source.tensors:
            np.testing.assert_array_equal(source.read_all(name).view(np.uint32),
                                          params[name].view(np.uint32), err_msg=name)
            shifted += source.gguf_tensors[name].shift == 1.0
        assert shifted == 6 * source.spec.num_layers + 1
    blob = _blob(cli, g, tmp_path / "g.bump", "--profile", "engine-v7")
    with open_blob(blob) as bf:
        t = bf.by_name["layer.3.post_ffn_norm"]
        w = params["model.layers.3.post_feedforward_layernorm.weight"]
        np.testing.assert_array_equal(unpack(t.slot, bf.array(t.name))[0], np.float32(1) + w)


def _gemma_gguf(tiny: Callable[..., Path], cache_dir: Path) -> Path:
    """The tiny Gemma through llama.cpp's converter, with Gemma's SentencePiece vocabulary
    (:func:`tools.gguf_fixtures.with_gemma_vocabulary`: the converter's own needs a
    tokenizer.model)."""
    from tools import gguf_fixtures
    from tools.fixtures import tiny_tokenizer
    out_dir = cache_dir / "gguf-tests"
    hf_dir = tiny("gemma3-gguf")
    g = gguf_fixtures.hf_to_gguf(hf_dir, out_dir / "gemma3-gguf-f32.gguf", "f32", cache_dir,
                                 tokenizer=tiny_tokenizer("byte-level", cache_dir),
                                 pre="llama-bpe")
    return gguf_fixtures.with_gemma_vocabulary(g, hf_dir, tiny_tokenizer("gemma", cache_dir),
                                               out_dir / "gemma3-gguf-spm-f32.gguf")


def _corpus_mismatches(ours: Any, theirs: Any) -> list[str]:
    from tokenizer_corpus import corpus
    bad = []
    for text in corpus():
        a = ours.encode(text).ids
        b = theirs(text)["input_ids"]
        if a != b:
            bad.append(f"{text!r}: {a[:10]} != {b[:10]}")
    return bad


def test_tokenizers_give_transformers_ids(tiny: Callable[..., Path], cache_dir: Path,
                                          tmp_path: Path, cli: Callable[..., Any]) -> None:
    """The tokenizer a blob carries, rebuilt as `run` rebuilds it, gives transformers' own ids
    on the whole corpus: a tiny HF Gemma tokenizer, and Gemma's SentencePiece keys in a GGUF
    (no merges in the file: rebuilt from the vocabulary as transformers rebuilds them; the
    document is transformers' own, byte for byte)."""
    import transformers
    from bumpconv.conversion.gguf_source import open_gguf
    from bumpconv.run.carried_tokenizer import blob_tokenizer
    from tools.fixtures import tiny_tokenizer
    tok_dir = tiny_tokenizer("gemma", cache_dir)
    src = tmp_path / "hf"
    shutil.copytree(tiny("gemma3-pad"), src)
    for f in tok_dir.iterdir():
        shutil.copy(f, src / f.name)
    g = _gemma_gguf(tiny, cache_dir)
    theirs_gguf = transformers.AutoTokenizer.from_pretrained(g.parent, gguf_file=g.name)
    with open_gguf(str(g)) as source:
        assert source.tokenizer_document() == json.loads(theirs_gguf.backend_tokenizer.to_str())
    for source, theirs in ((src, transformers.AutoTokenizer.from_pretrained(src)),
                           (g, theirs_gguf)):
        blob = _blob(cli, source, tmp_path / f"{source.name}.bump")
        with open_blob(blob) as bf:
            carried = blob_tokenizer(bf)
        assert carried is not None
        bad = _corpus_mismatches(carried[0], theirs)
        assert not bad, f"{source.name}: {len(bad)} texts differ, e.g.\n" + "\n".join(bad[:5])
        assert carried[1].chat_template == theirs.chat_template
        assert carried[1].bos_token_id == 2 and 1 in carried[1].eos_token_ids


def test_dequantized_reference_maps_every_gemma_parameter(tiny: Callable[..., Path],
                                                          tmp_path: Path,
                                                          cli: Callable[..., Any]) -> None:
    """transformers' model carrying a blob's weights: the multimodal checkpoint's parameters
    by module name, an fp32 bumpwgt5 blob's bit for bit, a baked engine-v7 blob's norms giving
    the blob's factors back wherever they are >= 0.5, a q8_0 blob's matrices dequantized."""
    from bumpconv.comparison.dequantized import load_dequantized
    for name in ("gemma3-mm", "gemma3-pad"):
        src = tiny(name)
        v5 = _blob(cli, src, tmp_path / f"{name}.bump", "--profile", "bumpwgt5")
        assert load_dequantized(str(src), v5).identical
    src = tiny("gemma3-pad")
    v7 = _blob(cli, src, tmp_path / "v7.bump")
    dq = load_dequantized(str(src), v7)
    norm = dict(dq.reference.model.named_parameters())[
        "model.layers.0.post_attention_layernorm.weight"].detach().numpy()
    with open_blob(v7) as bf:
        t = bf.by_name["layer.0.post_attention_norm"]
        b = unpack(t.slot, bf.array(t.name))[0]
    big = b >= 0.5
    np.testing.assert_array_equal((np.float32(1) + norm)[big], b[big])
    src = tiny("gemma3-quant")  # rows of whole blocks
    q8 = _blob(cli, src, tmp_path / "q8.bump", "--quant", "q8_0", "--profile", "bumpwgt5")
    dq = load_dequantized(str(src), q8)
    assert not dq.identical and len(dq.dtypes) == 2


@pytest.mark.peer
@pytest.mark.parametrize("quant", ["q4_k_m", "q5_k_m", "q8_0", "q6_k"])
def test_quantized_gemma_is_llama_cpps_byte_for_byte(tiny: Callable[..., Path], cache_dir: Path,
                                                     tmp_path: Path, cli: Callable[..., Any],
                                                     quant: str) -> None:
    """llama-quantize (a `make peer` build; BUMPCONV_PEER_DIR, default .cache/peer) of llama.cpp's
    f16 GGUF of a tiny Gemma 3, kept block for block, against bumpconv's --quant of the same f16
    file: every matrix the same type and the same bytes, the tied 256-wide head included
    (llama.cpp has no Gemma-specific rule in llama_tensor_get_type)."""
    import os
    from tools import gguf_fixtures
    from tools.fixtures import tiny_tokenizer
    peer = Path(os.environ.get("BUMPCONV_PEER_DIR") or cache_dir / "peer")
    if not (peer / "build-info.json").exists():
        pytest.skip(f"no llama.cpp peer build in {peer} (make peer)")
    out_dir = cache_dir / "gguf-tests"
    f16 = gguf_fixtures.hf_to_gguf(tiny("gemma3-quant"), out_dir / "gemma3-quant-f16.gguf", "f16",
                                   cache_dir, tokenizer=tiny_tokenizer("byte-level", cache_dir),
                                   pre="llama-bpe")
    theirs = gguf_fixtures.llama_quantize(f16, out_dir / f"gemma3-quant-{quant}.gguf", quant,
                                          peer.parent)
    assert theirs is not None
    kept = tmp_path / "kept.bump"
    ours = tmp_path / "ours.bump"
    for src, blob, q in ((theirs, kept, "keep"), (f16, ours, quant)):
        assert cli("convert", src, blob, "--profile", "bumpwgt5", "--quant", q,
                   "--quiet").code == 0
    with open_blob(kept) as a, open_blob(ours) as b:
        matrices = [t for t in a.tensors if len(t.slot.shape) > 1]
        assert len(matrices) == 1 + 6 * 3
        for t in matrices:
            assert t.dtype == b.by_name[t.name].dtype, t.name
            assert a.tensor_bytes(t.name) == b.tensor_bytes(t.name), t.name


@pytest.mark.model  # torch's own gelu is the reference: not in the torch-free fast lane
def test_geglu_is_as_close_to_torch_as_swiglu_is(capsys: pytest.CaptureFixture[str]) -> None:
    """The GeGLU kernel against torch's own fp32 gelu(approximate="tanh") * up, the SwiGLU
    kernel against torch's silu * up, on the same inputs, in units of the float32 spacing of
    |gate * up| (the operands' scale; |act(g) * u| <= |g * u|): GeGLU at most as far as SwiGLU
    (measured and printed: 2 and 3 ulp, 99.2 % and 96.2 % identical). In ulp of the result
    itself GeGLU looks far worse where torch's own formula cancels, 1 + tanh(inner) near
    x = -3 .. -10: there both are off the exact value by up to ~1e-7 absolute, ours nearer."""
    import torch
    from bumpconv.native import native
    mod = native()
    ffi, lib = mod.ffi, mod.lib
    rng = np.random.default_rng(7)
    g = np.concatenate([np.linspace(-10, 10, 200_001),
                        rng.standard_normal(100_000) * 3]).astype(np.float32)
    u = rng.uniform(-2, 2, g.size).astype(np.float32)

    def kernel(fn: Any) -> np.ndarray:
        out = np.empty_like(g)
        err = ffi.new("char[]", 256)
        assert fn(ffi.from_buffer("float[]", g), ffi.from_buffer("float[]", u), g.size,
                  ffi.from_buffer("float[]", out), err, 256) == 0
        return out
    tg, tu = torch.from_numpy(g), torch.from_numpy(u)
    with torch.no_grad():
        gelu = (torch.nn.functional.gelu(tg, approximate="tanh") * tu).numpy()
        silu = (torch.nn.functional.silu(tg) * tu).numpy()
    scale = np.spacing(np.abs(g * u)).astype(np.float64)
    geglu, swiglu = kernel(lib.bump_geglu_rows), kernel(lib.bump_swiglu_rows)
    geglu_ulp = np.abs(geglu.astype(np.float64) - gelu) / scale
    swiglu_ulp = np.abs(swiglu.astype(np.float64) - silu) / scale
    with capsys.disabled():
        print(f"\nvs torch ({g.size} values, ulp of |g*u|): GeGLU max {geglu_ulp.max():.0f}, "
              f"{(geglu == gelu).mean():.2%} identical; SwiGLU max {swiglu_ulp.max():.0f}, "
              f"{(swiglu == silu).mean():.2%} identical")
    assert geglu_ulp.max() <= max(swiglu_ulp.max(), 1.0)
    assert (geglu == gelu).mean() >= (swiglu == silu).mean()


@pytest.mark.parametrize("quant, profile", [("q8_0", "engine-v7"), ("q4_k_m", "engine-v7"),
                                            ("q4_k_m", "bumpwgt5")])
def test_quantized_gemma_passes_parity_against_its_dequantized_weights(
        tiny: Callable[..., Path], tmp_path: Path, cli: Callable[..., Any], quant: str,
        profile: str) -> None:
    """A quantized Gemma (the engine profile's norms baked too) in the C runtime against
    transformers carrying the blob's dequantized weights: the fp32 thresholds, every layer."""
    src = tiny("gemma3-quant")
    blob = _blob(cli, src, tmp_path / "q.bump", "--quant", quant, "--profile", profile)
    r = cli("parity", src, blob, "--json")
    report = json.loads(r.out)
    assert r.code == 0 and report["passed"], report["verdict"]
    assert any("dequantized weights" in n for n in report["notes"])


def _scaled_norm(module: str, layer: int) -> Any:
    """A defect: the Gemma norm ``module`` of ``layer`` scaled (a wrong offset handling, a
    swapped tensor: the layer computes with a wrong post norm)."""
    from parity_helpers import Defect

    def edit(tensors: dict[str, np.ndarray], config: dict[str, Any], spec: Any) -> None:
        name = f"model.layers.{layer}.{module}.weight"
        tensors[name] = (tensors[name] * np.float32(1.5) + np.float32(0.25)).astype(np.float32)
    stage = {"post_attention_layernorm": "post_attention_norm",
             "post_feedforward_layernorm": "post_ffn_norm",
             "pre_feedforward_layernorm": "ln2"}[module]
    return Defect(f"{module} of layer {layer}", stage, layer, edit)


@pytest.mark.parametrize("module", ["post_attention_layernorm", "post_feedforward_layernorm",
                                    "pre_feedforward_layernorm"])
def test_a_defect_in_a_gemma_norm_is_reported_at_its_stage(
        tiny: Callable[..., Path], hf: Callable[[Path], Any], tmp_path: Path,
        module: str) -> None:
    """The stage table names Gemma's stages truthfully: a planted defect in its
    post-attention norm is found at stage post_attention_norm (not ln2, which is Gemma's
    pre-feedforward norm), in its post-feedforward norm at post_ffn_norm, in layer 1."""
    from bumpconv.comparison.parity_run import ParityOptions, run_parity
    from parity_helpers import build_defective
    src = tiny("gemma3-pad")
    defect = _scaled_norm(module, 1)
    blob = build_defective(src, tmp_path / "bad.bump", defect)
    report = run_parity(str(src), blob, ParityOptions(), reference=hf(src))
    d = report.divergence
    assert d is not None and (d.layer, d.stage) == (1, defect.stage), d
