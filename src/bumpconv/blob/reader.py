"""Read a bump blob: identify it, bound-check it, and find every tensor through the schemas.

Works for blobs written by bumpconv (both profiles) and by the engine (BUMPWGT3, both BUMPWGT4
header variants, BUMPWGT5). The tensor table always comes from expanding the layout schema
against the file's own dimensions; a bumpconv manifest, when present, is cross-checked against
it, never trusted instead of it. Opening reads only the header, the dtype table and the
metadata; tensor data is memory-mapped on demand.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import mmap
import os
import re
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..format.codec import CodecError, dtype_table_length, unpack_footer, unpack_header
from ..format.constants import FOOTER_SIZE, HEADER_SIZE, align_up_elems
from ..format.dtypes import DType, LegacyDType
from ..format.errors import BlobError, BumpError, LayoutError, NativeUnavailableError
from ..format.profile import (PROFILES, HeaderVariant, Profile, PlacedTensor, ReadMagic,
                             evaluate, load_profile, place_tensors)
from ..format.metadata import Metadata, spec_from_engine_config
from ..format.registry import Family, registry
from ..format.engine_directory import BLOB_NAME
from ..format.spec import ALIGNED, ModelSpec, RopeSpec
from ..files.checkpoint import load_spec
from ..files.inputs import open_regular
from ..files.jsonfile import parse_json
from ..native import native

_MAX_TABLE = 1 << 20
#: The largest metadata document read (a real one is a few hundred KB).
MAX_METADATA_BYTES = 256 << 20


@dataclass
class BumpFile:
    """An opened, structurally validated bump blob."""

    path: Path
    size: int
    profile: Profile
    magic: str
    version: int
    variant: HeaderVariant
    header: dict[str, int]
    checksum: bytes
    dtype_codes: bytes
    tensors: list[PlacedTensor]
    payload_end: int
    spec: ModelSpec | None
    #: dimension symbols (L, V, E, H, KV, D, T, AE, AD, AI, ...) as the file states or implies them
    dims: dict[str, int] = field(default_factory=dict)
    metadata: Metadata | None = None
    engine_metadata: dict[str, Any] | None = None
    metadata_sha256_ok: bool | None = None
    notes: list[str] = field(default_factory=list)
    _map: mmap.mmap | None = field(default=None, repr=False)
    _fd: int = field(default=-1, repr=False)
    _guard: int = field(default=-1, repr=False)
    _mtime_ns: int = field(default=0, repr=False)

    @property
    def by_name(self) -> dict[str, PlacedTensor]:
        return {t.name: t for t in self.tensors}

    @property
    def table_offset(self) -> int:
        return self.variant.dtype_table_offset

    def array(self, name: str) -> np.ndarray:
        """A read-only fp32 view of one packed tensor in its padded shape (memory-mapped)."""
        t = self.by_name.get(name)
        if t is None:
            raise BlobError(f"{self.path}: no tensor named {name!r}")
        if t.dtype != DType.FP32:
            raise BlobError(f"{self.path}: tensor {name!r} is {t.dtype.label}; only fp32 can "
                            "be viewed")
        if self._map is None:  # the descriptor opened and checked at open, not the path again
            self._map = mmap.mmap(self._fd, self.size, access=mmap.ACCESS_READ)
            self._guard = _guard_mapping(self._map)
        return np.frombuffer(self._map, dtype="<f4", count=t.slot.numel,
                             offset=t.offset).reshape(t.slot.shape)

    def tensor_bytes(self, name: str) -> bytes:
        """One tensor's bytes as stored (the tokenizer's arrays, quantized blocks)."""
        t = self.by_name.get(name)
        if t is None:
            raise BlobError(f"{self.path}: no tensor named {name!r}")
        return _pread(self._fd, self.path, t.offset, t.nbytes, self.size)

    def fileno(self) -> int:
        """The descriptor the blob was read through (valid until :meth:`close`)."""
        return self._fd

    def read_into(self, buf: memoryview, offset: int) -> int:
        """Read file bytes at ``offset`` into ``buf`` (from the descriptor opened at open);
        returns how many were read (fewer only at the end of the file)."""
        try:
            return os.preadv(self._fd, [buf], offset)
        except OSError as exc:
            raise BlobError(f"{self.path}: cannot read ({exc.strerror})") from None

    def raise_if_changed(self) -> None:
        """Refuse what was read from a file that was truncated or rewritten meanwhile (a mapped
        view then reads zeros where the file was cut, instead of crashing)."""
        st = os.fstat(self._fd)
        tripped = self._guard >= 0 and native().lib.bump_guard_tripped(self._guard)
        if tripped or st.st_size != self.size or st.st_mtime_ns != self._mtime_ns:
            raise BlobError(f"{self.path}: the file changed while it was being read")

    def close(self) -> None:
        if self._guard >= 0:
            native().lib.bump_guard_release(self._guard)
            self._guard = -1
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # views still alive; the map is freed with them
                pass
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "BumpFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: What an engine-written config block can describe: a Llama body, biases and q/k norms.
_ENGINE_BLOCK_OPS = frozenset({"silu", "qkv_bias", "qk_norm"})


def model_blob(path: Path) -> Path:
    """``path``, or the blob of the model directory ``path`` (BlobError when it has none)."""
    if not path.is_dir():
        return path
    if not (path / BLOB_NAME).is_file():
        raise BlobError(f"{path}: a directory without {BLOB_NAME} (a model directory holds "
                        f"{BLOB_NAME} beside the engine's sidecars)")
    return path / BLOB_NAME


def open_blob(path: Path | str, config: Path | None = None) -> BumpFile:
    """Open and structurally validate a blob.

    ``config`` (a config.json) supplies what a file does not record: a BUMPWGT3 file has no
    kv heads, intermediate size, eps or rope settings. Without it those are inferred from sizes
    where that is unambiguous, and the runtime-only settings stay unknown (``spec`` is None).
    A model directory stands for the blob in it (``DIR/weights.bump``).
    """
    path = model_blob(Path(path))
    fd = open_regular(path, BlobError, "bump file")
    try:
        size = os.fstat(fd).st_size
        if size < HEADER_SIZE:
            raise BlobError(f"{path}: {size} bytes is too small to be a bump file (header is "
                            f"{HEADER_SIZE})")
        head = _pread(fd, path, 0, HEADER_SIZE, size)
        tail = _pread(fd, path, size - FOOTER_SIZE, FOOTER_SIZE, size) if size >= FOOTER_SIZE else b""
        profile, read = _profile_for(path, head[:8])
        version = struct.unpack_from("<I", head, 8)[0]
        if version != read.version:
            raise BlobError(f"{path}: magic {read.magic} but version {version} (expected "
                            f"{read.version})")
        bf = _Parser(path, fd, size, profile, read.magic, version, read.metadata, config,
                     tail).parse()
    except BaseException:
        os.close(fd)
        raise
    bf._fd = fd
    bf._mtime_ns = os.fstat(fd).st_mtime_ns
    return bf


def is_bump_file(path: Path | str) -> bool:
    """``path`` is a regular file that starts with a magic some profile reads (BUMPWGT3/4/5):
    enough to tell a blob from a source when a command's arguments may be swapped."""
    try:
        fd = open_regular(Path(path), BlobError, "bump file")
    except BumpError:
        return False
    try:
        magic = os.pread(fd, 8, 0)
    except OSError:
        return False
    finally:
        os.close(fd)
    return any(magic == read.magic.encode() for name in PROFILES
               for read in load_profile(name).reads)


