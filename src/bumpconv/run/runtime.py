"""Run a converted blob in C: :class:`BumpModel` (the contract is docs/runtime-api.md).

The layout is resolved here, in Python, through the reader and the layout schemas; the C side
(native/, built into ``bumpconv._native`` by cffi) receives a table of tensors by role with
their offsets, sizes, shapes and dtypes, plus the model settings. It knows roles, never file
positions, and it bound-checks that table against the file size and the dimensions again, so a
wrong table is an error even when it did not come from the reader.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Sequence

import numpy as np

from ..blob.check import check_blob
from ..blob.reader import BumpFile, open_blob
from ..format.dtypes import DType
from ..format.errors import (BlobError, BumpError, ConfigError, KernelError, LayoutError,
                             RuntimeInputError)
from ..format.profile import PlacedTensor
from ..format.packing import matrix_view
from ..format.registry import registry, require_runnable
from ..format.spec import ModelSpec, RopeSpec
from ..format.stages import tap_shapes
from ..native import native
from ..native.kernels import ACTIVATIONS
from .generate import greedy

RopePairing = Literal["rotate_half", "interleaved"]
_ROPE_TYPES = {"default": "BUMP_ROPE_DEFAULT", "linear": "BUMP_ROPE_LINEAR",
               "llama3": "BUMP_ROPE_LLAMA3"}
#: The registry's activation operations -> the C runtime's enum bump_activation.
_ACTIVATIONS = {"silu": "BUMP_ACT_SILU", "gelu_tanh": "BUMP_ACT_GELU_TANH"}
_ERR_LEN = 512
_U64 = 1 << 64


class BumpModel:
    """A blob opened in the C runtime, with its KV cache. Calls are serialised by a lock: a
    model shared between threads is safe but not parallel (open one per thread for that)."""

    def __init__(self, handle: Any, mod: ModuleType, spec: ModelSpec, path: Path) -> None:
        """Use :meth:`open` (or :meth:`from_table`)."""
        self._handle = handle
        self._mod = mod
        self._spec = spec
        self._path = path
        self._lock = threading.Lock()

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path | str, config: Path | str | None = None, check: bool = False,
             threads: int | None = None, *,
             rope_pairing: RopePairing = "rotate_half",
             activations: str = "fp32") -> "BumpModel":
        """Open ``path`` (any profile). ``config`` is the source's config.json, required for a
        bumpwgt3 blob (which records neither eps nor rope settings). ``check`` recomputes every
        checksum and checks the zero padding first. ``threads`` defaults to the number of online CPUs.
        ``rope_pairing="interleaved"`` is fault injection for the parity tests only.
        ``activations="int8"``: decode over quantized weights quantizes the activations to int8
        (per block of 32) and multiplies in integers, llama.cpp's way: faster, no longer exact
        against the dequantized weights ("fp32", the default, is what parity checks)."""
        path = Path(path)
        with open_blob(path, config=Path(config) if config is not None else None) as bf:
            return cls.from_blob(bf, check=check, threads=threads, rope_pairing=rope_pairing,
                                 activations=activations)

    @classmethod
    def from_blob(cls, bf: BumpFile, check: bool = False, threads: int | None = None, *,
                  rope_pairing: RopePairing = "rotate_half",
                  activations: str = "fp32") -> "BumpModel":
        """Run an already opened blob (so that a caller who has read it does not parse it again).

        Refused: a blob without runtime settings, and one whose metadata fails its footer hash
        (the settings would be whatever the damaged JSON says). Slots the layout defines as all
        zero (no sources, e.g. bumpwgt3's pos_emb, or its bias slots for a model without biases)
        are checked to be zero and not handed to C."""
        if bf.spec is None:
            raise BlobError(f"{bf.path}: a {bf.magic} file does not record the runtime settings "
                            "(eps, rope); pass the source's config.json (--config)")
        if bf.metadata_sha256_ok is False:
            raise BlobError(f"{bf.path}: the metadata does not match its footer hash (the "
                            "settings it records cannot be trusted); the file is damaged")
        if check:
            check_blob(bf).raise_on_failure()
        table = []
        for t in bf.tensors:
            if t.slot.content != "weights":
                continue  # the tokenizer's arrays are the tokenizer's, not the forward pass's
            if t.slot.zeros:
                _require_zero(bf, t)
            else:
                table.append(t)
        return cls.from_table(bf.path, bf.spec, table, threads=threads, rope_pairing=rope_pairing,
                              fd=bf.fileno(), activations=activations)

    @classmethod
    def from_table(cls, path: Path | str, spec: ModelSpec, table: Sequence[PlacedTensor],
                   threads: int | None = None, *,
                   rope_pairing: RopePairing = "rotate_half", fd: int = -1,
                   activations: str = "fp32") -> "BumpModel":
        """Hand C a tensor table directly. :meth:`from_blob` builds the table from the reader;
        this entry point exists so that C's own checks of a table can be tested (and would let
        a caller run a layout the reader does not know). ``fd``: the file already open (what the
        reader validated), else C opens ``path``."""
        path = Path(path)
        require_runnable(spec.architecture, str(path))
        mod = native()
        ffi, lib = mod.ffi, mod.lib
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        if rope_pairing not in ("rotate_half", "interleaved"):
            raise ValueError(f"rope_pairing must be 'rotate_half' or 'interleaved', "
                             f"got {rope_pairing!r}")
        if activations not in ACTIVATIONS:
            raise ValueError(f"activations must be one of {', '.join(ACTIVATIONS)}, "
                             f"got {activations!r}")
        # _sliding: the per-layer array cfg points to, alive until bump_open has copied it
        cfg, _sliding = _native_config(ffi, lib, spec, threads or 0, rope_pairing == "interleaved",
                                       _baked_norm_offset(spec, table, path))
        cfg.int8_activations = int(activations == "int8")
        entries = ffi.new("bump_tensor[]", max(len(table), 1))
        for i, t in enumerate(table):
            _fill_entry(lib, entries[i], i, t)
        out = ffi.new("bump_model **")
        err = ffi.new("char[]", _ERR_LEN)
        rc = lib.bump_open(os.fsencode(path), fd, cfg, entries, len(table), out, err, _ERR_LEN)
        if rc != lib.BUMP_OK:
            message = f"{path}: {ffi.string(err).decode(errors='replace')}"
            if rc == lib.BUMP_ERR_NOMEM:
                raise MemoryError(message)
            if rc == lib.BUMP_ERR_INPUT:  # at open: BUMPCONV_KERNELS names no usable level
                raise KernelError(message)
            raise BlobError(message)
        return cls(ffi.gc(out[0], lib.bump_close), mod, spec, path)

    # -- the API of docs/runtime-api.md ------------------------------------------------------
    @property
    def spec(self) -> ModelSpec:
        """The settings the runtime runs with."""
        return self._spec

    @property
    def positions_allocated(self) -> int:
        """Positions whose RoPE tables and KV cache exist: they grow with the positions used,
        never with the context length the blob allows."""
        return int(self._mod.lib.bump_positions_allocated(self._live()))

    @property
    def kernels(self) -> str:
        """The kernel level this model runs (BUMPCONV_KERNELS, else the CPU's best)."""
        return self._mod.ffi.string(self._mod.lib.bump_model_kernels(self._live())).decode()

    @property
    def threads(self) -> int:
        """Threads of the model's pool (the caller's included)."""
        return int(self._mod.lib.bump_threads(self._live()))

    def forward(self, tokens: Sequence[int] | np.ndarray, start_pos: int = 0,
                all_logits: bool = True) -> np.ndarray:
        """Run ``tokens`` at positions ``start_pos``.. and append them to the KV cache
        (``start_pos`` must equal the number of cached positions). Returns [n, V] logits, or
        [1, V] for the last token only."""
        return self._forward_ids(self._token_ids(tokens), start_pos, all_logits)

    def reset(self) -> None:
        """Empty the KV cache."""
        with self._lock:
            self._mod.lib.bump_reset(self._live())

    def prefill(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        """Reset, run ``tokens``, return the last token's logits [V]."""
        ids = self._token_ids(tokens)
        self.reset()
        return self._forward_ids(ids, 0, False)[0]

    def decode(self, token: int) -> np.ndarray:
        """One step with the KV cache: the logits [V] of ``token`` at the next position."""
        ids = self._token_ids([token])
        return self._forward_ids(ids, int(self._mod.lib.bump_cached(self._live())), False)[0]

    def generate(self, tokens: Sequence[int] | np.ndarray, max_new_tokens: int = 32,
                 eos: Sequence[int] = ()) -> list[int]:
        """Greedy continuation of ``tokens``: up to ``max_new_tokens`` ids, stopping after an
        id in ``eos`` or at the context length (the loop is :func:`bumpconv.run.generate.greedy`,
        which also times it)."""
        return list(greedy(self, [int(t) for t in tokens], max_new_tokens, frozenset(eos)))

    def hidden_states(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        """[L + 1, n, E]: the embeddings, then every decoder layer's output (before the final
        norm). Runs from position 0; the cache then holds ``tokens``."""
        ids = self._token_ids(tokens)
        s = self._spec
        hidden = np.empty((s.num_layers + 1, len(ids), s.hidden_size), np.float32)
        self.reset()
        self._forward_ids(ids, 0, False, taps={"hidden": hidden}, layer=-1, logits=False)
        return hidden

    def taps(self, tokens: Sequence[int] | np.ndarray, layer: int) -> dict[str, np.ndarray]:
        """Every stage of decoder layer ``layer`` (docs/runtime-api.md), plus ``final_norm``
        and ``logits``, from a forward of ``tokens`` from position 0 (which the cache then
        holds)."""
        ids = self._token_ids(tokens)
        s = self._spec
        if not isinstance(layer, (int, np.integer)) or not 0 <= layer < s.num_layers:
            raise RuntimeInputError(f"layer {layer!r} is out of range (the model has "
                                    f"{s.num_layers} layers)")
        arrays = {key: np.empty(shape, np.float32)
                  for key, shape in tap_shapes(s.dims(), s.flags(), len(ids)).items()}
        self.reset()
        arrays["logits"] = self._forward_ids(ids, 0, True, taps=arrays, layer=int(layer))
        return arrays

    def close(self) -> None:
        """Free the C state and unmap the file (idempotent)."""
        with self._lock:
            if self._handle is not None:
                self._mod.ffi.release(self._handle)
                self._handle = None

    def __enter__(self) -> "BumpModel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self._spec
        state = "closed" if self._handle is None else f"{self.threads} threads"
        return (f"BumpModel({str(self._path)!r}, {s.architecture}, {s.num_layers} layers, "
                f"{state})")

    # -- internals ---------------------------------------------------------------------------
    def _live(self) -> Any:
        if self._handle is None:
            raise ValueError("the BumpModel is closed")
        return self._handle

    def _token_ids(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        """Token ids as int32, refusing anything that is not an id in [0, vocab): a wrong id
        must never wrap around or turn into another token on the way to C."""
        vocab, context = self._spec.vocab_size, self._spec.context_length
        arr = np.asarray(tokens)
        if arr.ndim != 1 or arr.size == 0:
            raise RuntimeInputError(f"tokens must be a non-empty 1-D sequence of ids, got shape "
                                    f"{list(arr.shape)}")
        if arr.dtype.kind not in "iu":  # floats, bools, Python ints too big for int64, ...
            values = arr.tolist()
            for i, v in enumerate(values):
                if isinstance(v, bool) or not isinstance(v, int):
                    raise RuntimeInputError(f"token at index {i} is {v!r}, not an integer id")
                if not 0 <= v < vocab:
                    raise RuntimeInputError(f"token id {v} at index {i} is outside [0, {vocab})")
            arr = np.array(values, dtype=np.int64)
        bad = np.flatnonzero((arr < 0) | (arr >= vocab))
        if len(bad):
            i = int(bad[0])
            raise RuntimeInputError(f"token id {arr[i]} at index {i} is outside [0, {vocab})")
        if len(arr) > context:
            raise RuntimeInputError(f"{len(arr)} tokens exceed the context length {context}")
        return np.ascontiguousarray(arr, dtype=np.int32)

    def _forward_ids(self, ids: np.ndarray, start_pos: int, all_logits: bool,
                     taps: dict[str, np.ndarray] | None = None, layer: int = -1,
                     logits: bool = True) -> np.ndarray:
        """The C call. ``ids`` go to C unchecked (C refuses out-of-range ids on its own)."""
        ffi, lib = self._mod.ffi, self._mod.lib
        if not isinstance(start_pos, (int, np.integer)) or not 0 <= start_pos < 2**31:
            raise RuntimeInputError(f"start_pos {start_pos!r} is not a position")
        n = len(ids)
        out = np.empty((n if all_logits else 1, self._spec.vocab_size), np.float32)
        ctaps = ffi.NULL
        if taps is not None:
            ctaps = ffi.new("bump_taps *")
            ctaps.layer = layer
            for key, arr in taps.items():
                setattr(ctaps, key, ffi.from_buffer("float[]", arr))
        err = ffi.new("char[]", _ERR_LEN)
        ids = np.ascontiguousarray(ids, dtype=np.int32)
        with self._lock:
            rc = lib.bump_forward(self._live(), ffi.from_buffer("int32_t[]", ids), n,
                                  int(start_pos),
                                  ffi.from_buffer("float[]", out) if logits else ffi.NULL,
                                  int(all_logits), ctaps, err, _ERR_LEN)
        if rc != lib.BUMP_OK:
            message = ffi.string(err).decode(errors="replace")
            if rc == lib.BUMP_ERR_INPUT:
                raise RuntimeInputError(message)
            if rc == lib.BUMP_ERR_NOMEM:
                raise MemoryError(message)
            if rc == lib.BUMP_ERR_BLOB:
                raise BlobError(f"{self._path}: {message}")
            raise BumpError(message)
        return out


def _native_config(ffi: Any, lib: Any, spec: ModelSpec, threads: int, interleaved: bool,
                   baked_norm_offset: float = 0.0) -> tuple[Any, Any]:
    """The C settings struct, and the per-layer array it points to (keep both alive until
    bump_open returns). ``baked_norm_offset``: the norm weight offset the blob's norm tensors
    already carry (the engine profile's bake), which the runtime must then not add again.
    Values that do not fit their C type are refused here (C checks the ranges that matter)."""
    family = spec.family
    features = family.features
    ints = dict(n_layers=spec.num_layers, vocab_size=spec.vocab_size, hidden=spec.hidden_size,
                intermediate=spec.intermediate_size, n_heads=spec.num_heads,
                n_kv_heads=spec.num_kv_heads, head_dim=spec.head_dim,
                context=spec.context_length, sliding_window=spec.sliding_window or 0,
                rope_interleaved=int(interleaved), n_threads=threads,
                activation=getattr(lib, _ACTIVATIONS[features.activation.op]))
    cfg = ffi.new("bump_config *")
    for key, value in ints.items():
        if not -2**31 <= value < 2**31:
            raise BlobError(f"setting {key}={value} does not fit the runtime (int32)")
        setattr(cfg, key, value)
    cfg.rms_eps = spec.rms_norm_eps
    _fill_rope(lib, cfg.rope, spec.rope)
    if spec.rope_local is not None:
        _fill_rope(lib, cfg.rope_local, spec.rope_local)
    sliding = ffi.NULL
    if spec.layer_types is not None:
        sliding = ffi.new("uint8_t[]", [int(spec.window(i) is not None)
                                         for i in range(spec.num_layers)])
        cfg.layer_sliding = sliding
    cfg.norm_offset = features.norm_weight_offset - baked_norm_offset
    cfg.embed_scale = (math.sqrt(spec.hidden_size)  # transformers: hidden_size**0.5
                       if features.embedding_scale == "sqrt_hidden" else 0.0)
    cfg.query_scale = spec.query_pre_attn_scalar or 0.0
    cfg.logit_softcap = spec.final_logit_softcapping or 0.0
    return cfg, sliding


def _fill_rope(lib: Any, out: Any, rope: RopeSpec) -> None:
    if rope.type not in _ROPE_TYPES:
        raise ConfigError(f"rope type {rope.type!r} is not supported by the runtime "
                          f"(supported: {', '.join(_ROPE_TYPES)})")
    out.theta = rope.theta
    out.type = getattr(lib, _ROPE_TYPES[rope.type])
    out.factor = rope.factor or 0.0
    out.low_freq_factor = rope.low_freq_factor or 0.0
    out.high_freq_factor = rope.high_freq_factor or 0.0
    out.original_max_pos = rope.original_max_position_embeddings or 0


def _baked_norm_offset(spec: ModelSpec, table: Sequence[PlacedTensor], path: Path) -> float:
    """The norm weight offset the table's norm tensors carry (the profile's bake): one value
    for all of them, else the blob is refused (the runtime applies one offset to every norm)."""
    kinds = registry().roles
    offsets = {t.slot.offset for t in table if t.slot.source_roles
               and kinds[t.slot.source_roles[0]].kind == "norm"}
    if len(offsets) > 1:
        raise BlobError(f"{path}: its norm tensors carry different offsets "
                        f"({', '.join(map(str, sorted(offsets)))})")
    offset = offsets.pop() if offsets else 0.0
    if offset and offset != spec.family.features.norm_weight_offset:
        raise BlobError(f"{path}: its norm tensors carry an offset of {offset}, and a "
                        f"{spec.architecture} norm has {spec.family.features.norm_weight_offset}")
    return offset


def _fill_entry(lib: Any, entry: Any, index: int, t: PlacedTensor) -> None:
    """One C table row: the tensor's role, bytes and view (derived from its packing rule).
    Only what cannot be represented in C is refused here; every check of meaning (bounds,
    shapes, duplicates, completeness) is C's."""
    role = getattr(lib, f"BUMP_ROLE_{t.slot.role.upper()}", None)
    where = f"tensor table entry {index} ({t.slot.role}, layer {t.slot.layer})"
    if role is None:
        raise BlobError(f"{where}: role {t.slot.role!r} is not one the runtime reads")
    try:
        view = matrix_view(t.slot)
    except LayoutError as exc:
        raise BlobError(f"{where}: {exc}") from None
    values = {"offset": (t.offset, 0, _U64), "nbytes": (t.nbytes, 0, _U64),
              "layer": (-1 if t.slot.layer is None else t.slot.layer, -2**31, 2**31),
              "numel": (t.slot.numel, -2**63, 2**63)}
    values.update({k: (v, -2**63, 2**63) for k, v in vars(view).items()})
    for name, (value, lo, hi) in values.items():
        if not lo <= value < hi:
            raise BlobError(f"{where}: {name}={value} does not fit the table")
        setattr(entry, name, value)
    entry.role = role
    entry.dtype = int(t.dtype)


def _require_zero(bf: BumpFile, t: PlacedTensor) -> None:
    """A slot the layout defines as all zero must be, or the runtime would silently compute
    something else than the file describes."""
    if t.dtype != DType.FP32:
        raise BlobError(f"{bf.path}: tensor {t.name!r} is {t.dtype.label}; a zero slot must be "
                        "fp32")
    view = bf.array(t.name)
    nonzero = bool(np.any(view))
    del view
    bf.raise_if_changed()
    if nonzero:
        raise BlobError(f"{bf.path}: tensor {t.name!r} is not all zero; the Llama-family "
                        "runtime has no use for it")
