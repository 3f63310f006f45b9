"""The engine's three tokenizer arrays, as its v7 blob carries them right after ``token_emb``.

* ``vocab_offsets`` - i32[V], little-endian: the byte offset of token ``i``'s string in
  ``vocab_strings``. Strings are stored back to back in id order, so offset ``i + 1`` is
  offset ``i`` plus the length of string ``i`` plus its NUL.
* ``vocab_strings`` - every token's string as UTF-8 followed by one NUL byte.
* ``vocab_merges`` - i32[3 * M], little-endian: ``(left, right, merged)`` token ids per merge,
  in merge-rank order (row ``r`` is the merge of rank ``r``).

The engine's C tokenizer hashes the strings exactly as Hugging Face's ``tokenizer.json`` spells
its vocabulary: byte-level BPE tokens in GPT-2's byte-to-unicode alphabet (``"Ġthe"``),
SentencePiece tokens with ``"▁"`` and ``<0xNN>`` byte-fallback pieces, added tokens as their
content. It looks merges up by the id pair, so a merge is representable only when its two parts
and its result are all tokens. The engine keeps no scores or token types beside these arrays.

GPT-2's byte alphabet (:data:`BYTE_TO_UNICODE`) lives here because it is part of what the stored
strings mean: a byte-level token's bytes are its characters mapped back through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import VocabError

_I32 = np.dtype("<i4")
#: Bytes of one ``vocab_merges`` row: three little-endian i32.
MERGE_ROW_BYTES = 3 * _I32.itemsize


def _bytes_to_unicode() -> tuple[str, ...]:
    """GPT-2's table: printable Latin-1 bytes stand for themselves, the other 68 bytes (controls,
    space, DEL, the C1 range, NBSP, soft hyphen) take the code points 256, 257, ... in byte order,
    so that every byte is one visible, non-space character."""
    kept = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table: dict[int, str] = {b: chr(b) for b in kept}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return tuple(table[b] for b in range(256))


#: Byte -> the character that stands for it in a byte-level BPE token string.
BYTE_TO_UNICODE: tuple[str, ...] = _bytes_to_unicode()
#: The inverse of :data:`BYTE_TO_UNICODE`.
UNICODE_TO_BYTE: dict[str, int] = {c: b for b, c in enumerate(BYTE_TO_UNICODE)}


#: The tensor names of the three arrays, in payload order.
ARRAY_NAMES = ("vocab_offsets", "vocab_strings", "vocab_merges")


def padding_token(token_id: int) -> str:
    """The string stored for a row past the tokenizer's last id (the embedding has more rows than
    the tokenizer has tokens, as in Qwen2). Unique per id so the engine's string hash keeps every
    row distinct; no tokenizer produces it."""
    return f"<|bumpconv_unused_{token_id}|>"


@dataclass(frozen=True)
class VocabCounts:
    """The sizes of the tokenizer arrays that a profile's shapes use: ``VB`` (the bytes of
    vocab_strings, the engine's ``total_vocab_bytes``) and ``M`` (``num_merges``)."""

    total_vocab_bytes: int
    num_merges: int

    def dims(self) -> dict[str, int]:
        return {"VB": self.total_vocab_bytes, "M": self.num_merges}


