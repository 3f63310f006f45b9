"""Encode and decode text with nothing but what a blob carries: the engine's arrays (token
strings and merges) and the tokenizer record
(:class:`~bumpconv.format.tokenizer_meta.TokenizerMeta`).

It follows Hugging Face ``tokenizers`` step by step, so the ids are the ones transformers would
feed the model (the tests hold it to that on SmolLM2 and the test tokenizers):

1. added tokens are split out of the raw text (leftmost-longest, with their ``lstrip``,
   ``rstrip`` and ``single_word`` flags), then the normalizer runs on the pieces between them and
   tokens flagged ``normalized`` are split out of its output;
2. the pre-tokenizer splits the rest into words (regex splits, GPT-2's byte-to-character
   mapping, SentencePiece's ``▁``);
3. each word goes through BPE: characters to ids (``<0xNN>`` pieces or the unk token for
   characters the vocabulary lacks), then merges by rank, lowest first and leftmost on ties,
   exactly as ``tokenizers``' priority queue applies them;
4. with ``add_special_tokens`` the post-processor's template adds BOS/EOS.

Decoding runs the decoder chain (byte-level, or SentencePiece's ``▁`` -> space, byte fallback,
fuse, strip). Regexes are run with the ``regex`` package, which knows ``\\p{L}``/``\\p{N}`` as
the Oniguruma engine inside ``tokenizers`` does.
"""

from __future__ import annotations

import heapq
import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

import regex

from ..format.errors import TokenizerError
from ..format.tokenizer_meta import TokenizerMeta
from ..format.vocab import BYTE_TO_UNICODE, UNICODE_TO_BYTE, VocabArrays

#: The regex of a ByteLevel pre-tokenizer with ``use_regex`` (GPT-2's, as tokenizers spells it).
GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
#: Unicode's White_Space property: what ``lstrip``/``rstrip`` of an added token absorb.
_WHITE_SPACE = frozenset(map(chr, [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680,
                                   *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F,
                                   0x3000]))
#: A word character as Rust's regex ``\w`` defines it (single_word added tokens).
_WORD_CHAR = regex.compile(r"[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]")
#: Bytes (as Latin-1 characters) -> GPT-2's byte characters, for str.translate.
_BYTE_LEVEL = {b: c for b, c in enumerate(BYTE_TO_UNICODE)}
#: Words longer than this are not cached (tokenizers' limit too): long unique runs would only
#: fill the cache.
_CACHE_WORD_MAX = 256
_CACHE_SIZE = 100_000

#: A piece of text and whether it starts at offset 0 of the input (Metaspace "first").
Piece = tuple[str, bool]
Normalizer = Callable[[str], str]
PreTokenizer = Callable[[list[Piece]], list[Piece]]
PostProcessor = Callable[[list[int]], list[int]]
Decoder = Callable[[list[str]], list[str]]


