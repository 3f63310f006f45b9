"""The architecture registry (schemas/architectures.json) and every derivation from it.

* A new family with no new operation is one data entry: the entry in docs/format.md is
  registered at test time, and a checkpoint under its names converts, verifies and runs in C
  with logits bit-identical to the same weights under Llama's names.
* Each derivation is guarded: the C runtime's roles, the profiles' sources, llama.cpp's own
  GGUF name map (gguf-py), and (model lane) the modules and config keys transformers really has
  for every family, Gemma 3 included.
* An operation bumpconv lacks is refused by name on one line (converting, when the converter
  lacks it; running, when the C runtime does): Gemma 3 converts, and until the C runtime
  computes its operations, `run` refuses it naming them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bumpconv.format.errors import ConfigError, LayoutError
from bumpconv.format.profile import PROFILES, Profile, expand_tensors, holds, load_profile
from bumpconv.format.registry import (IMPLEMENTED, OPERATIONS, RUNTIME_IMPLEMENTED, register,
                                      registered, registry, unregister)
from bumpconv.format.stages import FINAL_NORM, STAGES, stage_module, stages_for
from bumpconv.native import native

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "format.md"
CLONE = "llamaclone"


def doc_entry() -> dict[str, Any]:
    """The family entry docs/format.md shows under "A new family is one data entry"."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("### A new family is one data entry"):]
    return json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))


@pytest.fixture
def clone() -> Iterator[Any]:
    with registered(CLONE, doc_entry()) as family:
        yield family


# -- the data entry ----------------------------------------------------------------------------

def _rename(src: Path, dst: Path, family: Any) -> Path:
    """``src`` (a llama checkpoint) with every tensor under ``family``'s name for its role."""
    from safetensors.numpy import load_file, save_file
    llama = registry().families["llama"]
    config = json.loads((src / "config.json").read_text())
    names = {}
    for role, info in registry().roles.items():
        if llama.has(role):
            for layer in range(config["num_hidden_layers"]) if info.scope == "layer" else [None]:
                names[llama.hf_name(role, layer)] = family.hf_name(role, layer)
    tensors = load_file(src / "model.safetensors")
    dst.mkdir()
    save_file({names[k]: v for k, v in tensors.items()}, str(dst / "model.safetensors"),
              metadata={"format": "pt"})
    (dst / "config.json").write_text(json.dumps({**config, "model_type": CLONE}))
    return dst


@pytest.mark.parametrize("profile", ["engine-v7", "bumpwgt5"])
def test_a_family_from_data_converts_verifies_and_runs(synthetic: Callable[[str], Path],
                                                      tmp_path: Path, cli: Callable[..., Any],
                                                      clone: Any, profile: str) -> None:
    """The docs' entry, registered at run time, is a family like the shipped ones: its
    checkpoint converts (every tensor found by its own name), verifies bit for bit, and the C
    runtime gives the logits of the same weights converted under Llama's names, bit for bit."""
    from bumpconv.blob.reader import open_blob
    from bumpconv.run.runtime import BumpModel
    llama_src = synthetic("llama-untied")
    clone_src = _rename(llama_src, tmp_path / "clone", clone)
    blobs = {}
    for name, src in (("llama", llama_src), (CLONE, clone_src)):
        blobs[name] = tmp_path / f"{name}.bump"
        r = cli("convert", src, blobs[name], "--profile", profile, "--quiet",
                "--no-engine-sidecars")
        assert r.code == 0, r.err
    assert cli("verify", blobs[CLONE], "--against", clone_src).code == 0
    with open_blob(blobs[CLONE]) as bf, open_blob(blobs["llama"]) as ref:
        assert bf.spec is not None and bf.spec.architecture == CLONE
        wq = next(t for t in bf.tensors if t.slot.role == "wq" and t.slot.layer == 1)
        assert wq.slot.sources == ("transformer.h.1.attn.q.weight",)
        head = next(t for t in bf.tensors if t.slot.role == "lm_head")
        assert head.slot.sources == ("head.weight",)
        end = ref.tensors[-1].end
        assert end == bf.tensors[-1].end
    # the header, the dtype table and every weight: the same bytes (the metadata differs)
    assert blobs[CLONE].read_bytes()[:end] == blobs["llama"].read_bytes()[:end]
    ids = np.random.default_rng(0).integers(0, 517, 40)
    with BumpModel.open(blobs[CLONE]) as m, BumpModel.open(blobs["llama"]) as want:
        np.testing.assert_array_equal(m.forward(ids), want.forward(ids))


