"""Do the engine sidecars next to a blob describe it? ``weights_manifest.json`` and
``weights_manifest.map`` that name this blob must list exactly its tensors (name, dtype, offset,
size), the manifest's config and tokenizer counts must be the blob's, and a build config.json
must give the blob's rope theta and the split RoPE layout HF weights need. The sidecars are
compared with the blob itself, not regenerated, so this is an independent check."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files.inputs import read_regular
from ..files.jsonfile import load_json
from ..format.errors import BlobError
from ..format.metadata import engine_config
from ..format.engine_directory import (ENGINE_CONFIG, MANIFEST_JSON, MANIFEST_MAP, MAP_HEADER,
                                       SIDECARS, described_blob)
from .reader import BumpFile


@dataclass(frozen=True)
class SidecarReport:
    """The engine sidecars found beside a blob, what is wrong with them, and whether their
    manifest names this blob (then the engine would build this blob from it)."""

    found: list[str]
    problems: list[str]
    names_blob: bool


def sidecar_problems(bf: BumpFile) -> SidecarReport | None:
    """The engine sidecars beside the blob, compared with it; None when there are none (a blob
    alone is fine). Sidecars that describe another blob are a problem."""
    directory = bf.path.parent
    present = [name for name in SIDECARS if (directory / name).is_file()]
    if not present:
        return None
    manifest_path = directory / MANIFEST_JSON
    if not manifest_path.is_file():
        return SidecarReport(present, [f"{', '.join(present)} beside the blob but no "
                                       f"{MANIFEST_JSON}: the engine cannot build it from them"],
                             False)
    manifest = load_json(manifest_path, BlobError, MANIFEST_JSON)
    named = described_blob(manifest)
    if named != bf.path.name:
        return SidecarReport(present, [f"{MANIFEST_JSON} beside the blob describes {named}, not "
                                       f"{bf.path.name}: sidecars must be their own blob's (one "
                                       "model per directory)"], False)
    found, problems = [MANIFEST_JSON], []
    want = [(t.name, t.dtype.label, t.offset, t.nbytes) for t in bf.tensors]
    entries = manifest.get("entries")
    got = [(e.get("name"), e.get("dtype"), e.get("file_offset"), e.get("size"))
           for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    if got != want:
        problems.append(_first_difference(MANIFEST_JSON, got, want))
    if bf.spec is not None and isinstance(manifest.get("config"), dict):
        config = engine_config(bf.spec).model_dump()
        for key, value in manifest["config"].items():
            if key in config and config[key] != value:
                problems.append(f"{MANIFEST_JSON}: config {key}={value!r}, the blob says "
                                f"{config[key]!r}")
    section = bf.metadata.bumpconv.tokenizer if bf.metadata is not None else None
    for key in ("num_merges", "total_vocab_bytes"):
        have = getattr(section, key) if section is not None else None
        if manifest.get(key) != have:
            problems.append(f"{MANIFEST_JSON}: {key}={manifest.get(key)!r}, the blob has {have!r}")
    map_path = directory / MANIFEST_MAP
    if map_path.is_file():
        found.append(MANIFEST_MAP)
        problems += _map_problems(map_path, sorted(want, key=lambda w: w[2]))
    config_path = directory / ENGINE_CONFIG
    if config_path.is_file() and bf.spec is not None:
        found.append(ENGINE_CONFIG)
        problems += _config_problems(load_json(config_path, BlobError, ENGINE_CONFIG), bf)
    return SidecarReport(found, problems, True)


def _map_problems(path: Path, want: list[tuple[Any, ...]]) -> list[str]:
    lines = read_regular(path, BlobError, MANIFEST_MAP).decode("utf-8", "replace").splitlines()
    if tuple(lines[:2]) != MAP_HEADER:
        return [f"{MANIFEST_MAP}: does not start with the map's two header lines"]
    got = []
    for line in lines[2:]:
        parts = line.split("|")
        try:
            name, dtype, off, size, runtime = parts[0], parts[1], *(int(p, 16) for p in parts[2:])
        except (ValueError, IndexError):
            return [f"{MANIFEST_MAP}: line {line!r} is not name|dtype|offset|size|runtime"]
        if runtime != off:
            return [f"{MANIFEST_MAP}: {name} has runtime offset 0x{runtime:X} != file offset"]
        got.append((name, dtype, off, size))
    return [] if got == want else [_first_difference(MANIFEST_MAP, got, want)]


def _config_problems(cfg: dict[str, Any], bf: BumpFile) -> list[str]:
    assert bf.spec is not None
    want = {"rope_theta": bf.spec.rope.theta, "rope_layout": "split",
            "num_hidden_layers": bf.spec.num_layers, "hidden_size": bf.spec.hidden_size,
            "rms_norm_eps": bf.spec.rms_norm_eps}
    return [f"{ENGINE_CONFIG}: {key}={cfg.get(key)!r}, the blob needs {value!r}"
            for key, value in want.items() if cfg.get(key) != value]


def _first_difference(where: str, got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]) -> str:
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            return f"{where}: entry {i} is {g}, the blob has {w}"
    return f"{where}: lists {len(got)} tensors, the blob has {len(want)}"
