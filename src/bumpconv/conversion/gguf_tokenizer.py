"""A GGUF's tokenizer keys as the documents a checkpoint's tokenizer comes in.

A GGUF has no tokenizer.json: it holds ``tokenizer.ggml.tokens``, ``merges``, ``token_type``,
the special ids and ``tokenizer.chat_template``. The ground truth is transformers' GGUF loader,
so the tokenizer.json built here is the one transformers builds from the same keys (the rules
are data in ``schemas/gguf.sources.json``, "tokenizer"); it is serialised by the ``tokenizers``
library itself, then goes through the same
:func:`~bumpconv.conversion.tokenizer_section.section_from_documents` as a checkpoint's files.
Carried: byte-level BPE (``tokenizer.ggml.model`` "gpt2"), and SentencePiece vocabularies
("llama") of the architectures transformers gives a builder of their own (Gemma 3: the file
lists no merges; they are rebuilt from the vocabulary exactly as transformers does); others are
refused by name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..format.errors import TokenizerError
from ..format.tokenizer_meta import SPM_SPACE, TokenizerMeta
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
    model = value("tokenizer.ggml.model")
    arch = value("general.architecture")
    if model == "llama" and rules["sentencepiece"].get(arch) == "gemma":
        return _gemma_json(value, rules, path)
    if model not in rules["models"]:
        spm = ", ".join(f"'llama' for {a}" for a in rules["sentencepiece"])
        raise TokenizerError(f"{path}: tokenizer.ggml.model {model!r} is not supported for "
                             f"architecture {arch!r} (only {', '.join(rules['models'])}: "
                             f"byte-level BPE; {spm})")
    return _byte_level_json(value, rules, path)


def _byte_level_json(value: Callable[[str], Any], rules: dict[str, Any],
                     path: Path) -> dict[str, Any]:
    """transformers' byte_level_tokenizer: GPT2Tokenizer over the tokens and merges."""
    from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers,
                            processors)
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
    tok.post_processor = _post_processor(value, tokens, processors, add_bos=False)
    _add_marked_tokens(tok, tokens, types, vocab, rules, alphabet, AddedToken)
    split = rules["pre_splits"].get(value("tokenizer.ggml.pre"))
    if split is not None:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(rules["split_regex"][split]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return json.loads(tok.to_str())


def _gemma_json(value: Callable[[str], Any], rules: dict[str, Any],
                path: Path) -> dict[str, Any]:
    """transformers' gemma_tokenizer: a token of two or more spaces respelled with ``▁`` (the
    file stores real spaces), merges rebuilt from the vocabulary ordered by the tokens'
    positions in the file (Gemma's scores do not follow its merge order), GemmaTokenizer's
    pipeline, then the marked tokens and BOS as for every GGUF."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers import processors
    tokens = _list(value, "tokenizer.ggml.tokens", path)
    types = value("tokenizer.ggml.token_type") or []
    spelt = [SPM_SPACE * len(t) if " " in t and not t.strip() else t for t in tokens]
    vocab = {t: i for i, t in enumerate(spelt)}
    positions = {t: -i for i, t in enumerate(spelt)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges_from_vocabulary(vocab, positions),
                               fuse_unk=True, unk_token="<unk>", dropout=None, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous",
                                             invert=False)
    tok.decoder = decoders.Sequence([decoders.Replace(SPM_SPACE, " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    tok.normalizer = normalizers.Replace(" ", SPM_SPACE)
    tok.post_processor = _post_processor(value, tokens, processors, add_bos=True)
    # the file's own spellings, as transformers passes them: a user-defined token of spaces
    # ("  ") is then not in the respelled vocabulary and is not added
    _add_marked_tokens(tok, tokens, types, vocab, rules, None, AddedToken)
    return json.loads(tok.to_str())


def merges_from_vocabulary(vocab: dict[str, int],
                           scores: dict[str, float]) -> list[tuple[str, str]]:
    """The merges a BPE vocabulary implies, best first (transformers' ``generate_merges`` with
    scores, step for step, so the order - and with it every tie - is the same): each token
    split at every point into two tokens of the vocabulary, pairs of one token ordered by their
    parts' ids, all pairs by (score, left length, right length), highest first, stably."""
    merges: list[tuple[str, str, float]] = []
    for merge, score in scores.items():
        local = [(merge[:k], merge[k:], score) for k in range(1, len(merge))
                 if merge[:k] in vocab and merge[k:] in vocab]
        local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(left, right) for left, right, _ in merges]


def _add_marked_tokens(tok: Any, tokens: list[str], types: list[int], vocab: dict[str, int],
                       rules: dict[str, Any], alphabet: set[str] | None, added: Any) -> None:
    """CONTROL tokens as special added tokens (in a byte-level vocabulary only those spelt in
    its alphabet: another is a llama.cpp mislabel), USER_DEFINED ones of the vocabulary as
    plain added tokens, as transformers' add_gguf_special_tokens does."""
    control = [added(t, normalized=False, special=True) for t, kind in zip(tokens, types)
               if kind == rules["control_type"] and (alphabet is None or set(t) <= alphabet)]
    if control:
        tok.add_special_tokens(control)
    user = [added(t, normalized=False, special=False)
            for t, kind in zip(tokens, types) if kind == rules["user_defined_type"] and t in vocab]
    if user:
        tok.add_tokens(user)


def _post_processor(value: Callable[[str], Any], tokens: list[str], processors: Any,
                    add_bos: bool) -> Any:
    """BOS/EOS added around each sequence as tokenizer.ggml.add_bos_token/add_eos_token say
    (transformers' template: ``<bos>:0 $A:0 <eos>:0 <bos>:1 $B:1 <eos>:1``); ``add_bos``: the
    default when the file has no add_bos_token key (transformers': true for a SentencePiece
    vocabulary, which llama.cpp gives a BOS unless told otherwise)."""
    ends: dict[str, tuple[str, int]] = {}
    for name, default in (("bos", add_bos), ("eos", False)):
        i = value(f"tokenizer.ggml.{name}_token_id")
        flag = value(f"tokenizer.ggml.add_{name}_token")
        if (default if flag is None else flag is True) and isinstance(i, int) \
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
