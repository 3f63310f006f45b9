"""The tokenizer record a blob carries beside the engine's arrays: everything the engine drops.

The engine keeps only token strings and merges (:mod:`bumpconv.format.vocab`). Hugging Face's
``tokenizer.json`` also holds the normalizer, the pre-tokenizer, the added tokens with their
matching flags, the post-processor (BOS) and the decoder; the checkpoint holds BOS/EOS ids and
the chat template. :class:`TokenizerMeta` records all of it. The vocabulary and merges are kept
once, in the arrays: the record holds ``tokenizer.json`` without ``model.vocab`` and
``model.merges``, plus the two facts needed to put them back (which ids are the BPE model's own,
and how merges were spelled), so :func:`rebuild_tokenizer_json` restores the parsed document
exactly.

Which pipeline components bumpconv can carry is decided here (:func:`check_supported`): the BPE
families of Llama-family checkpoints, byte-level (GPT-2, Llama 3, Qwen2/3, SmolLM2) and
SentencePiece-style with byte fallback (Llama 2, Mistral, Gemma 3), with the pipeline components the
tests carry through a blob and back (``bumpconv run`` hands the rebuilt document to
``tokenizers``, so the ids are transformers'; tests/test_vocab.py checks them on every variant).
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .errors import TokenizerError
from .vocab import VocabArrays

FORMAT = "bumpconv-tokenizer-1"
#: SentencePiece's word-boundary mark.
SPM_SPACE = "\u2581"

#: Component types bumpconv carries, per section (those the tests carry and check).
SUPPORTED: dict[str, frozenset[str]] = {
    "normalizer": frozenset({"Sequence", "Prepend", "Replace", "NFC", "NFD", "NFKC", "NFKD"}),
    "pre_tokenizer": frozenset({"Sequence", "ByteLevel", "Split", "Digits", "Metaspace"}),
    "post_processor": frozenset({"Sequence", "TemplateProcessing", "ByteLevel"}),
    "decoder": frozenset({"Sequence", "ByteLevel", "Metaspace", "Replace", "ByteFallback",
                          "Fuse", "Strip"}),
}

#: Split behaviours carried: Llama 3's and Qwen's regex splits (Isolated); Gemma's split on
#: spaces, each kept with the piece before it (MergedWithPrevious).
SPLIT_BEHAVIORS = ("Isolated", "MergedWithPrevious")

Kind = Literal["byte_level_bpe", "sentencepiece_bpe"]


class TokenizerMeta(BaseModel):
    """The tokenizer facts the engine's arrays do not hold (JSON-serialisable)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["bumpconv-tokenizer-1"] = FORMAT
    #: tokenizer.json as parsed, without ``model.vocab`` and ``model.merges``.
    tokenizer_json: dict[str, Any]
    #: ``[start, stop)`` id ranges of the BPE model's own vocabulary (``model.vocab``); the other
    #: ids below the tokenizer's size are added tokens, the ids above it padding rows.
    model_vocab_ids: list[tuple[int, int]]
    #: How tokenizer.json spelt its merges: ``[["a", "b"], ...]`` or ``["a b", ...]``.
    merges_form: Literal["pairs", "strings"]
    #: tokenizer_config.json and special_tokens_map.json as parsed, when the checkpoint has them.
    tokenizer_config: dict[str, Any] | None = None
    special_tokens_map: dict[str, Any] | None = None
    #: chat_template.jinja, the file transformers 5 saves the chat template in.
    chat_template_file: str | None = None
    #: Resolved from generation_config.json, config.json and tokenizer_config.json (in that
    #: order); ``eos_token_ids`` is every end-of-sequence id any of them names.
    bos_token_id: int | None = None
    eos_token_ids: list[int] = []
    pad_token_id: int | None = None

    @property
    def kind(self) -> Kind:
        return tokenizer_kind(self.tokenizer_json)

    @property
    def added_tokens(self) -> list[dict[str, Any]]:
        return list(self.tokenizer_json.get("added_tokens") or [])

    @property
    def chat_template(self) -> str | list[dict[str, str]] | None:
        """The template transformers would use: chat_template.jinja, else tokenizer_config's."""
        if self.chat_template_file is not None:
            return self.chat_template_file
        return (self.tokenizer_config or {}).get("chat_template")

    def is_model_vocab_id(self, token_id: int) -> bool:
        return any(a <= token_id < b for a, b in self.model_vocab_ids)


