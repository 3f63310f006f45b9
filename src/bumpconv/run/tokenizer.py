"""Tokenizers for ``bumpconv run``: Hugging Face ``tokenizer.json`` through the ``tokenizers``
package (what transformers' fast tokenizers run), from a file beside the blob or given
explicitly, or from the document a blob carries (:mod:`.carried_tokenizer`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files.inputs import read_regular
from ..files.jsonfile import parse_json
from ..format.errors import TokenizerError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

TOKENIZER_FILE = "tokenizer.json"


def tokenizer_path(explicit: Path | None, blob: Path) -> Path:
    """``explicit`` (a checkpoint directory or a tokenizer.json), else tokenizer.json beside the
    blob. A blob does not record where its source was (that would make files depend on paths),
    so there is nothing else to fall back on."""
    if explicit is None:
        path = blob.parent / TOKENIZER_FILE
        if not path.is_file():
            raise TokenizerError(f"no tokenizer: {path} not found; pass --tokenizer DIR "
                                 "(the source checkpoint directory)")
        return path
    path = explicit / TOKENIZER_FILE if explicit.is_dir() else explicit
    if not path.is_file():
        raise TokenizerError(f"{path}: not found (--tokenizer wants the source checkpoint "
                             f"directory or its {TOKENIZER_FILE})")
    return path


def load_tokenizer(path: Path) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` from ``path``; unreadable files are a TokenizerError.

    The file is read here (a regular file, UTF-8 JSON, through the one JSON loader) and handed
    to ``tokenizers`` as text, so neither a FIFO nor a directory name that is not UTF-8 can
    reach the library, and what it refuses is its verdict on the content alone."""
    data = read_regular(path, TokenizerError, "tokenizer.json", limit=256 << 20)
    parse_json(data, str(path), TokenizerError)
    return _from_text(data.decode("utf-8"), str(path))


def tokenizer_from_document(doc: dict[str, Any], where: str) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` from a parsed tokenizer.json (the one a blob rebuilds)."""
    return _from_text(json.dumps(doc, ensure_ascii=False), where)


def _from_text(text: str, where: str) -> Tokenizer:
    from tokenizers import Tokenizer
    try:
        return Tokenizer.from_str(text)
    except Exception as exc:  # tokenizers raises a bare Exception for malformed files
        raise TokenizerError(f"{where}: not a usable tokenizer ({exc})") from None


def encode_text(tokenizer: Tokenizer, text: str, what: str = "the prompt") -> list[int]:
    """Token ids of ``text``, special tokens added as the tokenizer's post-processor says (what
    transformers' tokenizer call does). Text that is not valid Unicode (e.g. undecodable bytes
    of a command-line argument) is an error naming it, not a TypeError from the tokenizer."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TokenizerError(f"{what} is not valid UTF-8 (at character {exc.start})") from None
    return list(tokenizer.encode(text).ids)
