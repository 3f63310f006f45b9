"""A Hugging Face checkpoint as a source: its config, its tensors, and where they came from.

``SRC`` is a model directory or a repo id already in the local HF cache (resolved with
``local_files_only=True``: bumpconv never downloads). Weights are one ``.safetensors`` file or
shards listed in ``model.safetensors.index.json``; every shard is validated up front.
"""

from __future__ import annotations

import os
import re
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..files.checkpoint import load_spec, resolve_source_dir
from ..files.inputs import open_regular
from ..files.jsonfile import load_json
from ..format.digests import sha256_file
from ..format.errors import SourceError
from ..format.spec import ModelSpec
from ..format.tokenizer_meta import TokenizerMeta
from ..format.vocab import VocabArrays
from .gguf_source import is_gguf, open_gguf
from .safetensors_file import TensorInfo, read_as_fp32, read_header, read_raw
from .tensor_source import Provenance, TensorSource
from .tokenizer_section import TOKENIZER_JSON, build_tokenizer_section, tokenizer_files

INDEX_NAME = "model.safetensors.index.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Source:
    """An opened checkpoint: spec, tensor index, and open file descriptors for reading (a
    :class:`.tensor_source.TensorSource`)."""

    root: Path
    spec: ModelSpec
    tensors: dict[str, TensorInfo]
    weight_files: list[Path]
    repo_id: str | None = None
    commit: str | None = None
    #: the tokenizer's arrays and record, when asked for and the checkpoint has a tokenizer
    tokenizer: tuple[VocabArrays, TokenizerMeta] | None = None
    _fds: dict[Path, int] = field(default_factory=dict, repr=False)
    _stack: ExitStack = field(default_factory=ExitStack, repr=False)

    def _fd(self, info: TensorInfo) -> int:
        fd = self._fds.get(info.file)
        if fd is None:
            fd = open_regular(info.file, SourceError, "safetensors file")
            self._stack.callback(os.close, fd)
            self._fds[info.file] = fd
        return fd

    def input_files(self) -> list[Path]:
        """Every file the conversion reads (an output may never be one of them)."""
        index = self.root / INDEX_NAME
        return [self.root / "config.json", *([index] if index.exists() else []),
                *self.weight_files, *self._tokenizer_files()]

    def _tokenizer_files(self) -> list[Path]:
        return tokenizer_files(self.root) if self.tokenizer is not None else []

    def read(self, name: str, start: int, count: int, out: np.ndarray | None = None) -> np.ndarray:
        """Elements ``[start, start+count)`` of tensor ``name`` as fp32 (exact conversion),
        into ``out`` when given."""
        info = self.tensors[name]
        return read_as_fp32(self._fd(info), info, start, count, out)

    def read_raw(self, name: str, start: int, count: int) -> np.ndarray:
        """Elements ``[start, start+count)`` as stored; widen with ``safetensors_file.widen``."""
        info = self.tensors[name]
        return read_raw(self._fd(info), info, start, count)

    def read_all(self, name: str) -> np.ndarray:
        """A whole tensor as fp32 in its own shape."""
        info = self.tensors[name]
        return self.read(name, 0, info.numel).reshape(info.shape)

    def close(self) -> None:
        self._stack.close()
        self._fds.clear()

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def provenance(self, hash_files: bool = True) -> Provenance:
        """File names with sizes and SHA-256s. HF cache blobs are named by their SHA-256, so a
        cached repo needs no hashing; a plain directory is hashed when ``hash_files``."""
        files = []
        for path in [self.root / "config.json", *self.weight_files, *self._tokenizer_files()]:
            digest = _cache_blob_sha256(path) if self.repo_id else None
            if digest is None and hash_files:
                digest = sha256_file(path)
            files.append((path.name, path.stat().st_size, digest))
        if self.repo_id:
            return Provenance("hf_cache", tuple(files), self.repo_id, self.commit)
        return Provenance("directory", tuple(files))


def _cache_blob_sha256(path: Path) -> str | None:
    """An HF cache snapshot entry links to ``blobs/<sha256>`` for LFS files; use that name."""
    try:
        target = Path(os.readlink(path)).name if path.is_symlink() else None
    except OSError:
        return None
    return target if target and _SHA256.match(target) else None


def _weight_files(root: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The weight files, and the index's weight_map when the checkpoint is sharded."""
    index = root / INDEX_NAME
    if index.exists():
        weight_map = load_json(index, SourceError, "safetensors index").get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise SourceError(f"{index}: 'weight_map' must be a non-empty object")
        for tensor, name in weight_map.items():
            if not isinstance(name, str) or "/" in name or "\0" in name or name.startswith("."):
                raise SourceError(f"{index}: tensor {tensor!r} is mapped to a bad shard name "
                                  f"{name!r}")
        files = sorted(set(weight_map.values()))
        for name in files:
            if not (root / name).is_file():
                raise SourceError(f"{index}: shard {name!r} is listed but missing")
        return [root / name for name in files], weight_map
    single = root / "model.safetensors"
    if single.is_file():
        return [single], None
    found = sorted(root.glob("*.safetensors"))
    if len(found) == 1:
        return found, None
    if found:
        raise SourceError(f"{root}: {len(found)} .safetensors files but no {INDEX_NAME}")
    if any(root.glob("*.bin")) or any(root.glob("*.pth")):
        raise SourceError(f"{root}: only PyTorch pickle weights (.bin/.pth); bumpconv reads "
                          "safetensors (save with save_pretrained(..., safe_serialization=True))")
    raise SourceError(f"{root}: no .safetensors weights found")


def open_source(src: str, with_tokenizer: bool = False) -> TensorSource:
    """Resolve ``src``, read its config, and validate every weight file's header; with
    ``with_tokenizer``, also build the tokenizer's arrays and record when it has a tokenizer.
    A GGUF file (by suffix or magic) opens as a :class:`.gguf_source.GGUFSource`."""
    if is_gguf(src):
        return open_gguf(src, with_tokenizer)
    root, repo_id, commit = resolve_source_dir(src)
    spec = load_spec(root / "config.json")
    files, weight_map = _weight_files(root)
    tensors: dict[str, TensorInfo] = {}
    for path in files:
        file_tensors, _ = read_header(path)
        for name, info in file_tensors.items():
            if name in tensors:
                raise SourceError(f"{path}: tensor {name!r} also appears in {tensors[name].file.name}")
            tensors[name] = info
    if weight_map is not None:
        for name, shard in weight_map.items():
            if name not in tensors:
                raise SourceError(f"{root / INDEX_NAME}: tensor {name!r} is mapped to {shard!r} "
                                  "but no shard contains it")
            if tensors[name].file.name != shard:
                raise SourceError(f"{root / INDEX_NAME}: tensor {name!r} is mapped to {shard!r} "
                                  f"but found in {tensors[name].file.name!r}")
        unlisted = sorted(set(tensors) - set(weight_map))
        if unlisted:
            raise SourceError(f"{root / INDEX_NAME}: tensor {unlisted[0]!r} in "
                              f"{tensors[unlisted[0]].file.name} is not in the weight_map")
    tokenizer = (build_tokenizer_section(root, spec.vocab_size)
                 if with_tokenizer and (root / TOKENIZER_JSON).exists() else None)
    return Source(root=root, spec=spec, tensors=tensors, weight_files=files,
                  repo_id=repo_id, commit=commit, tokenizer=tokenizer)
