"""bumpconv: Hugging Face checkpoints -> the engine's bump weight blob, proven right against HF.

The front door (each verb is a ``bumpconv`` subcommand without the printing)::

    import bumpconv

    bumpconv.convert("SmolLM2-135M/", "smollm2.bump")       # stream, pack, checksum, atomically
    bumpconv.inspect("smollm2.bump", check=True)            # what is in it, and is it intact
    bumpconv.verify("smollm2.bump", "SmolLM2-135M/")        # bit for bit against the source
    with bumpconv.open("smollm2.bump") as model:            # the C runtime
        logits = model.forward(token_ids)
        continuation = model.generate(token_ids, 16)
    bumpconv.parity("SmolLM2-135M/", "smollm2.bump")        # against transformers itself

Errors a user can cause are :class:`BumpError` (one line naming the file, tensor or key).
"""

from .api import convert, inspect, open, parity, verify
from .format.constants import VERSION as __version__
from .format.errors import BlobError, BumpError, ConfigError, SourceError, VerifyError

__all__ = ["convert", "inspect", "open", "parity", "verify", "BumpError", "BlobError",
           "ConfigError", "SourceError", "VerifyError", "__version__"]
