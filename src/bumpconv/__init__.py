"""bumpconv: Hugging Face checkpoints -> the engine's bump weight blob, proven right against HF."""

from .format.constants import VERSION as __version__
