"""A GGUF's tokenizer keys as the documents a checkpoint's tokenizer comes in.

A GGUF has no tokenizer.json: it holds ``tokenizer.ggml.tokens``, ``merges``, ``token_type``,
the special ids and ``tokenizer.chat_template``. The ground truth is transformers' GGUF loader,
so the tokenizer.json built here is the one transformers builds from the same keys (the rules
are data in ``schemas/gguf.sources.json``, "tokenizer"); it is serialised by the ``tokenizers``
library itself, then goes through the same
:func:`~bumpconv.conversion.tokenizer_section.section_from_documents` as a checkpoint's files.
Only byte-level BPE (``tokenizer.ggml.model`` "gpt2") is carried; others are refused by name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..format.errors import TokenizerError
from ..format.tokenizer_meta import TokenizerMeta
from ..format.vocab import BYTE_TO_UNICODE, VocabArrays
from .tokenizer_section import section_from_documents

#: The special tokens' GGUF keys, by tokenizer_config.json name.
_SPECIAL = {"bos": "tokenizer.ggml.bos_token_id", "eos": "tokenizer.ggml.eos_token_id",
            "unk": "tokenizer.ggml.unknown_token_id", "pad": "tokenizer.ggml.padding_token_id"}


def has_tokenizer(value: Callable[[str], Any]) -> bool:
    return value("tokenizer.ggml.model") is not None


def tokenizer_json(value: Callable[[str], Any], rules: dict[str, Any],
                   path: Path) -> dict[str, Any]:
    """transformers' tokenizer.json for the GGUF's keys (``value(key)``: a key's contents)."""
    from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers,
                            processors)
    model = value("tokenizer.ggml.model")
    if model not in rules["models"]:
        raise TokenizerError(f"{path}: tokenizer.ggml.model {model!r} is not supported (only "
                             f"{', '.join(rules['models'])}: byte-level BPE)")
    tokens = _list(value, "tokenizer.ggml.tokens", path)
    merges = _list(value, "tokenizer.ggml.merges", path)
    types = value("tokenizer.ggml.token_type") or []
    alphabet = set(BYTE_TO_UNICODE)
    # a token outside the byte alphabet is spelt in it, as transformers does (llama.cpp mislabels)
    vocab = {t if set(t) <= alphabet else "".join(BYTE_TO_UNICODE[b] for b in t.encode("utf-8")): i
             for i, t in enumerate(tokens)}
    pairs = []
    for rank, merge in enumerate(merges):
        parts = merge.split(" ")
        if len(parts) != 2:
            raise TokenizerError(f"{path}: tokenizer.ggml.merges[{rank}] {merge!r} is not "
                                 "'left right'")
        pairs.append((parts[0], parts[1]))
    tok = Tokenizer(models.BPE(vocab, pairs, dropout=None, unk_token=None,
                               continuing_subword_prefix="", end_of_word_suffix="",
                               fuse_unk=False, byte_fallback=False, ignore_merges=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                                 use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.post_processor = _post_processor(value, tokens, processors)
    control = [AddedToken(t, normalized=False, special=True)
               for t, kind in zip(tokens, types)
               if kind == rules["control_type"] and set(t) <= alphabet]
    if control:
        tok.add_special_tokens(control)
    user = [AddedToken(t, normalized=False, special=False)
            for t, kind in zip(tokens, types) if kind == rules["user_defined_type"] and t in vocab]
    if user:
        tok.add_tokens(user)
    split = rules["pre_splits"].get(value("tokenizer.ggml.pre"))
    if split is not None:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(rules["split_regex"][split]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return json.loads(tok.to_str())


def _post_processor(value: Callable[[str], Any], tokens: list[str], processors: Any) -> Any:
    """BOS/EOS added around each sequence as tokenizer.ggml.add_bos_token/add_eos_token say
    (transformers' template: ``<bos>:0 $A:0 <eos>:0 <bos>:1 $B:1 <eos>:1``)."""
    ends: dict[str, tuple[str, int]] = {}
    for name in ("bos", "eos"):
        i = value(f"tokenizer.ggml.{name}_token_id")
        if value(f"tokenizer.ggml.add_{name}_token") is True and isinstance(i, int) \
                and 0 <= i < len(tokens):
            ends[name] = (tokens[i], i)

    def template(seq: str, type_id: int) -> str:
        parts = [f"{ends['bos'][0]}:{type_id}"] if "bos" in ends else []
        parts.append(f"${seq}:{type_id}")
        if "eos" in ends:
            parts.append(f"{ends['eos'][0]}:{type_id}")
        return " ".join(parts)
    return processors.TemplateProcessing(single=template("A", 0),
                                         pair=f"{template('A', 0)} {template('B', 1)}",
                                         special_tokens=list(dict.fromkeys(ends.values())))


def gguf_tokenizer_section(value: Callable[[str], Any], rules: dict[str, Any], vocab_size: int,
                           path: Path) -> tuple[VocabArrays, TokenizerMeta]:
    """The engine's arrays and the tokenizer record from the GGUF's keys."""
    doc = tokenizer_json(value, rules, path)
    tokens = _list(value, "tokenizer.ggml.tokens", path)
    ids: dict[str, int] = {}
    tok_cfg: dict[str, Any] = {}
    for name, key in _SPECIAL.items():
        i = value(key)
        if i is None:
            continue
        if not isinstance(i, int) or not 0 <= i < len(tokens):
            raise TokenizerError(f"{path}: {key} = {i!r} is not a token id")
        ids[f"{name}_token_id"] = i
        tok_cfg[f"{name}_token"] = tokens[i]
    template = value("tokenizer.chat_template")
    if template is not None:
        tok_cfg["chat_template"] = template
    gen_cfg = {k: v for k, v in ids.items() if k in ("bos_token_id", "eos_token_id")}
    return section_from_documents(doc, vocab_size, {}, tok_cfg, None, gen_cfg, None,
                                  f"{path} (tokenizer keys)")


def _list(value: Callable[[str], Any], key: str, path: Path) -> list[str]:
    items = value(key)
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise TokenizerError(f"{path}: GGUF key {key!r} must be an array of strings"
                             + (" (it is missing)" if items is None else ""))
    return items