def test_a_family_entry_is_validated_like_the_file(clone: Any) -> None:
    """A bad entry is a ConfigError naming what is wrong, and changes nothing."""
    entry = doc_entry()
    bad = {**entry, "layer_tensors": {**entry["layer_tensors"], "bq": "attn.q.bias"}}
    with pytest.raises(ConfigError, match="names role 'bq', which only a family with qkv_bias"):
        register("other", bad)
    full = registry().families["llama"].model_dump()  # an entry that extends nothing
    missing = {**full, "layer_tensors": {k: v for k, v in full["layer_tensors"].items()
                                         if k != "wo"}}
    with pytest.raises(ConfigError, match="no Hugging Face name for role 'wo'"):
        register("other", missing)
    with pytest.raises(ConfigError, match="unknown role 'wx'"):
        register("other", {**entry, "layer_tensors": {"wx": "attn.x.weight"}})
    with pytest.raises(ConfigError, match="extends unknown family 'lama'"):
        register("other", {**entry, "extends": "lama"})
    with pytest.raises(ConfigError, match="already registered"):
        register(CLONE, entry)
    assert "other" not in registry().families and CLONE in registry().families
    with pytest.raises(ConfigError, match="was not registered"):
        unregister("llama")


def test_a_nested_text_config_is_read_as_the_model(tmp_path: Path) -> None:
    """A family whose config nests the text model (text_config) is read from it, with the
    top-level tie flag (what transformers ties by); a config without it is refused by name."""
    from bumpconv.format.spec import spec_from_config
    text = {"vocab_size": 32, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 16, "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "tie_word_embeddings": False}
    with registered("nested", {**doc_entry(), "config": {"text_config": "text_config"}}):
        spec = spec_from_config({"model_type": "nested", "text_config": text,
                                 "tie_word_embeddings": True})
        assert spec.architecture == "nested" and spec.hidden_size == 16
        assert spec.tie_word_embeddings
        with pytest.raises(ConfigError, match="required key 'text_config' is missing"):
            spec_from_config({"model_type": "nested"})


# -- an operation bumpconv lacks: refused by name ------------------------------------------------

#: What bumpconv implemented before Gemma 3: Llama, Mistral, Qwen2, Qwen3.
LLAMA_BODY_OPERATIONS = frozenset({"silu", "qkv_bias", "qk_norm", "sliding_window"})
GEMMA_MISSING = ("GeGLU with tanh-approximated GELU", "post-attention and post-feedforward norms",
                 "RMSNorm weights applied as (1 + w)", "embeddings scaled by sqrt(hidden_size)",
                 "query_pre_attn_scalar", "sliding and full attention layers",
                 "a RoPE base per layer type", "final logit soft-capping")


@pytest.mark.parametrize("model_type", ["gemma3_text", "gemma3"])
def test_an_unimplemented_operation_is_refused_on_one_line(
        tmp_path: Path, cli: Callable[..., Any], model_type: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The mechanism that refused Gemma 3 before it was implemented: a family needing an
    operation outside IMPLEMENTED is refused on one line naming each, nothing written."""
    import bumpconv.format.registry as reg
    monkeypatch.setattr(reg, "IMPLEMENTED", LLAMA_BODY_OPERATIONS)
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": model_type}))
    (src / "model.safetensors").write_bytes(b"")
    out = tmp_path / "out"
    out.mkdir()
    r = cli("convert", src, out / "m.bump", "--quiet")
    assert r.code != 0 and "Traceback" not in r.err
    line, = r.err.strip().splitlines()
    assert f"architecture '{model_type}' is not supported yet" in line and str(src) in line
    wanted = GEMMA_MISSING if model_type == "gemma3_text" else GEMMA_MISSING[:-1]
    assert all(what in line for what in wanted), line
    assert not list(out.iterdir())


def test_a_family_the_runtime_lacks_converts_and_is_refused_by_run(
        tmp_path: Path, cli: Callable[..., Any], synthetic: Callable[[str], Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """While the C runtime lacks an operation of a family (as it lacked Gemma 3's before they
    landed), its blobs convert, verify and inspect, and opening one in the runtime is refused
    on one line naming what it lacks."""
    import bumpconv.format.registry as reg
    monkeypatch.setattr(reg, "RUNTIME_IMPLEMENTED", LLAMA_BODY_OPERATIONS)
    missing = registry().families["gemma3_text"].missing_runtime_operations()
    assert missing
    src = synthetic("gemma3-pad")
    blob = tmp_path / "g.bump"
    assert cli("convert", src, blob, "--quiet", "--no-engine-sidecars").code == 0
    assert cli("verify", blob, "--against", src).code == 0
    from bumpconv.run.runtime import BumpModel
    with pytest.raises(ConfigError) as err:
        BumpModel.open(blob)
    line, = str(err.value).splitlines()
    assert "C runtime does not run architecture 'gemma3_text'" in line and str(blob) in line
    assert all(OPERATIONS[op] in line for op in missing), line


def test_operations_table() -> None:
    """Every operation a family can need is named for refusals; the converter implements every
    one the shipped families need, the C runtime those of the families it runs."""
    reg = registry()
    needed = {op for f in reg.families.values() for op in f.features.operations()}
    assert needed <= set(OPERATIONS) and needed <= IMPLEMENTED
    assert reg.supported() == ("llama", "mistral", "qwen2", "qwen3", "gemma3_text", "gemma3")
    assert {op for n in reg.runnable() for op in reg.families[n].features.operations()} \
        == RUNTIME_IMPLEMENTED
    assert set(reg.runnable()) <= set(reg.supported())


# -- conditions ----------------------------------------------------------------------------------

def test_conditions_can_be_negated_and_name_features() -> None:
    raw = json.loads((ROOT / "schemas" / "bumpwgt5.profile.json").read_text())
    raw["tensors"][1]["per_layer"].append(
        {"name": "layer.{layer}.plain", "role": "ln1", "shape": ["AE"], "when": "!qk_norm"})
    profile = Profile.model_validate(raw)
    dims = {"L": 1, "V": 7, "E": 40, "I": 20, "H": 4, "KV": 2, "D": 10, "T": 5, "AE": 48,
            "AD": 16, "AI": 32, "AC": 16}
    flags = {"qkv_bias": False, "qk_norm": False, "untied": True, "post_norms": False,
             "norm_offset": False}
    names = [s.name for s in expand_tensors(profile, dims, flags, None)]
    assert "layer.0.plain" in names and "layer.0.q_norm" not in names
    names = [s.name for s in expand_tensors(profile, dims, {**flags, "qk_norm": True}, None)]
    assert "layer.0.plain" not in names and "layer.0.q_norm" in names
    assert profile.flags_used() == ("post_norms", "qk_norm", "qkv_bias", "untied")
    assert holds("post_norms", {"post_norms": True}) and not holds("!post_norms",
                                                                   {"post_norms": True})
    with pytest.raises(LayoutError, match="unknown condition 'sliding'"):
        holds("!sliding", flags)
    raw["tensors"][1]["per_layer"][-1]["when"] = "not qk_norm"
    with pytest.raises(ValueError, match="must be a flag name"):
        Profile.model_validate(raw)


def test_profile_sources_are_roles_of_the_right_scope() -> None:
    raw = json.loads((ROOT / "schemas" / "engine-v7.profile.json").read_text())
    raw["tensors"][0]["sources"] = ["model.embed_tokens.weight"]
    with pytest.raises(ValueError, match="is not a role of the architecture registry"):
        Profile.model_validate(raw)
    raw["tensors"][0]["sources"] = ["ln1"]
    with pytest.raises(ValueError, match="source 'ln1' is a layer role, the rule a global one"):
        Profile.model_validate(raw)


# -- derivation guards -----------------------------------------------------------------------------

def _supported_roles(families: tuple[str, ...] | None = None) -> set[str]:
    reg = registry()
    return {role for n in (reg.supported() if families is None else families)
            for role in reg.roles if reg.families[n].has(role)}


def test_c_role_table_holds_every_role_of_a_runnable_family() -> None:
    """The C runtime's role enum is the registry's blob roles: every role a family it runs
    has lands in a C role (``w1.gate`` in ``w1``), and every C role is one of them."""
    lib = native().lib
    c_roles = {name[len("BUMP_ROLE_"):].lower() for name in dir(lib)
               if name.startswith("BUMP_ROLE_")}
    runs = _supported_roles(registry().runnable())
    assert {role.partition(".")[0] for role in runs} == c_roles


@pytest.mark.parametrize("profile", ["engine-v7", "bumpwgt5"])
def test_full_profiles_consume_every_role_of_a_supported_family(profile: str) -> None:
    """The profiles that hold every supported model read every role such a family has (so no
    source tensor of a supported family is left unconsumed)."""
    read = {role for rule in load_profile(profile).rules() for role in rule.sources}
    assert read == _supported_roles()


def test_every_profile_reads_only_roles() -> None:
    roles = set(registry().roles)
    for name in PROFILES:
        assert {r for rule in load_profile(name).rules() for r in rule.sources} <= roles


def test_engine_templates_are_the_engines() -> None:
    from bumpconv.format.engine_tokenizer import ENGINE_TEMPLATE_TOKENIZER, engine_template
    for name, family in registry().families.items():
        assert family.engine_template in ENGINE_TEMPLATE_TOKENIZER, name
        assert engine_template(name) == family.engine_template
    assert engine_template("nanbeige") == "llama"  # the engine's own fallback


def test_gguf_names_are_llama_cpps() -> None:
    """Every family's HF name -> GGUF name, role by role, is what gguf-py's own TensorNameMap
    (llama.cpp's converter) maps it to for that GGUF architecture."""
    import gguf
    reg = registry()
    archs = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}
    checked = 0
    for family in reg.families.values():
        if family.gguf is None:
            continue
        tmap = gguf.get_tensor_name_map(archs[family.gguf.architecture], 2)
        for role, info in reg.roles.items():
            if not family.has(role):
                continue
            for layer in (0, 1) if info.scope == "layer" else (None,):
                hf = family.hf_name(role, layer)
                got = tmap.get_name(hf, try_suffixes=(".weight", ".bias"))
                assert got == info.gguf.replace("{layer}", str(layer)), (family.name, role, hf)
                checked += 1
    assert checked > 100


def test_gguf_architectures_map_to_families() -> None:
    """Each GGUF architecture is one family's; Mistral has none (llama.cpp writes it as llama)."""
    reg = registry()
    assert {reg.gguf_family(a).name for a in ("llama", "qwen2", "qwen3", "gemma3")} == \
        {"llama", "qwen2", "qwen3", "gemma3_text"}
    assert reg.gguf_family("mistral") is None


# -- against transformers (model lane) ----------------------------------------------------------

_TEXT = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
             num_attention_heads=2, num_key_value_heads=1, head_dim=16,
             max_position_embeddings=64, tie_word_embeddings=False)
_VISION = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
               image_size=28, patch_size=14)