class BpeTokenizer:
    """Hugging Face's BPE tokenization over the engine's arrays and the tokenizer record."""

    def __init__(self, arrays: VocabArrays, meta: TokenizerMeta) -> None:
        doc = meta.tokenizer_json
        strings = arrays.strings
        self._strings = strings
        self._vocab = {strings[i]: i for a, b in meta.model_vocab_ids for i in range(a, b)}
        self._merges = {(l, r): (rank, m) for rank, (l, r, m) in enumerate(arrays.merges)}
        model = doc["model"]
        self._ignore_merges = bool(model.get("ignore_merges"))
        self._fuse_unk = bool(model.get("fuse_unk"))
        self._unk_id = self._unk(model.get("unk_token"))
        self._byte_ids: list[int | None] = (
            [self._vocab.get(f"<0x{b:02X}>") for b in range(256)] if model.get("byte_fallback")
            else [None] * 256)
        added = meta.added_tokens
        for tok in added:
            i = tok["id"]
            if not 0 <= i < len(strings) or strings[i] != tok["content"]:
                raise TokenizerError(f"added token {tok['content']!r} (id {i}) does not match "
                                     "vocab_strings")
        self._known = set(self._vocab.values()) | {t["id"] for t in added}
        self._normalize = _build(doc.get("normalizer"), _NORMALIZERS, "normalizer", _identity)
        # tokenizers decodes a normalized added token as its normalized form, and skips a
        # special token by that string (since tokenizers 0.23: AddedVocabulary::simple_id_to_token).
        self._decode_as = {t["id"]: self._normalize(t["content"]) for t in added
                           if t["normalized"]}
        self._special = {t["content"] for t in added if t.get("special")}
        self._raw_added = _AddedMatcher([(t["content"], t) for t in added if not t["normalized"]])
        self._norm_added = _AddedMatcher([(self._normalize(t["content"]), t)
                                          for t in added if t["normalized"]])
        self._pre_tokenize = _build(doc.get("pre_tokenizer"), _PRE_TOKENIZERS, "pre_tokenizer",
                                    _identity)
        self._post_process = _build(doc.get("post_processor"), _POST_PROCESSORS,
                                    "post_processor", _identity)
        self._decoder = _build(doc.get("decoder"), _DECODERS, "decoder", None)
        self._cache: dict[str, list[int]] = {}

    def _unk(self, unk: str | None) -> int | None:
        if unk is None:
            return None
        if unk not in self._vocab:
            raise TokenizerError(f"tokenizer.json model.unk_token: {unk!r} is not in the "
                                 "model vocabulary")
        return self._vocab[unk]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``; ``add_special_tokens`` applies the post-processor (BOS/EOS),
        as ``tokenizers.Tokenizer.encode`` does by default."""
        ids: list[int] = []
        for raw_id, a, b in self._raw_added.split(text):
            if raw_id is not None:
                ids.append(raw_id)
                continue
            normalized = self._normalize(text[a:b])
            for norm_id, c, d in self._norm_added.split(normalized):
                if norm_id is not None:
                    ids.append(norm_id)
                elif c < d:
                    for word, _ in self._pre_tokenize([(normalized[c:d], a == 0 and c == 0)]):
                        ids += self._word(word)
        return self._post_process(ids) if add_special_tokens else ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """The text of ``ids``. Ids without a token (padding rows) are dropped, as tokenizers
        drops ids it does not know."""
        tokens = [self._decode_as.get(i, self._strings[i]) for i in ids if i in self._known]
        if skip_special_tokens:
            tokens = [t for t in tokens if t not in self._special]
        if self._decoder is None:
            return " ".join(tokens)
        return "".join(self._decoder(tokens))

    def _word(self, word: str) -> list[int]:
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        if self._ignore_merges and word in self._vocab:
            ids = [self._vocab[word]]
        else:
            ids = self._merge(self._symbols(word))
        if len(word) < _CACHE_WORD_MAX:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[word] = ids
        return ids

    def _symbols(self, word: str) -> list[int]:
        """One id per character; a character outside the vocabulary becomes its ``<0xNN>``
        pieces (byte fallback, when all exist), else the unk token (runs fused with
        ``fuse_unk``), else nothing - the order tokenizers tries them in."""
        out: list[int] = []
        unk_run = False
        for ch in word:
            i = self._vocab.get(ch)
            if i is not None:
                out.append(i)
                unk_run = False
                continue
            pieces = [self._byte_ids[b] for b in ch.encode("utf-8")]
            if None not in pieces:
                out += pieces  # type: ignore[arg-type]
                unk_run = False
            elif self._unk_id is not None:
                if not (unk_run and self._fuse_unk):
                    out.append(self._unk_id)
                unk_run = True
        return out

    def _merge(self, syms: list[int]) -> list[int]:
        """Apply merges by (rank, position), re-checking each queued pair when popped: the
        order and the staleness test of tokenizers' ``Word::merge_all``."""
        n = len(syms)
        merges = self._merges
        nxt = [*range(1, n), -1]
        prv = [*range(-1, n - 1)]
        alive = [True] * n
        heap = [(m[0], i, m[1]) for i in range(n - 1)
                if (m := merges.get((syms[i], syms[i + 1]))) is not None]
        heapq.heapify(heap)
        while heap:
            _, pos, new_id = heapq.heappop(heap)
            j = nxt[pos]
            if not alive[pos] or j < 0:
                continue
            m = merges.get((syms[pos], syms[j]))
            if m is None or m[1] != new_id:
                continue
            syms[pos] = new_id
            alive[j] = False
            k = nxt[j]
            nxt[pos] = k
            if k >= 0:
                prv[k] = pos
                if (m := merges.get((new_id, syms[k]))) is not None:
                    heapq.heappush(heap, (m[0], pos, m[1]))
            p = prv[pos]
            if p >= 0 and (m := merges.get((syms[p], new_id))) is not None:
                heapq.heappush(heap, (m[0], p, m[1]))
        return [s for s, a in zip(syms, alive) if a]


