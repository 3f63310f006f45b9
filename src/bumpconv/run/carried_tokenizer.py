"""The tokenizer a blob carries (engine-v7): its arrays read back from the blob and its record
from the metadata rebuild the source's tokenizer.json exactly
(:func:`~bumpconv.format.tokenizer_meta.rebuild_tokenizer_json`, which ``verify`` checks), and
``tokenizers`` runs that document: the ids are transformers' by construction."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..blob.reader import BumpFile
from ..format.errors import BumpError, TokenizerError
from ..format.tokenizer_meta import TokenizerMeta, rebuild_tokenizer_json
from ..format.vocab import ARRAY_NAMES, VocabArrays
from .tokenizer import tokenizer_from_document

if TYPE_CHECKING:
    from tokenizers import Tokenizer


def blob_tokenizer(bf: BumpFile) -> tuple[Tokenizer, TokenizerMeta] | None:
    """The tokenizer a blob carries (a ``tokenizers.Tokenizer`` and its record), or None."""
    section = bf.metadata.bumpconv.tokenizer if bf.metadata is not None else None
    if section is None:
        return None
    try:
        arrays = VocabArrays.from_bytes(*(bf.tensor_bytes(n) for n in ARRAY_NAMES))
    except BumpError as exc:
        raise TokenizerError(f"{bf.path}: its tokenizer arrays are unusable ({exc})") from None
    document = rebuild_tokenizer_json(arrays, section.record)
    return tokenizer_from_document(document, f"{bf.path}: the tokenizer it carries"), \
        section.record