def check_supported(doc: dict[str, Any], where: str = "tokenizer.json") -> None:
    """Refuse, naming the component, any tokenizer.json bumpconv cannot carry exactly."""
    model = doc.get("model")
    if not isinstance(model, dict):
        raise TokenizerError(f"{where}: no 'model' object")
    mtype = model.get("type")
    if mtype != "BPE":
        raise TokenizerError(
            f"{where} model: {mtype} tokenizers are not supported; bumpconv carries BPE "
            "tokenizers (byte-level like Llama 3/Qwen/SmolLM2, or SentencePiece-style like "
            "Llama 2/Mistral)")
    if model.get("dropout") not in (None, 0, 0.0):
        raise TokenizerError(f"{where} model.dropout: {model['dropout']} (BPE dropout makes "
                             "encoding random; only deterministic BPE is supported)")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise TokenizerError(f"{where} model.{key}: {model[key]!r} is not supported")
    for key in ("truncation", "padding"):
        if doc.get(key) is not None:
            raise TokenizerError(f"{where} {key}: set ({doc[key]}); bumpconv encodes whole texts "
                                 "without truncation or padding")
    for section, types in SUPPORTED.items():
        for path, comp in _components(doc.get(section), section):
            ctype = comp.get("type")
            if ctype not in types:
                raise TokenizerError(f"{where} {path}: type {ctype!r} is not supported "
                                     f"(supported: {', '.join(sorted(types))})")
            _check_component(comp, path, where)
    tokenizer_kind(doc, where)


def tokenizer_kind(doc: dict[str, Any], where: str = "tokenizer.json") -> Kind:
    """Byte-level BPE (a ByteLevel pre-tokenizer) or SentencePiece-style BPE (spaces become
    ``▁`` by a Metaspace pre-tokenizer or a Replace normalizer)."""
    pre = [c.get("type") for _, c in _components(doc.get("pre_tokenizer"), "pre_tokenizer")]
    if "ByteLevel" in pre:
        return "byte_level_bpe"
    if "Metaspace" in pre or any(
            c.get("type") == "Replace" and c.get("content") == SPM_SPACE
            for _, c in _components(doc.get("normalizer"), "normalizer")):
        return "sentencepiece_bpe"
    raise TokenizerError(f"{where}: a BPE tokenizer with neither a ByteLevel pre-tokenizer nor "
                         "SentencePiece's ' ' -> '▁' replacement; its byte handling is unknown")


def _components(comp: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
    """Flatten ``Sequence`` components into ``(path, component)`` pairs, the Sequence first."""
    if comp is None:
        return []
    if not isinstance(comp, dict):
        raise TokenizerError(f"tokenizer.json {path}: not an object")
    out = [(path, comp)]
    if comp.get("type") == "Sequence":
        key = {"normalizer": "normalizers", "pre_tokenizer": "pretokenizers",
               "post_processor": "processors", "decoder": "decoders"}[path.split(".")[0]]
        for i, child in enumerate(comp.get(key) or []):
            out += _components(child, f"{path}.{key}[{i}]")
    return out


def _check_component(comp: dict[str, Any], path: str, where: str) -> None:
    ctype = comp["type"]
    if ctype == "Split":
        if comp.get("behavior") not in SPLIT_BEHAVIORS or comp.get("invert"):
            raise TokenizerError(f"{where} {path}: Split with behavior {comp.get('behavior')!r}"
                                 f" invert={comp.get('invert')} is not supported (only "
                                 f"{', '.join(SPLIT_BEHAVIORS)})")
    if ctype in ("Split", "Replace"):
        pattern = comp.get("pattern")
        if not (isinstance(pattern, dict) and len(pattern) == 1
                and set(pattern) <= {"String", "Regex"}):
            raise TokenizerError(f"{where} {path}.pattern: {pattern!r} is not a String or Regex")
    if ctype == "Metaspace" and len(comp.get("replacement", "")) != 1:
        raise TokenizerError(f"{where} {path}.replacement: {comp.get('replacement')!r} is not "
                             "one character")


def split_tokenizer_json(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int], list[Any]]:
    """``(doc without model.vocab and model.merges, vocab, merges)`` - the parts the record keeps
    and the parts the arrays keep."""
    rest = copy.deepcopy({k: v for k, v in doc.items() if k != "model"})
    model = doc["model"]
    rest["model"] = copy.deepcopy({k: v for k, v in model.items() if k not in ("vocab", "merges")})
    return rest, model.get("vocab") or {}, list(model.get("merges") or [])


def rebuild_tokenizer_json(arrays: VocabArrays, meta: TokenizerMeta) -> dict[str, Any]:
    """tokenizer.json as parsed from the checkpoint, put back together from the arrays and the
    record (key order aside, equal to the original document)."""
    doc = copy.deepcopy(meta.tokenizer_json)
    strings = arrays.strings
    doc["model"]["vocab"] = {strings[i]: i for a, b in meta.model_vocab_ids for i in range(a, b)}
    if meta.merges_form == "pairs":
        doc["model"]["merges"] = [[strings[l], strings[r]] for l, r, _ in arrays.merges]
    else:
        doc["model"]["merges"] = [f"{strings[l]} {strings[r]}" for l, r, _ in arrays.merges]
    return doc
