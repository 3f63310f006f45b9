"""Facts of the files the engine's v7 build step reads next to a blob (engine-v7.md): their
names, the manifest's format tag and the map's header lines. Written by
:mod:`bumpconv.conversion.sidecars`, checked against the blob by :mod:`bumpconv.blob.sidecars`."""

MANIFEST_JSON = "weights_manifest.json"
MANIFEST_MAP = "weights_manifest.map"
ENGINE_CONFIG = "config.json"
SIDECARS = (MANIFEST_JSON, MANIFEST_MAP, ENGINE_CONFIG)

MANIFEST_FORMAT = "ck-bumpwgt5-manifest-v1"
#: The map's two comment lines; each later line is name|dtype|file_offset|size|runtime_offset
#: with the offsets and size as 0x%016X.
MAP_HEADER = ("# ck-bumpwgt5-manifest-map v1", "# name|dtype|file_offset|size|runtime_offset")
