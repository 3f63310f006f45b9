"""A checkpoint's tokenizer as the engine's arrays plus the record of what they cannot hold.

The arrays (:class:`~bumpconv.format.vocab.VocabArrays`) get one string per embedding row, in
the spelling the engine's C tokenizer hashes: tokenizer.json's own (``"Ġthe"``, ``"▁the"``,
``"<0x0A>"``, added tokens as their content). Rows past the tokenizer's last id (Qwen2's padded
embeddings) get :func:`~bumpconv.format.vocab.padding_token`. Merges become id triples in rank
order. Anything that cannot be carried exactly is an error naming it - the engine's own
converter skips unrepresentable merges and fills missing ids with the unk token, both of which
change tokenization silently.

Everything else - the pipeline around the BPE model, added-token flags, BOS/EOS ids, the chat
template - goes into :class:`~bumpconv.format.tokenizer_meta.TokenizerMeta`, checked to rebuild
tokenizer.json exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..files.inputs import read_regular
from ..files.jsonfile import load_json
from ..format.errors import TokenizerError, VocabError
from ..format.tokenizer_meta import (TokenizerMeta, check_supported, rebuild_tokenizer_json,
                                     split_tokenizer_json)
from ..format.vocab import VocabArrays, padding_token

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
GENERATION_CONFIG = "generation_config.json"
MODEL_CONFIG = "config.json"
CHAT_TEMPLATE = "chat_template.jinja"

#: How many offending names an error lists before summarising.
_SHOW = 5


def tokenizer_files(checkpoint: Path) -> list[Path]:
    """The files of ``checkpoint`` the tokenizer section is built from (those that exist;
    config.json is the model's and counted there)."""
    names = (TOKENIZER_JSON, TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP, GENERATION_CONFIG,
             CHAT_TEMPLATE)
    return [checkpoint / n for n in names if (checkpoint / n).exists()]


def build_tokenizer_section(checkpoint: Path,
                            vocab_size: int | None = None) -> tuple[VocabArrays, TokenizerMeta]:
    """The engine's arrays and the tokenizer record for ``checkpoint``.

    ``vocab_size`` is the embedding's row count (default: config.json's ``vocab_size``); the
    arrays get exactly that many strings.
    """
    doc = _read_json(checkpoint / TOKENIZER_JSON, required=True)
    model_cfg = _read_json(checkpoint / MODEL_CONFIG, required=vocab_size is None) or {}
    if vocab_size is None:
        vocab_size = _vocab_size(model_cfg)
    template = checkpoint / CHAT_TEMPLATE
    return section_from_documents(
        doc, vocab_size, model_cfg, _read_json(checkpoint / TOKENIZER_CONFIG, required=False),
        _read_json(checkpoint / SPECIAL_TOKENS_MAP, required=False),
        _read_json(checkpoint / GENERATION_CONFIG, required=False) or {}, _read_text(template),
        str(checkpoint / TOKENIZER_JSON))


def section_from_documents(doc: dict[str, Any], vocab_size: int, model_cfg: dict[str, Any],
                           tok_cfg: dict[str, Any] | None, special_map: dict[str, Any] | None,
                           gen_cfg: dict[str, Any], template: str | None,
                           where: str) -> tuple[VocabArrays, TokenizerMeta]:
    """The arrays and record from a tokenizer's documents, however they were obtained (a
    checkpoint's files, or built from a GGUF's keys: :mod:`.gguf_tokenizer`)."""
    check_supported(doc, TOKENIZER_JSON)
    rest, vocab, merges = split_tokenizer_json(doc)

    by_id = _strings_by_id(vocab, rest.get("added_tokens") or [], vocab_size)
    index = {s: i for i, s in enumerate(by_id)}
    arrays = VocabArrays(strings=tuple(by_id), merges=_merge_triples(merges, vocab))

    meta = TokenizerMeta(
        tokenizer_json=rest,
        model_vocab_ids=_ranges(sorted(vocab.values())),
        merges_form=_merges_form(merges),
        tokenizer_config=tok_cfg,
        special_tokens_map=special_map,
        chat_template_file=template,
        bos_token_id=_first_id("bos", gen_cfg, model_cfg, tok_cfg, index),
        eos_token_ids=_ids_from("eos", gen_cfg, model_cfg, tok_cfg, index),
        pad_token_id=_first_id("pad", gen_cfg, model_cfg, tok_cfg, index))
    for name, ids in (("bos_token_id", [meta.bos_token_id]), ("eos_token_ids", meta.eos_token_ids),
                      ("pad_token_id", [meta.pad_token_id])):
        for i in ids:
            if i is not None and not 0 <= i < len(by_id):
                raise TokenizerError(f"{name}: {i} is outside the vocabulary (size {len(by_id)})")
    if rebuild_tokenizer_json(arrays, meta) != doc:
        raise VocabError(f"{where}: the arrays and record do not rebuild it "
                         "exactly (a bumpconv bug)")
    return arrays, meta


def _read_json(path: Path, required: bool) -> Any:
    """A tokenizer-side JSON file through the one JSON loader; None for an absent optional one."""
    if not path.exists() and not required:
        return None
    return load_json(path, TokenizerError, path.name, limit=256 << 20)


def _read_text(path: Path) -> str | None:
    """A UTF-8 text file (the chat template), or None when absent."""
    if not path.exists():
        return None
    data = read_regular(path, TokenizerError, path.name)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TokenizerError(f"{path}: not UTF-8 (at byte {exc.start})") from None


def _vocab_size(cfg: dict[str, Any]) -> int:
    v = cfg.get("vocab_size")
    if not isinstance(v, int) or v <= 0:
        raise TokenizerError(f"{MODEL_CONFIG} vocab_size: {v!r} is not a positive integer")
    return v


def _strings_by_id(vocab: dict[str, Any], added: list[dict[str, Any]], rows: int) -> list[str]:
    """One string per row: model vocabulary and added tokens at their ids, padding after."""
    table: dict[int, str] = {}
    for token, i in vocab.items():
        if not isinstance(i, int) or i < 0:
            raise TokenizerError(f"{TOKENIZER_JSON} model.vocab[{token!r}]: id {i!r} is not a "
                                 "non-negative integer")
        if i in table:
            raise TokenizerError(f"{TOKENIZER_JSON} model.vocab: id {i} is both {table[i]!r} "
                                 f"and {token!r}")
        table[i] = token
    for n, tok in enumerate(added):
        i, content = tok.get("id"), tok.get("content")
        where = f"{TOKENIZER_JSON} added_tokens[{n}]"
        if not isinstance(i, int) or i < 0 or not isinstance(content, str):
            raise TokenizerError(f"{where}: needs an integer id and a string content")
        if content in vocab and vocab[content] != i:
            raise TokenizerError(f"{where}: {content!r} has id {i}, but model.vocab gives it "
                                 f"id {vocab[content]}")
        if table.get(i, content) != content:
            raise TokenizerError(f"{where}: id {i} is {content!r} here but {table[i]!r} in "
                                 "model.vocab")
        table[i] = content
    size = max(table) + 1
    if size > rows:
        beyond = sorted(i for i in table if i >= rows)
        raise TokenizerError(
            f"{TOKENIZER_JSON}: {len(beyond)} token(s) have ids past the embedding's "
            f"{rows} rows: {_names((f'{table[i]!r} ({i})' for i in beyond), len(beyond))}")
    holes = [i for i in range(size) if i not in table]
    if holes:
        raise TokenizerError(f"{TOKENIZER_JSON}: no token has id(s) "
                             f"{_names(map(str, holes), len(holes))} (the vocabulary has holes)")
    strings = [table[i] for i in range(size)] + [padding_token(i) for i in range(size, rows)]
    first: dict[str, int] = {}
    for i, s in enumerate(strings):
        j = first.setdefault(s, i)
        if j != i:  # the engine hashes strings to ids: one of the two would be unreachable
            raise TokenizerError(f"{TOKENIZER_JSON}: ids {j} and {i} are both {s!r}"
                                 + (" (a padding-row string)" if i >= size else ""))
    return strings


def _merge_triples(merges: list[Any], vocab: dict[str, int]) -> tuple[tuple[int, int, int], ...]:
    """Merges as (left, right, merged) model-vocabulary ids, rank order kept; a merge naming a
    string the model vocabulary lacks, or repeating an earlier pair, is an error. (The loop
    runs once per merge, ~50k for a byte-level BPE vocabulary: messages are built only for a
    bad entry.)"""
    triples = []
    seen: dict[tuple[int, int], int] = {}
    get = vocab.get
    for rank, entry in enumerate(merges):
        parts = entry.split(" ") if isinstance(entry, str) else entry
        if not isinstance(parts, list) or len(parts) != 2 or not isinstance(parts[0], str) \
                or not isinstance(parts[1], str):
            raise TokenizerError(f"{TOKENIZER_JSON} model.merges[{rank}]: {entry!r} is not two "
                                 "token strings ('left right' or [left, right])")
        left, right = parts
        triple = (get(left), get(right), get(left + right))
        if None in triple:
            missing = [s for s, i in zip((left, right, left + right), triple) if i is None]
            raise TokenizerError(f"{TOKENIZER_JSON} model.merges[{rank}]: {left!r} + {right!r} "
                                 f"cannot be represented: {', '.join(map(repr, missing))} not in "
                                 "model.vocab")
        pair = triple[:2]
        first = seen.setdefault(pair, rank)
        if first != rank:
            raise TokenizerError(f"{TOKENIZER_JSON} model.merges[{rank}]: {left!r} + {right!r} "
                                 f"repeats model.merges[{first}] (which rank applies is ambiguous)")
        triples.append(triple)
    return tuple(triples)


def _merges_form(merges: list[Any]) -> str:
    if any(isinstance(m, str) for m in merges) and any(isinstance(m, list) for m in merges):
        raise TokenizerError(f"{TOKENIZER_JSON} model.merges: mixes 'a b' strings and [a, b] pairs")
    return "strings" if merges and isinstance(merges[0], str) else "pairs"


def _ranges(ids: list[int]) -> list[tuple[int, int]]:
    """Sorted ids as ``[start, stop)`` runs."""
    out: list[tuple[int, int]] = []
    for i in ids:
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def _ids_from(key: str, gen: dict[str, Any], model: dict[str, Any], tok: dict[str, Any] | None,
              index: dict[str, int]) -> list[int]:
    """Ids for ``{key}_token_id`` in generation_config.json and config.json (an int or a list),
    then tokenizer_config.json's ``{key}_token`` (a string or {content})."""
    out: list[int] = []
    for name, cfg in ((GENERATION_CONFIG, gen), (MODEL_CONFIG, model)):
        value = cfg.get(f"{key}_token_id")
        for v in (value if isinstance(value, list) else [value]):
            if v is None:
                continue
            if not isinstance(v, int):
                raise TokenizerError(f"{name} {key}_token_id: {v!r} is not an integer")
            out.append(v)
    token = (tok or {}).get(f"{key}_token")
    if isinstance(token, dict):
        token = token.get("content")
    if isinstance(token, str):
        if token not in index:
            raise TokenizerError(f"{TOKENIZER_CONFIG} {key}_token: {token!r} is not a token")
        out.append(index[token])
    return list(dict.fromkeys(out))


def _first_id(key: str, gen: dict[str, Any], model: dict[str, Any], tok: dict[str, Any] | None,
              index: dict[str, int]) -> int | None:
    ids = _ids_from(key, gen, model, tok, index)
    return ids[0] if ids else None


def _names(names: Any, total: int) -> str:
    shown = [n for _, n in zip(range(_SHOW), names)]
    return ", ".join(shown) + (f" and {total - len(shown)} more" if total > len(shown) else "")
