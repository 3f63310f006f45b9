"""Where the engine's own C tokenizer will not give Hugging Face's ids for a blob's tokenizer.

Facts from the engine's v7 source (C-Kernel-Engine, commit 991d0874; ``build_ir_v7.py``,
``src/tokenizer/true_bpe.c``, ``tokenizer_spm.c``), checked by compiling its tokenizer and running
it over bumpconv's arrays on the test corpus:

* ``build_ir_v7`` picks the tokenizer from a top-level ``tokenizer_contract.tokenizer_type`` in
  ``weights_manifest.json``, else the template's ``flags.tokenizer``: ``sentencepiece`` for the
  llama, gemma3 and nanbeige templates (and for any model type without a template of its own,
  which falls back to llama), ``bpe`` for qwen2/qwen3/qwen35.
* Its SentencePiece tokenizer ranks pieces by ``vocab_scores``, which the HF path never writes:
  it matched HF on 42 of 1206 corpus texts for SmolLM2 and 4 for a Llama-2-style tokenizer,
  emitting the unk id (0) for most words.
* Its BPE tokenizer (``ck_true_bpe``) uses the arrays' merges, but maps bytes 0x7F-0xA0 and
  0xAD to other characters than GPT-2's table, splits words with a built-in ASCII-only pattern
  instead of the tokenizer's pre-tokenizer, matches only a fixed list of special tokens in text,
  adds BOS only when the manifest's ``special_tokens`` asks for it, and for SentencePiece-style
  vocabularies puts ``▁`` before a segment only when it does not start with a space.
"""

from __future__ import annotations

from typing import Any

from .registry import registry
from .tokenizer_meta import TokenizerMeta

#: The engine's v7 templates and the tokenizer their ``flags.tokenizer`` selects.
ENGINE_TEMPLATE_TOKENIZER = {"llama": "sentencepiece", "gemma3": "sentencepiece",
                             "nanbeige": "sentencepiece", "qwen2": "bpe", "qwen3": "bpe",
                             "qwen35": "bpe"}
#: Special tokens the engine's BPE init registers for matching in text (when in the vocabulary).
ENGINE_BPE_SPECIALS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>",
                       "<|begin_of_text|>", "<|end_of_text|>", "</s>", "<s>", "<bos>", "<eos>",
                       "<start_of_turn>", "<end_of_turn>")
_KIND_LABEL = {"byte_level_bpe": "byte-level BPE", "sentencepiece_bpe": "SentencePiece-style BPE"}
_SELECT_BPE = ('add "tokenizer_contract": {"tokenizer_type": "bpe"} at the top level of '
               "weights_manifest.json (build_ir_v7 reads it before the template's flag)")


def engine_template(model_type: str) -> str:
    """The template the engine's HF converter uses for a config.json ``model_type``: its
    family's (the architecture registry's ``engine_template``), else llama, the engine's
    fallback for a model type without a template of its own."""
    family = registry().family(model_type)
    return family.engine_template if family is not None else "llama"


def engine_tokenizer_warnings(meta: TokenizerMeta, template: str,
                              tokenizer_type: str | None = None) -> list[str]:
    """One line per way the engine's tokenizer would encode text differently from HF, with what
    the engine user must set or do. ``template`` is the engine template the manifest names;
    ``tokenizer_type`` the manifest's own ``tokenizer_contract.tokenizer_type``, if it has one."""
    path = tokenizer_type or ENGINE_TEMPLATE_TOKENIZER.get(template, "sentencepiece")
    out: list[str] = []
    if path != "bpe":
        out.append(
            f"engine tokenizer: the '{template}' template selects the engine's SentencePiece "
            f"tokenizer, which needs vocab_scores the blob does not have; on this "
            f"{_KIND_LABEL[meta.kind]} vocabulary it emits the unk id (0) for most words. "
            f"To use its BPE tokenizer, {_SELECT_BPE}")
    if meta.kind == "byte_level_bpe":
        out.append(
            "engine tokenizer: its byte-to-character table differs from GPT-2's for bytes "
            "0x7F-0xA0 and 0xAD, so text containing them (UTF-8 of most non-Latin scripts, "
            "emoji, many symbols) gets wrong ids; tokenize such text with HF or bumpconv and "
            "pass ids")
        out.append(
            f"engine tokenizer: it splits words with a built-in ASCII-only pattern, not this "
            f"tokenizer's pre-tokenizer ({_describe(meta.tokenizer_json.get('pre_tokenizer'))});"
            " whitespace runs, tabs, CR LF and non-ASCII words can split differently")
    else:
        out.append(
            f"engine tokenizer: it puts '▁' before a text segment only when the segment does "
            f"not start with a space, while this tokenizer {_spm_prefix(meta)}; texts that "
            "start with a space or contain special tokens can get different ids")
    unmatched = [t["content"] for t in meta.added_tokens if t["content"] not in ENGINE_BPE_SPECIALS]
    if unmatched:
        shown = ", ".join(unmatched[:5]) + (f" and {len(unmatched) - 5} more"
                                            if len(unmatched) > 5 else "")
        out.append(f"engine tokenizer: it matches only a fixed list of special tokens in text; "
                   f"this tokenizer's other added tokens ({shown}) are encoded as plain text")
    added = _post_processor_ids(meta.tokenizer_json.get("post_processor"))
    if added:
        out.append(
            f"engine tokenizer: HF adds token id(s) {added} when encoding (the post-processor); "
            f'the engine adds BOS only when weights_manifest.json has "special_tokens": '
            f'{{"add_bos_token": true, "bos_token_id": {added[0]}}} (its HF converter writes '
            "none; that block also sets the unk id, to -1 unless unk_token_id is given), else "
            "prepend it to the engine's ids")
    return out


def _describe(comp: dict[str, Any] | None) -> str:
    if comp is None:
        return "none"
    if comp["type"] == "Sequence":
        return " + ".join(_describe(c) for c in comp["pretokenizers"])
    if comp["type"] == "Split":
        return "Split(regex)"
    if comp["type"] == "ByteLevel":
        return "ByteLevel" + (" with GPT-2's regex" if comp.get("use_regex", True) else "")
    return comp["type"]


def _spm_prefix(meta: TokenizerMeta) -> str:
    pre = meta.tokenizer_json.get("pre_tokenizer") or {}
    if pre.get("type") == "Metaspace":
        return f"uses Metaspace prepend_scheme {pre.get('prepend_scheme', 'always')!r}"
    return "prepends '▁' to every segment (Prepend normalizer), even one starting with a space"


def _post_processor_ids(comp: dict[str, Any] | None) -> list[int]:
    """Ids a single-sequence encode gains from the post-processor (BOS/EOS)."""
    if comp is None:
        return []
    if comp["type"] == "Sequence":
        return [i for c in comp["processors"] for i in _post_processor_ids(c)]
    if comp["type"] != "TemplateProcessing":
        return []
    specials = comp.get("special_tokens") or {}
    return [i for item in comp["single"] if "SpecialToken" in item
            for i in specials[item["SpecialToken"]["id"]]["ids"]]

