"""Test support for the C runtime: blobs of the tiny checkpoints, and what transformers itself
computes for them (through :class:`bumpconv.comparison.reference.Reference`, the one reference,
loaded once per checkpoint by the ``hf`` session fixture in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bumpconv.cli import main as cli_main
from bumpconv.comparison.reference import Reference

MODELS = ("llama-tied", "llama-untied", "llama-gqa-pad", "llama3-scaled", "mistral", "qwen2",
          "qwen3", "gemma3-pad", "gemma3-softcap", "gemma3-mm")
#: Tiny models bumpwgt3 can hold (tied, no q/k norm, head_dim == hidden / heads).
V3_MODELS = ("llama-tied", "llama-gqa-pad", "qwen2")


def convert(src: Path, out: Path, fmt: str = "bumpwgt5", extra: Sequence[str] = ()) -> Path:
    """``bumpconv convert`` through the CLI entry point (the path users take)."""
    code = cli_main(["convert", str(src), str(out), "--profile", fmt, "--force", "--quiet",
                     *extra])
    assert code == 0, f"convert {src} -> {out} failed"
    return out


def prompt_ids(vocab: int, n: int, seed: int = 0) -> np.ndarray:
    """A reproducible random prompt (tiny models have no tokenizer)."""
    return np.random.default_rng(seed).integers(0, vocab, n)


def hf_greedy(ref: Reference, tokens: Sequence[int], n: int) -> list[int]:
    """transformers' own greedy generation of ``n`` tokens after ``tokens``."""
    import torch
    ids = torch.as_tensor(np.asarray(tokens))[None]
    with torch.no_grad():
        out = ref.model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=None,
                                 pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


def hf_taps(ref: Reference, tokens: Sequence[int], layer: int) -> dict[str, np.ndarray]:
    """Every stage of ``layer`` plus ``final_norm``, as transformers computes them."""
    run = ref.run(tokens, [layer])
    return {**run.stages[layer], "final_norm": run.final_norm}