def _guard_mapping(mapped: mmap.mmap) -> int:
    """Put a mapping under the C runtime's SIGBUS guard; -1 when the extension is not built
    (reading then works unguarded)."""
    try:
        lib, ffi = native().lib, native().ffi
    except NativeUnavailableError:
        return -1
    address = np.frombuffer(mapped, dtype=np.uint8).ctypes.data
    return int(lib.bump_guard_mapping(ffi.cast("void *", address), len(mapped)))


def _pread(fd: int, path: Path, offset: int, n: int, size: int) -> bytes:
    """Exactly ``n`` bytes at ``offset`` of the open blob."""
    if offset < 0 or n < 0 or offset + n > size:
        raise BlobError(f"{path}: read of {n} bytes at {offset} is past the end ({size} bytes)")
    try:
        data = os.pread(fd, n, offset)
    except OSError as exc:
        raise BlobError(f"{path}: cannot read ({exc.strerror})") from None
    if len(data) != n:
        raise BlobError(f"{path}: the file shrank while being read")
    return data


def _profile_for(path: Path, magic: bytes) -> tuple[Profile, ReadMagic]:
    for name in PROFILES:
        profile = load_profile(name)
        for read in profile.reads:
            if magic == read.magic.encode():
                return profile, read
    shown = magic.decode("ascii", "backslashreplace")
    raise BlobError(f"{path}: not a bump file (magic {shown!r}; expected BUMPWGT3/4/5)")