class _AddedMatcher:
    """tokenizers' ``AddedVocabulary::find_matches``: leftmost-longest matches of the added
    tokens, each widened over whitespace (lstrip/rstrip) or dropped (single_word)."""

    def __init__(self, patterns: list[tuple[str, dict[str, Any]]]) -> None:
        patterns = [(p, t) for p, t in patterns if p]
        self._by_pattern = dict(patterns)
        # An alternation tries alternatives in order, so longest-first is leftmost-longest.
        alts = sorted(self._by_pattern, key=len, reverse=True)
        self._re = re.compile("|".join(map(re.escape, alts))) if alts else None

    def split(self, text: str) -> list[tuple[int | None, int, int]]:
        """``(token id or None, start, stop)`` pieces covering ``text``."""
        if self._re is None or not text:
            return [(None, 0, len(text))]
        out: list[tuple[int | None, int, int]] = []
        done = 0
        for m in self._re.finditer(text):
            start, stop = m.span()
            tok = self._by_pattern[m.group()]
            if tok.get("single_word") and (
                    (start > 0 and _WORD_CHAR.match(text[start - 1]))
                    or (stop < len(text) and _WORD_CHAR.match(text[stop]))):
                continue
            if tok.get("lstrip"):
                s = start
                while s > 0 and text[s - 1] in _WHITE_SPACE:
                    s -= 1
                start = max(s, done)
            if tok.get("rstrip"):
                while stop < len(text) and text[stop] in _WHITE_SPACE:
                    stop += 1
            if done < start:
                out.append((None, done, start))
            out.append((tok["id"], start, stop))
            done = stop
        if done != len(text):
            out.append((None, done, len(text)))
        return out


def _identity(x: Any) -> Any:
    return x


def _build(comp: dict[str, Any] | None, table: dict[str, Callable[[dict[str, Any]], Any]],
           section: str, absent: Any) -> Any:
    if comp is None:
        return absent
    make = table.get(comp.get("type"))  # type: ignore[arg-type]
    if make is None:
        raise TokenizerError(f"tokenizer.json {section}: type {comp.get('type')!r} is not "
                             f"supported (supported: {', '.join(sorted(table))})")
    return make(comp)