def _tiny_config(name: str) -> Any:
    import transformers
    family = registry().families[name]
    if family.config.text_config is not None:
        return transformers.AutoConfig.for_model(
            name, **{family.config.text_config: _TEXT, "vision_config": _VISION},
            tie_word_embeddings=False)
    return transformers.AutoConfig.for_model(name, **_TEXT)


@pytest.mark.model
@pytest.mark.parametrize("name", list(registry().families))
def test_names_and_hooks_are_transformers_own(name: str, tmp_path: Path) -> None:
    """A tiny transformers model of each family: its parameters are exactly the family's role
    tensors (plus what the family ignores), the checkpoint transformers saves holds them under
    the family's checkpoint names, and every module a parity stage hooks exists."""
    import torch
    import transformers
    from safetensors import safe_open
    from bumpconv.comparison.reference import _submodule
    from tools.fixtures import role_kinds
    family = registry().families[name]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(_tiny_config(name))
    params = {n for n, _ in model.named_parameters()}
    ignored = [re.compile(p) for p in family.ignored]
    roles = set(role_kinds(family, _TEXT["num_hidden_layers"]))
    assert roles == {p for p in params if not any(r.match(family.saved(p)) for r in ignored)}
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "np") as f:
        saved = {k for k in f.keys() if not any(r.match(k) for r in ignored)}
    layers_n = _TEXT["num_hidden_layers"]
    assert saved == {family.hf_name(role, layer) for role, info in registry().roles.items()
                     if family.has(role)
                     for layer in (range(layers_n) if info.scope == "layer" else (None,))}
    flags = {**family.features.conditions(), "untied": True, "tokenizer": False}
    layers = _submodule(model, family.layers_module)
    assert len(layers) == _TEXT["num_hidden_layers"]
    for stage in stages_for(flags):
        if stage.hook != "attention":
            assert isinstance(_submodule(layers[1], stage_module(stage, family)),
                              torch.nn.Module), stage.key
    q_rope = next(s for s in STAGES if s.key == "q_rope")
    attention = _submodule(layers[1], stage_module(q_rope, family))
    assert hasattr(attention, "layer_idx")  # what the tapping attention function keys on
    assert isinstance(_submodule(model, stage_module(FINAL_NORM, family)), torch.nn.Module)
    # head_major: the q/k norm modules see [batch, heads, positions, D] exactly where it says
    seen: dict[str, tuple[int, ...]] = {}

    def record(role: str) -> Callable[..., None]:
        def hook(_m: Any, _a: Any, out: Any) -> None:
            seen[role] = tuple(out.shape)
        return hook
    hooks = [_submodule(layers[0], family.module_of(role)).register_forward_hook(record(role))
             for role in ("q_norm", "k_norm") if family.has(role)]
    n = 5  # neither head count
    with torch.no_grad():
        model(torch.arange(n)[None])
    for h in hooks:
        h.remove()
    for role, shape in seen.items():
        assert shape[2 if role in family.head_major else 1] == n, (role, shape)
    assert set(family.head_major) <= set(seen)


