"""bumpconv: Hugging Face checkpoints -> the engine's bump weight blob, proven right against HF.

The front door (each verb is a ``bumpconv`` subcommand without the printing; README.md, "From
Python", runs in the tests)::

    import bumpconv

    bumpconv.convert("SmolLM2-135M/", "smollm2.bump")       # stream, pack, checksum, atomically
    bumpconv.inspect("smollm2.bump", check=True)            # what is in it, and is it intact
    bumpconv.verify("smollm2.bump", "SmolLM2-135M/")        # bit for bit against the source
    with bumpconv.safe_open("smollm2.bump") as f:           # read it like a safetensors file
        w = f.get_tensor("model.layers.0.self_attn.q_proj.weight")   # fp32, HF shape
    with bumpconv.load_model("smollm2.bump") as model:      # run it: the C runtime
        logits = model.forward(token_ids)
    bumpconv.parity("SmolLM2-135M/", "smollm2.bump")        # against transformers itself

Errors a user can cause are :class:`BumpError` (one line naming the file, tensor or key).
"""

from __future__ import annotations

import warnings
from typing import Any

from .api import convert, inspect, load_model, parity, safe_open, verify
from .blob.tensors import TensorReader
from .format.constants import VERSION as __version__
from .format.errors import BlobError, BumpError, ConfigError, SourceError, VerifyError
from .run.runtime import BumpModel

__all__ = ["convert", "inspect", "verify", "safe_open", "load_model", "parity", "BumpModel",
           "TensorReader", "BumpError", "BlobError", "ConfigError", "SourceError",
           "VerifyError", "__version__"]


def __getattr__(name: str) -> Any:
    """``bumpconv.open``, the old name of :func:`load_model`, still works (with a warning): it
    was documented as "like safetensors' safe_open" but runs the C runtime; reading a blob's
    tensors is :func:`safe_open`."""
    if name == "open":
        warnings.warn("bumpconv.open is renamed bumpconv.load_model (the C runtime); "
                      "bumpconv.safe_open reads a blob's tensors like safetensors",
                      DeprecationWarning, stacklevel=2)
        return load_model
    raise AttributeError(f"module 'bumpconv' has no attribute {name!r}")