class _Parser:
    """Parsing steps for one file; each raises BlobError naming the file and the field."""

    def __init__(self, path: Path, fd: int, size: int, profile: Profile, magic: str,
                 version: int, has_metadata: bool, config: Path | None, tail: bytes) -> None:
        self.path, self.fd, self.size, self.profile = path, fd, size, profile
        self.magic, self.version, self.has_metadata = magic, version, has_metadata
        self.config, self.tail = config, tail
        self.notes: list[str] = []

    def _read(self, offset: int, n: int) -> bytes:
        return _pread(self.fd, self.path, offset, n, self.size)

    def parse(self) -> BumpFile:
        payload_limit, metadata_raw, meta_ok = self._footer()
        metadata, engine_meta = self._metadata(metadata_raw)
        if metadata is not None and metadata.bumpconv.profile != self.profile.profile:
            self.profile = self._named_profile(metadata.bumpconv.profile)
        errors: list[str] = []
        for variant in self.profile.headers:
            try:
                return self._parse_variant(variant, payload_limit, metadata, engine_meta, meta_ok)
            except BlobError as exc:
                errors.append(str(exc))
        raise BlobError(errors[0] if len(errors) == 1 else
                        f"{self.path}: no header variant fits: " + "; ".join(
                            f"{v.name}: {e.removeprefix(str(self.path) + ': ')}"
                            for v, e in zip(self.profile.headers, errors)))

    def _named_profile(self, name: str) -> Profile:
        """The profile a bumpconv file's metadata names, which must read this file's magic
        (several profiles can share one: bumpwgt5 and engine-v7 both write BUMPWGT5)."""
        if name not in PROFILES:
            raise BlobError(f"{self.path}: the metadata names the profile {name!r}, which this "
                            f"bumpconv does not know (known: {', '.join(PROFILES)})")
        profile = load_profile(name)
        if not any(r.magic == self.magic and r.version == self.version for r in profile.reads):
            raise BlobError(f"{self.path}: the metadata names the profile {name!r}, which does "
                            f"not write {self.magic}")
        return profile

    # -- trailer -------------------------------------------------------------------------
    def _footer(self) -> tuple[int, bytes | None, bool | None]:
        if not self.has_metadata:
            return self.size, None, None
        try:
            footer = unpack_footer(self.tail)
        except CodecError as exc:
            raise BlobError(f"{self.path}: {exc}") from None
        start = footer.metadata_start(self.size)
        if footer.metadata_size > self.size or start < HEADER_SIZE:
            raise BlobError(f"{self.path}: footer says the metadata is {footer.metadata_size} "
                            "bytes, more than the file holds")
        if footer.metadata_size > MAX_METADATA_BYTES:
            raise BlobError(f"{self.path}: footer says the metadata is {footer.metadata_size:,} "
                            f"bytes (at most {MAX_METADATA_BYTES:,} are read)")
        raw = self._read(start, footer.metadata_size)
        ok = hashlib.sha256(raw).digest() == footer.metadata_sha256
        return start, raw, ok

    def _metadata(self, raw: bytes | None) -> tuple[Metadata | None, dict[str, Any] | None]:
        if raw is None:
            return None, None
        obj = parse_json(raw, f"{self.path}: metadata", BlobError)
        if "bumpconv" not in obj:
            return None, obj
        try:
            return Metadata.model_validate(obj), None
        except ValueError as exc:
            raise BlobError(f"{self.path}: metadata does not match the bumpconv schema "
                            f"({str(exc).splitlines()[0]})") from None

    # -- header ----------------------------------------------------------------------------
    def _parse_variant(self, variant: HeaderVariant, payload_limit: int, metadata: Metadata | None,
                       engine_meta: dict[str, Any] | None, meta_ok: bool | None) -> BumpFile:
        raw = self._read(0, variant.dtype_table_offset + 4)
        try:
            decoded = unpack_header(variant, raw)
        except CodecError as exc:
            raise BlobError(f"{self.path}: {exc}") from None
        header, checksum = decoded.values, decoded.checksum
        count = dtype_table_length(raw, variant.dtype_table_offset)
        if not 0 < count <= _MAX_TABLE or variant.dtype_table_offset + 4 + count > payload_limit:
            raise BlobError(f"{self.path}: dtype table length {count} at "
                            f"0x{variant.dtype_table_offset:x} does not fit the file")
        codes = self._read(variant.dtype_table_offset + 4, count)
        dims = self._dims(variant, header, metadata)
        spec = self._spec(dims, metadata, engine_meta)
        tensors, flags = self._tensors(variant, dims, codes, payload_limit, metadata, spec)
        if spec is not None:
            spec = spec.model_copy(update={"tie_word_embeddings": not flags["untied"],
                                           "qkv_bias": flags["qkv_bias"], "qk_norm": flags["qk_norm"]})
        if metadata is not None:
            self._cross_check_manifest(metadata, tensors)
        return BumpFile(self.path, self.size, self.profile, self.magic, self.version, variant,
                        header, checksum, codes, tensors, tensors[-1].end,
                        spec, dims, metadata, engine_meta, meta_ok, self.notes)

    def _dims(self, variant: HeaderVariant, header: dict[str, int],
              metadata: Metadata | None) -> dict[str, int]:
        """Dimension symbols from the header fields, checked for consistency: every symbol a
        field holds is positive, a symbol the header lacks comes from the profile's
        requirements (BUMPWGT3 stores E/H, not D), every expression field equals its value,
        and padded sizes are what their dimensions pad to."""
        dims: dict[str, int] = {}
        for f in variant.fields:
            if isinstance(f.value, str) and f.value.isalnum():
                if header[f.name] <= 0:
                    raise BlobError(f"{self.path}: header field {f.name} is {header[f.name]}; "
                                    "must be positive")
                dims[f.value] = header[f.name]
        names = {f.value: f.name for f in variant.fields if isinstance(f.value, str)}
        for req in self.profile.require:
            if req.left not in dims:
                try:
                    dims[req.left] = evaluate(req.right, dims)
                except LayoutError as exc:
                    given = ", ".join(f"{names.get(sym, sym)}={dims[sym]}"
                                      for sym in re.findall(r"[A-Z]+", req.right) if sym in dims)
                    raise BlobError(f"{self.path}: header {given} cannot give "
                                    f"{names.get(req.left, req.left)} ({exc})") from None
        for f in variant.fields:
            if isinstance(f.value, str) and not f.value.isalnum():
                try:
                    want = evaluate(f.value, dims)
                except LayoutError as exc:
                    raise BlobError(f"{self.path}: header field {f.name} ({f.value}): {exc}") from None
                if header[f.name] != want:
                    raise BlobError(f"{self.path}: header field {f.name} is {header[f.name]}, "
                                    f"but {f.value} is {want}")
        for aligned, base in ALIGNED.items():
            if aligned in dims and base in dims:
                exact = align_up_elems(dims[base])
                if dims[aligned] < dims[base] or dims[aligned] % 16:
                    raise BlobError(f"{self.path}: header {aligned}={dims[aligned]} contradicts "
                                    f"{base}={dims[base]} (expected {exact})")
                if metadata is not None and dims[aligned] != exact:
                    raise BlobError(f"{self.path}: header {aligned}={dims[aligned]} but "
                                    f"{base}={dims[base]} pads to {exact}")
        if "KV" in dims and dims["H"] % dims["KV"]:
            raise BlobError(f"{self.path}: num_kv_heads={dims['KV']} does not divide num_heads={dims['H']}")
        return dims

    def _spec(self, dims: dict[str, int], metadata: Metadata | None,
              engine_meta: dict[str, Any] | None) -> ModelSpec | None:
        """The runtime spec: from bumpconv metadata, an engine v5 config block, or config.json."""
        if metadata is not None:
            try:
                spec = spec_from_engine_config(metadata.config)
            except ValueError as exc:
                raise BlobError(f"{self.path}: the metadata's config is not a model bumpconv "
                                f"runs ({str(exc).splitlines()[-1].strip()})") from None
            self._agree(spec, dims, "metadata")
            if metadata.bumpconv.tokenizer is not None:
                dims.update(metadata.bumpconv.tokenizer.counts.dims())
            return spec
        if self.config is not None:
            spec = load_spec(self.config)
            if "T" in dims:
                spec = spec.with_context(dims["T"])
            self._agree(spec, dims, str(self.config))
            return spec
        if engine_meta is not None and isinstance(engine_meta.get("config"), dict):
            self.notes.append("engine-written metadata: eps and rope taken from its config block")
            return self._engine_spec(engine_meta["config"], dims)
        self.notes.append("no config: runtime settings (eps, rope) unknown; pass config.json")
        return None

    def _engine_spec(self, c: dict[str, Any], dims: dict[str, int]) -> ModelSpec | None:
        family = registry().family(c.get("model")) if isinstance(c.get("model"), str) else None
        if family is not None and set(family.features.operations()) - _ENGINE_BLOCK_OPS:
            self.notes.append(f"engine config block of a {family.name} model: it does not record "
                              "that family's settings (per-layer attention, scales); pass "
                              "config.json")
            return None
        try:
            arch = family.name if family is not None and family.supported else "llama"
            spec = ModelSpec(
                architecture=arch,
                num_layers=c["num_layers"], vocab_size=c["vocab_size"], hidden_size=c["embed_dim"],
                intermediate_size=c["intermediate_size"], num_heads=c["num_heads"],
                num_kv_heads=c["num_kv_heads"], head_dim=c["head_dim"],
                context_length=c["context_length"], rms_norm_eps=c["rms_eps"],
                rope=RopeSpec(theta=c["rope_theta"]), tie_word_embeddings=True,
                qkv_bias=False, qk_norm=False)
        except (KeyError, ValueError, TypeError) as exc:
            self.notes.append(f"engine config block incomplete ({exc}); runtime settings unknown")
            return None
        self._agree(spec, dims, "engine metadata")
        return spec

    def _agree(self, spec: ModelSpec, dims: dict[str, int], where: str) -> None:
        """The header's dimensions must be the spec's; the spec fills what the header lacks."""
        sd = spec.dims()
        names = {f.value: f.name for f in self.profile.headers[0].fields
                 if isinstance(f.value, str) and f.value.isalnum()}
        for sym, value in sd.items():
            if sym in dims and sym not in ALIGNED and dims[sym] != value:
                raise BlobError(f"{self.path}: header {names.get(sym, sym)}={dims[sym]} but "
                                f"{where} says {value}")
        for sym, value in sd.items():
            dims.setdefault(sym, value)

    # -- tensors ---------------------------------------------------------------------------
    def _tensors(self, variant: HeaderVariant, dims: dict[str, int], codes: bytes,
                 payload_limit: int, metadata: Metadata | None,
                 spec: ModelSpec | None) -> tuple[list[PlacedTensor], dict[str, bool]]:
        """Expand the schema; when flags or v3 dimensions are unknown, try each candidate and
        keep the one whose tensor count and byte total match the file exactly."""
        presence = sorted({r.when.removeprefix("!") for r in self.profile.rules() if r.when})
        counts = {self.profile.tensor_count(dims["L"],
                                            {**self._no_flags, **dict(zip(presence, fl))})
                  for fl in itertools.product((False, True), repeat=len(presence))}
        if len(codes) not in counts:  # before anything of the header's size is expanded
            raise BlobError(f"{self.path}: the dtype table has {len(codes):,} entries, but "
                            f"num_layers={dims['L']:,} needs "
                            + " or ".join(f"{c:,}" for c in sorted(counts)))
        if metadata is not None or (spec is not None and self.config is not None):
            assert spec is not None
            tokenizer = metadata is not None and metadata.bumpconv.tokenizer is not None
            candidates = [(dims, spec.flags(tokenizer=tokenizer))]
        else:
            candidates = [(d, {**self._no_flags, **dict(zip(presence, fl))})
                          for d in self._dim_candidates(dims)
                          for fl in itertools.product((False, True), repeat=len(presence))]
        trailing_ok = variant.trailing_data and not self.has_metadata
        fits = []
        for d, flags in candidates:
            try:
                tensors = self._place(variant, d, flags, codes,
                                      spec.family if spec is not None else None)
            except BumpError:
                continue
            end = tensors[-1].end
            if end == payload_limit or (trailing_ok and end < payload_limit):
                fits.append((d, flags, tensors, end))
        if not fits:
            raise BlobError(self._no_fit_message(variant, dims, codes, payload_limit, candidates))
        if len(fits) > 1:
            raise BlobError(f"{self.path}: the layout is ambiguous from sizes alone "
                            f"({len(fits)} candidates fit); pass the model's config.json")
        d, flags, tensors, end = fits[0]
        inferred = [f"{k}={d[k]}" for k in ("KV", "AI") if k not in dims]
        if len(candidates) > 1:
            inferred += [f"{k}={flags[k]}" for k in presence]
        if inferred:
            self.notes.append("inferred from sizes: " + ", ".join(inferred))
        dims.update(d)
        if end < payload_limit:
            self.notes.append(f"{payload_limit - end} bytes after the payload (engine vocab data)")
        return tensors, flags

    @property
    def _no_flags(self) -> dict[str, bool]:
        return dict.fromkeys(self.profile.flags_used(), False)

    def _dim_candidates(self, dims: dict[str, int]) -> list[dict[str, int]]:
        """BUMPWGT3 records neither kv heads nor the intermediate size: enumerate them (kv
        heads over the divisors of H, found in O(sqrt H) steps)."""
        if "KV" in dims and "AI" in dims:
            return [dims]
        h = dims["H"]
        divisors = sorted({d for k in range(1, math.isqrt(h) + 1) if h % k == 0
                           for d in (k, h // k)})
        out = []
        for kv in divisors:
            for ai in self._ai_candidates(dims, kv):
                out.append({**dims, "KV": kv, "AI": ai, "I": ai})
        return out

    def _ai_candidates(self, dims: dict[str, int], kv: int) -> list[int]:
        """Solve the payload size for the aligned intermediate size, given kv heads: the
        payload grows linearly with AI and with the layer count, so placements of one and two
        layers at AI = 0 and AI = 16 give it (never an expansion of the header's layer
        count, which a damaged header can make huge)."""
        if self.profile.tensor_count(dims["L"], self._no_flags) > self.size:
            return []
        layers = dims["L"]

        def placed(ai: int, n: int) -> int:
            return place_tensors(self.profile, {**dims, "L": n, "KV": kv, "AI": ai, "I": ai},
                                 self._no_flags, None)[-1].end

        def payload(ai: int) -> int:
            one = placed(ai, 1)
            return one + (layers - 1) * (placed(ai, 2) - one)
        fixed = payload(0)
        per_ai = (payload(16) - fixed) // 16
        rest = self.size - fixed
        if rest <= 0 or per_ai <= 0 or rest % per_ai:
            return []
        ai = rest // per_ai
        return [ai] if ai % 16 == 0 else []

    def _place(self, variant: HeaderVariant, dims: dict[str, int], flags: dict[str, bool],
               codes: bytes, family: Family | None) -> list[PlacedTensor]:
        """The profile's tensors at their offsets, sized by the file's dtype codes. The count is
        checked before anything is expanded."""
        count = self.profile.tensor_count(dims["L"], flags)
        if count != len(codes):
            raise BlobError(f"the dtype table has {len(codes)} entries, but num_layers="
                            f"{dims['L']} needs {count}")
        planned = place_tensors(self.profile, dims, flags, family, variant.dtype_table_offset)
        offset = variant.dtype_table_offset + 4 + len(codes)
        out = []
        for i, (p, code) in enumerate(zip(planned, codes)):
            dtype = self._dtype(code, i)
            try:
                out.append(PlacedTensor(p.slot, offset, dtype))
            except ValueError as exc:
                raise BlobError(f"{p.slot.name}: {exc}") from None
            offset = out[-1].end
        return out

    def _dtype(self, code: int, index: int) -> DType:
        enum = LegacyDType if self.profile.dtype_enum == "legacy" else DType
        if code not in iter(enum):
            raise BlobError(f"dtype table entry {index} has the unknown code {code} "
                            f"({self.profile.dtype_enum} enum: "
                            f"{', '.join(f'{d.value} {d.name}' for d in enum)})")
        return enum(code) if enum is DType else LegacyDType(code).current

    def _no_fit_message(self, variant: HeaderVariant, dims: dict[str, int], codes: bytes,
                        payload_limit: int, candidates: list) -> str:
        if not candidates:  # BUMPWGT3: no kv-head count and intermediate size fit the size
            shown = ", ".join(f"{f.name}={dims[f.value]:,}" for f in variant.fields
                              if f.value in ("L", "V", "E", "H") and f.value in dims)
            return (f"{self.path}: {payload_limit:,} bytes fit no kv-head count and "
                    f"intermediate size with the header's {shown} (truncated or damaged; or "
                    "pass the model's config.json)")
        d, flags = candidates[0]
        try:
            tensors = self._place(variant, d, flags, codes, None)
        except BumpError as exc:
            return f"{self.path}: {exc}"
        end = tensors[-1].end
        if end > payload_limit:
            last = next(t for t in tensors if t.end > payload_limit)
            return (f"{self.path}: truncated: tensor {last.name!r} ends at byte "
                    f"{last.end} but the payload ends at {payload_limit}")
        return (f"{self.path}: {payload_limit - end} unexpected bytes after the last tensor "
                f"(the header's dimensions contradict the file size)")

    def _cross_check_manifest(self, metadata: Metadata, tensors: list[PlacedTensor]) -> None:
        entries = metadata.bumpconv.tensors
        if len(entries) != len(tensors):
            raise BlobError(f"{self.path}: manifest lists {len(entries)} tensors, layout has {len(tensors)}")
        for e, t in zip(entries, tensors):
            if (e.name, e.offset, e.bytes, tuple(e.shape), e.role) != (
                    t.name, t.offset, t.nbytes, t.slot.shape, t.slot.role):
                raise BlobError(f"{self.path}: manifest entry {e.name!r} disagrees with the "
                                f"{self.profile.profile} layout (expected {t.name!r} at {t.offset}, "
                                f"{t.nbytes} bytes, shape {list(t.slot.shape)})")
        for i, (e, t) in enumerate(zip(entries, tensors)):
            tensors[i] = replace(t, crc32=e.crc32)