#: A value per registry-named config key that differs from every family's default.
_PROBES: dict[str, Any] = {"hidden_act": "gelu", "hidden_activation": "gelu",
                           "sliding_window": 7, "sliding_window_pattern": 2,
                           "rope_local_base_freq": 1234.0, "query_pre_attn_scalar": 77,
                           "final_logit_softcapping": 30.0, "attn_logit_softcapping": 30.0,
                           "attention_bias": True, "use_sliding_window": True,
                           "use_bidirectional_attention": True,
                           "layer_types": ["full_attention", "full_attention"]}


@pytest.mark.model
@pytest.mark.parametrize("name", list(registry().families))
def test_config_keys_are_transformers_own(name: str) -> None:
    """Every config key a family's entry reads or refuses changes what transformers' own config
    class builds for that model type (so the registry never reads a key transformers ignores)."""
    import transformers
    family = registry().families[name]
    f = family.features
    keys = [f.activation.key, f.attention.window, f.attention.layer_types,
            f.attention.full_every, f.rope.local_theta, f.query_scale, f.logit_softcap,
            *family.config.refuse]
    text = family.config.text_config
    base = {**_TEXT, "num_hidden_layers": 2}
    for key in filter(None, keys):
        def build(**extra: Any) -> dict[str, Any]:
            if text is None:
                return transformers.AutoConfig.for_model(name, **base, **extra).to_dict()
            return transformers.AutoConfig.for_model(
                name, **{text: {**base, **extra}}, vision_config=_VISION).to_dict()
        assert build(**{key: _PROBES[key]}) != build(), (name, key)
    if text is not None:
        assert text in transformers.AutoConfig.for_model(name).to_dict()
