"""bumpconv: Hugging Face checkpoints -> the engine's bump weight blob, proven right against HF."""

__version__ = "0.1.0"
