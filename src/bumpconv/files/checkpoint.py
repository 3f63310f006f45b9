"""Where a checkpoint is: ``SRC`` is a model directory or a repo id already in the local Hugging
Face cache (resolved with ``local_files_only=True``: bumpconv never downloads).

Both sides resolve sources this way: the converter reading weights and the reference side
loading transformers' model.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..format.errors import ConfigError, SourceError
from ..format.spec import ModelSpec, spec_from_config
from .jsonfile import load_json

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_source_dir(src: str) -> tuple[Path, str | None, str | None]:
    """``src`` as (directory, repo_id, commit). A repo id resolves only from the local cache."""
    path = Path(src)
    if path.is_dir():
        return path, None, None
    if path.exists():
        raise SourceError(f"{src}: is a file; expected a model directory or a cached repo id")
    if not _REPO_ID.match(src):
        raise SourceError(f"{src}: no such directory, and not a Hugging Face repo id (org/name)")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        raise SourceError(f"{src}: huggingface_hub is not installed; pass a directory") from None
    try:
        snap = Path(snapshot_download(src, local_files_only=True,
                                      allow_patterns=["*.json", "*.safetensors", "*.jinja"]))
    except LocalEntryNotFoundError:
        raise SourceError(f"{src}: not a directory, and not in the local Hugging Face cache "
                          "(bumpconv never downloads; fetch it with `hf download` first)") from None
    except Exception as exc:  # huggingface_hub raises several types for a bad cache
        raise SourceError(f"{src}: cannot resolve from the local Hugging Face cache ({exc})") from None
    return snap, src, snap.name


def load_spec(config_path: Path) -> ModelSpec:
    """Read and normalise a checkpoint's config.json; every failure names the file."""
    return spec_from_config(load_json(config_path, ConfigError, "config.json", limit=16 << 20),
                            str(config_path))
