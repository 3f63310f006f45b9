"""Exceptions that are the user interface: every message names the file, tensor or key at fault.

The CLI prints ``str(error)`` on one line and exits non-zero; nothing below the CLI prints.
"""


class BumpError(Exception):
    """Base class for every error bumpconv reports to a user."""


class ConfigError(BumpError):
    """config.json is missing a key, contradicts itself, or describes an unsupported model."""


class SourceError(BumpError):
    """A safetensors source is malformed, incomplete, or disagrees with the config."""


class LayoutError(BumpError):
    """A layout schema cannot express the model (e.g. an untied model in bumpwgt3)."""


class BlobError(BumpError):
    """A .bump file is malformed, truncated, corrupted, or not what the caller expected."""


class VerifyError(BumpError):
    """A blob does not hold exactly the source's weights."""


class OutputError(BumpError):
    """The output path cannot be written (exists without --force, unwritable directory)."""


class RuntimeInputError(BumpError):
    """Input the C runtime refuses: a token id out of range, a sequence past the context."""


class ParityError(BumpError):
    """Parity cannot run: the blob and the source are not the same model, or a side is missing."""


class ReferenceSetupError(BumpError):
    """The reference side cannot be set up: missing extras, an incomplete checkpoint."""


class EvalError(BumpError):
    """Eval cannot run: no corpus, a blob's weight type without a gate, too few tokens."""


class PlotError(BumpError):
    """A figure cannot be drawn (matplotlib, an optional extra, is not installed)."""


class TokenizerError(BumpError):
    """The tokenizer is missing or unreadable, or uses a pipeline bumpconv cannot carry."""


class VocabError(BumpError):
    """The engine's tokenizer arrays (vocab_offsets, vocab_strings, vocab_merges) are malformed,
    or a tokenizer holds something they cannot represent."""


class QuantizeError(BumpError, ValueError):
    """Values or blocks the quantizers refuse: NaN or infinity, rows that are not whole blocks,
    a byte count that does not match the shape, a type without a quantizer (also a ValueError,
    as for any bad argument)."""


class KernelError(BumpError):
    """The kernels refused a call: BUMPCONV_KERNELS names no usable level, or a bad view."""


class NativeUnavailableError(BumpError, ImportError):
    """The C extension is not built or cannot be loaded (also an ImportError, for callers that
    treat the runtime as an optional import)."""


def first_error(exc: ValueError) -> str:
    """The first problem of a (Pydantic) validation error as one line: ``where: what``."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        err = errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", exc)).removeprefix("Value error, ")
        return f"{loc}: {msg}" if loc else msg
    return str(exc)