def _chain(funcs: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def run(x: Any) -> Any:
        for f in funcs:
            x = f(x)
        return x
    return run


def _pattern(comp: dict[str, Any]) -> regex.Pattern[str]:
    p = comp["pattern"]
    return regex.compile(p["Regex"]) if "Regex" in p else regex.compile(regex.escape(p["String"]))


def _isolate(pattern: regex.Pattern[str], text: str) -> list[str]:
    """Matches and the text between them, in order, empty pieces dropped (``Isolated``)."""
    out: list[str] = []
    done = 0
    for m in pattern.finditer(text):
        a, b = m.span()
        if done < a:
            out.append(text[done:a])
        if a < b:
            out.append(text[a:b])
        done = b
    if done < len(text):
        out.append(text[done:])
    return out


def _split_pieces(pieces: list[Piece], split: Callable[[str], list[str]]) -> list[Piece]:
    return [(part, first and k == 0) for text, first in pieces
            for k, part in enumerate(split(text))]


# --- normalizers: str -> str ------------------------------------------------------------------

def _replace(comp: dict[str, Any]) -> Callable[[str], str]:
    p, content = comp["pattern"], comp["content"]
    if "String" in p:
        return lambda s: s.replace(p["String"], content)
    rx = regex.compile(p["Regex"])
    return lambda s: rx.sub(lambda _: content, s)


_NORMALIZERS: dict[str, Callable[[dict[str, Any]], Normalizer]] = {
    "Sequence": lambda c: _chain([_build(n, _NORMALIZERS, "normalizer", None)
                                  for n in c["normalizers"]]),
    "Prepend": lambda c: (lambda s, p=c["prepend"]: p + s if s else s),
    "Replace": _replace,
    **{form: (lambda c, f=form: (lambda s: unicodedata.normalize(f, s)))
       for form in ("NFC", "NFD", "NFKC", "NFKD")},
}


# --- pre-tokenizers: pieces -> pieces ------------------------------------------------------------

def _byte_level(comp: dict[str, Any]) -> PreTokenizer:
    prefix = bool(comp.get("add_prefix_space"))
    rx = regex.compile(GPT2_SPLIT) if comp.get("use_regex", True) else None

    def run(pieces: list[Piece]) -> list[Piece]:
        out = []
        for text, first in pieces:
            if prefix and not text.startswith(" "):
                text = " " + text
            parts = _isolate(rx, text) if rx is not None else [text]
            out += [(part.encode("utf-8").decode("latin-1").translate(_BYTE_LEVEL),
                     first and k == 0) for k, part in enumerate(parts)]
        return out
    return run


def _metaspace_scheme(comp: dict[str, Any]) -> str:
    """``prepend_scheme``, honouring the older ``add_prefix_space: false`` spelling."""
    return "never" if comp.get("add_prefix_space") is False else comp.get("prepend_scheme",
                                                                           "always")


def _metaspace(comp: dict[str, Any]) -> PreTokenizer:
    rep = comp["replacement"]
    scheme = _metaspace_scheme(comp)
    splitter = regex.compile(f"(?={regex.escape(rep)})") if comp.get("split", True) else None

    def run(pieces: list[Piece]) -> list[Piece]:
        out = []
        for text, first in pieces:
            text = text.replace(" ", rep)
            if not text.startswith(rep) and (scheme == "always" or (scheme == "first" and first)):
                text = rep + text
            parts = [p for p in splitter.split(text) if p] if splitter is not None else [text]
            out += [(part, first and k == 0) for k, part in enumerate(parts)]
        return out
    return run


def _regex_split(comp: dict[str, Any]) -> PreTokenizer:
    rx = _pattern(comp)
    return lambda pieces: _split_pieces(pieces, lambda t: _isolate(rx, t))


def _digits(comp: dict[str, Any]) -> PreTokenizer:
    rx = regex.compile(r"\p{N}" if comp.get("individual_digits") else r"\p{N}+")
    return lambda pieces: _split_pieces(pieces, lambda t: _isolate(rx, t))


_PRE_TOKENIZERS: dict[str, Callable[[dict[str, Any]], PreTokenizer]] = {
    "Sequence": lambda c: _chain([_build(p, _PRE_TOKENIZERS, "pre_tokenizer", None)
                                  for p in c["pretokenizers"]]),
    "ByteLevel": _byte_level,
    "Split": _regex_split,
    "Digits": _digits,
    "Metaspace": _metaspace,
}


# --- post-processors: ids -> ids (single sequence) -----------------------------------------------

def _template(comp: dict[str, Any]) -> PostProcessor:
    specials = comp.get("special_tokens") or {}

    def run(ids: list[int]) -> list[int]:
        out: list[int] = []
        for item in comp["single"]:
            if "Sequence" in item:
                out += ids
            else:
                out += specials[item["SpecialToken"]["id"]]["ids"]
        return out
    return run


_POST_PROCESSORS: dict[str, Callable[[dict[str, Any]], PostProcessor]] = {
    "Sequence": lambda c: _chain([_build(p, _POST_PROCESSORS, "post_processor", None)
                                  for p in c["processors"]]),
    "TemplateProcessing": _template,
    "ByteLevel": lambda c: _identity,  # it only trims offsets
}


# --- decoders: tokens -> tokens; the result is joined ------------------------------------------

def _byte_level_decode(tokens: list[str]) -> list[str]:
    data = b"".join(bytes(UNICODE_TO_BYTE[c] for c in t) if all(c in UNICODE_TO_BYTE for c in t)
                    else t.encode("utf-8") for t in tokens)
    return [data.decode("utf-8", errors="replace")]


def _metaspace_decode(comp: dict[str, Any]) -> Decoder:
    rep = comp["replacement"]
    strip_first = _metaspace_scheme(comp) != "never"
    return lambda tokens: [t.replace(rep, "" if i == 0 and strip_first else " ")
                           for i, t in enumerate(tokens)]


def _byte_fallback_decode(tokens: list[str]) -> list[str]:
    """Runs of ``<0xNN>`` become their UTF-8 text, or one U+FFFD per byte if invalid."""
    out: list[str] = []
    run = bytearray()
    for t in [*tokens, None]:
        if t is not None and len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
            try:
                run.append(int(t[3:5], 16))
                continue
            except ValueError:
                pass
        if run:
            try:
                out.append(run.decode("utf-8"))
            except UnicodeDecodeError:
                out += ["\ufffd"] * len(run)
            run.clear()
        if t is not None:
            out.append(t)
    return out


def _strip_decode(comp: dict[str, Any]) -> Decoder:
    ch, start, stop = comp["content"], comp["start"], comp["stop"]

    def strip(t: str) -> str:
        a = 0
        while a < min(start, len(t)) and t[a] == ch:
            a += 1
        b = len(t)
        while len(t) - b < stop and b > 0 and t[b - 1] == ch:
            b -= 1
        return t[a:max(a, b)]
    return lambda tokens: [strip(t) for t in tokens]


def _replace_decode(comp: dict[str, Any]) -> Decoder:
    replace = _replace(comp)
    return lambda tokens: [replace(t) for t in tokens]


_DECODERS: dict[str, Callable[[dict[str, Any]], Decoder]] = {
    "Sequence": lambda c: _chain([_build(d, _DECODERS, "decoder", None) for d in c["decoders"]]),
    "ByteLevel": lambda c: _byte_level_decode,
    "Metaspace": _metaspace_decode,
    "Replace": _replace_decode,
    "ByteFallback": lambda c: _byte_fallback_decode,
    "Fuse": lambda c: (lambda tokens: ["".join(tokens)]),
    "Strip": _strip_decode,
}

#: What this module implements, per tokenizer.json section (the tests hold it equal to
#: :data:`bumpconv.format.tokenizer_meta.SUPPORTED`).
IMPLEMENTED: dict[str, frozenset[str]] = {
    "normalizer": frozenset(_NORMALIZERS), "pre_tokenizer": frozenset(_PRE_TOKENIZERS),
    "post_processor": frozenset(_POST_PROCESSORS), "decoder": frozenset(_DECODERS),
}
