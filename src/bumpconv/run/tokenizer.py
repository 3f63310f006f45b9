"""The tokenizer of a blob's source: Hugging Face ``tokenizer.json`` through the ``tokenizers``
package (what transformers' fast tokenizers run), located beside the blob or given explicitly."""

from __future__ import annotations

from pathlib import Path

from ..format.errors import TokenizerError

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


def load_tokenizer(path: Path):  # noqa: ANN201 - tokenizers.Tokenizer (imported lazily)
    """A ``tokenizers.Tokenizer`` from ``path``; unreadable files are a TokenizerError."""
    from tokenizers import Tokenizer
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for malformed files
        raise TokenizerError(f"{path}: not a usable tokenizer ({exc})") from None
