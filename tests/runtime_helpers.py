"""Test support for the C runtime: blobs of the tiny checkpoints, and transformers as reference.

The reference is always transformers' own model (fp32, eager attention), observed through
forward hooks on its modules; nothing here re-implements a layer. The two values HF does not
expose as a module output are derived from HF's own tensors with HF's own functions: the
post-RoPE q/k (the architecture's ``apply_rotary_pos_emb`` with the model's ``rotary_emb``),
and the pre-softmax scores (q_rope . k_rope * the attention module's ``scaling``).
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bumpconv.cli import main as cli_main

MODELS = ("llama-tied", "llama-untied", "llama-gqa-pad", "llama3-scaled", "mistral", "qwen2",
          "qwen3")
#: Tiny models bumpwgt3 can hold (tied, no q/k norm, head_dim == hidden / heads).
V3_MODELS = ("llama-tied", "llama-gqa-pad", "qwen2")


def convert(src: Path, out: Path, fmt: str = "bumpwgt5") -> Path:
    """``bumpconv convert`` through the CLI entry point (the path users take)."""
    code = cli_main(["convert", str(src), str(out), "--format", fmt, "--force", "--quiet"])
    assert code == 0, f"convert {src} -> {out} failed"
    return out


def prompt_ids(vocab: int, n: int, seed: int = 0) -> np.ndarray:
    """A reproducible random prompt (tiny models have no tokenizer)."""
    return np.random.default_rng(seed).integers(0, vocab, n)


class Reference:
    """One HF checkpoint loaded by transformers in fp32 with eager attention."""

    def __init__(self, src: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM
        torch.set_num_threads(2)
        self.model = AutoModelForCausalLM.from_pretrained(
            src, dtype=torch.float32, attn_implementation="eager").eval()
        self.config = self.model.config

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        import torch
        with torch.no_grad():
            return self.model(torch.as_tensor(np.asarray(tokens))[None]).logits[0].numpy()

    def greedy(self, tokens: Sequence[int], n: int) -> list[int]:
        import torch
        ids = torch.as_tensor(np.asarray(tokens))[None]
        with torch.no_grad():
            out = self.model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=None,
                                      pad_token_id=0)
        return out[0, ids.shape[1]:].tolist()

    def hidden_states(self, tokens: Sequence[int]) -> np.ndarray:
        """[L + 1, n, E]: the embedding output, then each decoder layer's output."""
        inner = self.model.model
        modules = [inner.embed_tokens, *inner.layers]
        got = self._run(tokens, {f"h{i}": (m, "out") for i, m in enumerate(modules)})
        return np.stack([got[f"h{i}"] for i in range(len(modules))])

    def taps(self, tokens: Sequence[int], layer: int) -> dict[str, np.ndarray]:
        """Every stage of docs/runtime-api.md for one layer, shaped as the doc says."""
        import torch
        cfg, inner = self.config, self.model.model
        n, H, KV = len(tokens), cfg.num_attention_heads, cfg.num_key_value_heads
        D = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
        blk = inner.layers[layer]
        att, mlp = blk.self_attn, blk.mlp
        hooks: dict[str, tuple[Any, str]] = {
            "ln1": (blk.input_layernorm, "out"), "q": (att.q_proj, "out"),
            "k": (att.k_proj, "out"), "v": (att.v_proj, "out"), "attn": (att.o_proj, "in"),
            "wo": (att.o_proj, "out"), "resid1": (blk.post_attention_layernorm, "in"),
            "ln2": (blk.post_attention_layernorm, "out"), "gate": (mlp.gate_proj, "out"),
            "up": (mlp.up_proj, "out"), "swiglu": (mlp.down_proj, "in"),
            "down": (mlp.down_proj, "out"), "out": (blk, "out"),
            "final_norm": (inner.norm, "out")}
        if hasattr(att, "q_norm"):
            hooks.update(q_norm=(att.q_norm, "out"), k_norm=(att.k_norm, "out"))
        got = self._run(tokens, hooks, attentions=True)
        got["q"], got["k"], got["v"] = (got[key].reshape(n, h, D)
                                        for key, h in (("q", H), ("k", KV), ("v", KV)))
        q = torch.from_numpy(got.get("q_norm", got["q"]).reshape(n, H, D)).transpose(0, 1)[None]
        k = torch.from_numpy(got.get("k_norm", got["k"]).reshape(n, KV, D)).transpose(0, 1)[None]
        rope = importlib.import_module(type(self.model).__module__).apply_rotary_pos_emb
        with torch.no_grad():
            cos, sin = inner.rotary_emb(q, torch.arange(n)[None])
            q_rope, k_rope = rope(q, k, cos, sin)
            k_rep = k_rope.repeat_interleave(H // KV, dim=1)
            scores = (q_rope @ k_rep.transpose(2, 3) * att.scaling)[0].numpy()
        window = getattr(cfg, "sliding_window", None) if cfg.model_type == "mistral" else None
        i, j = np.arange(n)[:, None], np.arange(n)[None, :]
        keep = (j <= i) & ((j > i - window) if window else True)
        got["scores"] = np.where(keep, scores, -np.inf).astype(np.float32)
        got["q_rope"] = q_rope[0].transpose(0, 1).numpy()
        got["k_rope"] = k_rope[0].transpose(0, 1).numpy()
        for key in ("q_norm", "k_norm"):
            if key in got:
                got[key] = got[key].reshape(n, -1, D)
        return got

    def _run(self, tokens: Sequence[int], hooks: dict[str, tuple[Any, str]],
             attentions: bool = False) -> dict[str, np.ndarray]:
        """One forward with hooks; returns each hooked value as [n, ...] numpy (batch dropped),
        plus ``probs`` [H, n, n] (HF eager attn_weights) when ``attentions``."""
        import torch
        got: dict[str, np.ndarray] = {}

        def keep(key: str) -> Callable[..., None]:
            def hook(module: Any, args: tuple, output: Any = None) -> None:
                value = args[0] if output is None else output
                value = value[0] if isinstance(value, tuple) else value
                got[key] = value.detach()[0].numpy().copy()
            return hook

        handles = [m.register_forward_hook(keep(key)) if where == "out"
                   else m.register_forward_pre_hook(keep(key))
                   for key, (m, where) in hooks.items()]
        try:
            with torch.no_grad():
                res = self.model(torch.as_tensor(np.asarray(tokens))[None],
                                 output_attentions=attentions)
        finally:
            for h in handles:
                h.remove()
        if attentions:
            got["probs"] = res.attentions[self._layer_of(hooks)][0].numpy()
        return got

    def _layer_of(self, hooks: dict[str, tuple[Any, str]]) -> int:
        blk = hooks["out"][0]
        return next(i for i, m in enumerate(self.model.model.layers) if m is blk)


@functools.lru_cache(maxsize=None)
def reference(src: Path) -> Reference:
    """One loaded reference per checkpoint per session."""
    return Reference(src)