@dataclass(frozen=True)
class VocabArrays:
    """Token strings in id order and merges as ``(left_id, right_id, merged_id)`` in rank order.

    Construction checks what the engine cannot represent (a NUL inside a string, a merge id
    outside the vocabulary); :meth:`from_bytes` also checks the byte layout.
    """

    strings: tuple[str, ...]
    merges: tuple[tuple[int, int, int], ...]

    def __post_init__(self) -> None:
        if not self.strings:
            raise VocabError("vocab_strings: the vocabulary is empty")
        if "\0" in "".join(self.strings):
            i, s = next((i, s) for i, s in enumerate(self.strings) if "\0" in s)
            raise VocabError(f"vocab_strings[{i}]: token {s!r} contains a NUL byte, which the "
                             "NUL-terminated array cannot hold")
        n = len(self.strings)
        if any(len(m) != 3 for m in self.merges) or self.merges and not (
                0 <= min(map(min, self.merges)) and max(map(max, self.merges)) < n):
            r, merge = next((r, m) for r, m in enumerate(self.merges)
                            if len(m) != 3 or not all(0 <= t < n for t in m))
            raise VocabError(f"vocab_merges[{r}]: {merge} is not three token ids below the "
                             f"vocabulary size {n}")

    @property
    def vocab_size(self) -> int:
        return len(self.strings)

    @property
    def num_merges(self) -> int:
        return len(self.merges)

    @property
    def total_vocab_bytes(self) -> int:
        """Size of ``vocab_strings`` in bytes (the engine's manifest key of that name)."""
        return sum(len(s.encode("utf-8")) + 1 for s in self.strings)

    @property
    def counts(self) -> VocabCounts:
        return VocabCounts(self.total_vocab_bytes, self.num_merges)

    def by_name(self) -> dict[str, bytes]:
        """The arrays by the names their tensors have in a blob."""
        return dict(zip(ARRAY_NAMES, self.to_bytes()))

    def to_bytes(self) -> tuple[bytes, bytes, bytes]:
        """``(vocab_offsets, vocab_strings, vocab_merges)`` exactly as the blob stores them."""
        encoded = [s.encode("utf-8") + b"\0" for s in self.strings]
        lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        if starts[-1] > np.iinfo(_I32).max:
            raise VocabError(f"vocab_offsets: strings need {int(lengths.sum())} bytes, past the "
                             "reach of an i32 offset")
        merges = np.asarray(self.merges, dtype=_I32).reshape(-1)
        return starts.astype(_I32).tobytes(), b"".join(encoded), merges.tobytes()

    @classmethod
    def from_bytes(cls, offsets: bytes, strings: bytes, merges: bytes) -> VocabArrays:
        """Read the three arrays back, refusing anything the writer would not have produced."""
        if len(offsets) % _I32.itemsize:
            raise VocabError(f"vocab_offsets: {len(offsets)} bytes is not a whole number of i32")
        if len(merges) % MERGE_ROW_BYTES:
            raise VocabError(f"vocab_merges: {len(merges)} bytes is not a whole number of "
                             f"(left, right, merged) i32 triples")
        starts = np.frombuffer(offsets, dtype=_I32).astype(np.int64)
        if starts.size == 0:
            raise VocabError("vocab_offsets: empty")
        if not strings.endswith(b"\0"):
            raise VocabError(f"vocab_strings: does not end with a NUL (last string "
                             f"unterminated, {len(strings)} bytes)")
        nuls = np.flatnonzero(np.frombuffer(strings, dtype=np.uint8) == 0)
        expected = np.concatenate(([0], nuls[:-1] + 1))
        if expected.size != starts.size or not np.array_equal(expected, starts):
            bad = _first_mismatch(starts, expected)
            raise VocabError(
                f"vocab_offsets[{bad}]: {_at(starts, bad)}, but vocab_strings puts string {bad} "
                f"at {_at(expected, bad)} ({starts.size} offsets, {expected.size} strings)")
        try:  # NUL never occurs inside a UTF-8 sequence, so the strings decode as one text
            texts = strings[:-1].decode("utf-8").split("\0")
        except UnicodeDecodeError as exc:
            i = int(np.searchsorted(nuls, exc.start))
            raise VocabError(f"vocab_strings[{i}]: not valid UTF-8 ({exc.reason} at byte "
                             f"{exc.start})") from None
        rows = np.frombuffer(merges, dtype=_I32).reshape(-1, 3)
        triples = tuple(map(tuple, rows.tolist()))
        return cls(strings=tuple(texts), merges=triples)


def _first_mismatch(a: np.ndarray, b: np.ndarray) -> int:
    n = min(a.size, b.size)
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if diff.size else n


def _at(arr: np.ndarray, i: int) -> str:
    return str(int(arr[i])) if i < arr.size else "none"
