"""The tokenizer a blob carries (engine-v7): its arrays read back from the blob and its record
from the metadata, as a :class:`~bumpconv.run.bpe.BpeTokenizer` (no tokenizer.json needed)."""

from __future__ import annotations

from ..blob.reader import BumpFile
from ..format.errors import BumpError, TokenizerError
from ..format.tokenizer_meta import TokenizerMeta
from ..format.vocab import ARRAY_NAMES, VocabArrays
from .bpe import BpeTokenizer


def blob_tokenizer(bf: BumpFile) -> tuple[BpeTokenizer, TokenizerMeta] | None:
    """The tokenizer a blob carries (its arrays and record), or None."""
    section = bf.metadata.bumpconv.tokenizer if bf.metadata is not None else None
    if section is None:
        return None
    try:
        arrays = VocabArrays.from_bytes(*(bf.tensor_bytes(n) for n in ARRAY_NAMES))
    except BumpError as exc:
        raise TokenizerError(f"{bf.path}: its tokenizer arrays are unusable ({exc})") from None
    return BpeTokenizer(arrays, section.record), section.record
