"""Facts of the model directory the engine's drivers run as it is (``ck_run_v7.py run DIR``,
``ck_run_v8.py run DIR``: engine-v7.md, engine-quant-v8.md): the blob's name, the sidecars'
names, the manifest's format tag and the map's header lines. Written by
:mod:`bumpconv.conversion.engine_files`, checked against the blob by
:mod:`bumpconv.blob.engine_files_check`."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

#: The blob's name in a model directory (both drivers look for exactly this name).
BLOB_NAME = "weights.bump"

MANIFEST_JSON = "weights_manifest.json"
MANIFEST_MAP = "weights_manifest.map"
ENGINE_CONFIG = "config.json"
SIDECARS = (MANIFEST_JSON, MANIFEST_MAP, ENGINE_CONFIG)
#: Everything bumpconv writes into a model directory.
MODEL_FILES = frozenset({BLOB_NAME, *SIDECARS})

MANIFEST_FORMAT = "ck-bumpwgt5-manifest-v1"
#: The map's two comment lines; each later line is name|dtype|file_offset|size|runtime_offset
#: with the offsets and size as 0x%016X.
MAP_HEADER = ("# ck-bumpwgt5-manifest-map v1", "# name|dtype|file_offset|size|runtime_offset")


def described_blob(manifest: dict[str, Any]) -> str:
    """The file name of the blob a manifest describes: its ``weights_path`` (the engine's own
    converters write an absolute one, or none: then the drivers' fixed name)."""
    named = manifest.get("weights_path")
    return PurePath(named).name if isinstance(named, str) and named else BLOB_NAME
