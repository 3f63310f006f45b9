"""Greedy text generation with the C runtime: the decoding loop of ``bumpconv run``, its
stop tokens and streaming detokenisation.

Tokenization is Hugging Face ``tokenizers`` on the tokenizer.json the blob carries or the
source's (:mod:`.tokenizer`, :mod:`.carried_tokenizer`): special tokens are added exactly as the
tokenizer's own post-processor says, which is what transformers' AutoTokenizer does (SmolLM2
adds no BOS; a Llama tokenizer adds ``<s>``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np

from ..files.jsonfile import load_json
from ..format.errors import RuntimeInputError, TokenizerError
from ..format.spec import ModelSpec


class StepModel(Protocol):
    """What the decoding loop needs of a model: a prompt pass, one decode step with the KV
    cache, and the spec (for the context length). :class:`.runtime.BumpModel` is one; the
    loop is typed by this rather than by it so that the runtime can call the loop
    (``BumpModel.generate``) without the two modules importing each other."""

    @property
    def spec(self) -> ModelSpec: ...

    def prefill(self, tokens: Sequence[int]) -> np.ndarray: ...

    def decode(self, token: int) -> np.ndarray: ...


def eos_token_ids(tokenizer_dir: Path) -> frozenset[int]:
    """The ids that end generation, from generation_config.json or config.json (the same
    sources transformers' generate() uses); empty when neither names one."""
    for name in ("generation_config.json", "config.json"):
        if not (tokenizer_dir / name).exists():
            continue
        value = load_json(tokenizer_dir / name, TokenizerError, name).get("eos_token_id")
        if isinstance(value, int):
            return frozenset({value})
        if isinstance(value, list) and all(isinstance(v, int) for v in value):
            return frozenset(value)
    return frozenset()


class StreamDecoder:
    """Text of the generated tokens as it grows. Decodes prompt + continuation together and
    emits the new suffix, so tokenizers that treat a leading space specially still print the
    right text, and a multi-byte character split across tokens is held back until complete."""

    def __init__(self, tokenizer, prompt: Sequence[int]) -> None:  # noqa: ANN001
        self._tok = tokenizer
        self._ids = list(prompt)
        self._shown = len(self._text())

    def _text(self) -> str:
        return self._tok.decode(self._ids, skip_special_tokens=True)

    def push(self, token: int) -> str:
        self._ids.append(token)
        text = self._text()
        if text.endswith("\ufffd"):
            return ""
        new, self._shown = text[self._shown:], len(text)
        return new


@dataclass
class GenerationStats:
    """Timings of one generation: the prompt pass and the decode steps."""

    prompt_tokens: int = 0
    prefill_seconds: float = 0.0
    new_tokens: list[int] = field(default_factory=list)
    decode_seconds: float = 0.0
    stopped_at_context: bool = False

    def summary(self) -> str:
        n = len(self.new_tokens)
        rate = (n - 1) / self.decode_seconds if n > 1 and self.decode_seconds > 0 else float("nan")
        return (f"prefill: {self.prompt_tokens} tokens in {self.prefill_seconds:.3f} s "
                f"({self.prompt_tokens / max(self.prefill_seconds, 1e-9):.1f} tok/s); "
                f"decode: {n} tokens, {rate:.1f} tok/s"
                + ("; stopped at the context length" if self.stopped_at_context else ""))


def greedy(model: StepModel, prompt: Sequence[int], max_new: int,
           eos: frozenset[int] = frozenset(), stats: GenerationStats | None = None,
           clock: Callable[[], float] = time.perf_counter) -> Iterator[int]:
    """Yield up to ``max_new`` greedy tokens after ``prompt`` (stopping after an EOS id or at
    the context length). The first token comes from the prefill; each next one from one
    decode step with the KV cache. Decode time excludes the first token (it is prefill's).
    ``max_new`` must be a positive integer, as ``run -n`` requires (a negative count would
    otherwise be an empty result that looks like an immediate EOS)."""
    if isinstance(max_new, bool) or not isinstance(max_new, (int, np.integer)) or max_new < 1:
        raise RuntimeInputError(f"max_new_tokens must be a positive integer, got {max_new!r}")
    if not prompt:
        raise RuntimeInputError("the prompt is empty (it encodes to no tokens)")
    stats = stats if stats is not None else GenerationStats()
    stats.prompt_tokens = len(prompt)
    start = clock()
    logits = model.prefill(prompt)
    stats.prefill_seconds = clock() - start
    start = clock()
    for i in range(max_new):
        token = int(np.argmax(logits))
        stats.new_tokens.append(token)
        yield token
        if token in eos or i + 1 == max_new:
            break
        if len(prompt) + i >= model.spec.context_length:  # no position left to feed it at
            stats.stopped_at_context = True
            break
        logits = model.decode(token)
        stats.decode_seconds = clock() - start
