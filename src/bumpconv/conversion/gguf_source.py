"""A GGUF file (llama.cpp's format) as a source: a :class:`.tensor_source.BlockSource`.

The file is read with the maintained ``gguf`` package's memory-mapped ``GGUFReader`` (no second
parser here). What a GGUF means for bumpconv is data: ``schemas/gguf.sources.json`` has the KV
keys standing for config.json's keys (the spec is then built by the same strict
:func:`~bumpconv.format.spec.spec_from_config` as a checkpoint's); the architecture registry
(``schemas/architectures.json``) has which family a ``general.architecture`` is, each role's
GGUF name (so GGUF -> Hugging Face is role by role, in the family's names), and which roles
llama.cpp row-permuted for its interleaved RoPE in which architectures.

Tensors are seen under their Hugging Face names and shapes as fp32 (float tensors widened
exactly, quantized ones dequantized by ``gguf.quants``), un-permuted where llama.cpp permuted,
and with the 1 llama.cpp adds to Gemma's norm weights taken off again (``w - 1`` in fp32,
exactly as transformers' GGUF loader does, so the reference and the blob hold the same bits).
Under ``--quant keep`` a quantized tensor instead goes into the blob block for block:
:meth:`GGUFSource.kept_rows` moves whole ggml rows (un-permuting moves rows, never splits a
block) into the packed layout.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..format.digests import sha256_file
from ..format.dtypes import DType
from ..format.errors import ConfigError, LayoutError, SourceError
from ..format.packing import row_map
from ..format.profile import TensorSlot
from ..format.quant_policy import quant_names
from ..format.registry import Family, registry, require_family
from ..format.spec import ModelSpec, spec_from_config
from ..format.tokenizer_meta import TokenizerMeta
from ..format.vocab import VocabArrays
from .gguf_tokenizer import gguf_tokenizer_section, has_tokenizer, tokenizer_json
from .safetensors_file import TensorInfo
from .tensor_source import Provenance

GGUF_MAGIC = b"GGUF"
#: ggml float types: widened to fp32 exactly.
FLOAT_TYPES = ("F32", "F16", "BF16")
#: ggml quantized types the blob holds byte for byte (format/dtypes.py: same block layouts).
KEPT_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K")
#: Dequantized tensors kept in memory (w1 reads gate and up alternately; one more for luck).
_CACHED = 3


def is_gguf(src: str) -> bool:
    """``src`` names a GGUF file: by suffix, or by its first four bytes."""
    path = Path(src)
    if path.suffix.lower() == ".gguf":
        return True
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(4) == GGUF_MAGIC


@cache
def gguf_schema() -> dict[str, Any]:
    text = resources.files("bumpconv.schemas").joinpath("gguf.sources.json").read_text("utf-8")
    return json.loads(text)


@dataclass(frozen=True)
class GGUFTensor:
    """One GGUF tensor under its Hugging Face name: its ggml type and row permutation."""

    hf_name: str
    gguf_name: str
    ggml_type: str
    #: ``rows[r]``: the GGUF row holding Hugging Face row ``r`` (None: the identity)
    rows: np.ndarray | None
    data: np.ndarray = field(repr=False)
    #: what llama.cpp added to every value and the Hugging Face tensor does not have (Gemma's
    #: norm weights: its writer stores 1 + w for Gemma3RMSNorm's (1 + w) form), 0 for none
    shift: float = 0.0


def llama_permutation(rows: int, heads: int) -> np.ndarray:
    """``rows[r]``: where llama.cpp's ``LlamaModel.permute(w, heads)`` put row ``r``.

    permute reshapes ``[heads, 2, D/2]`` and swaps the last two axes, so the row at (h, half, i)
    moves to (h, i, half): the two rotation halves of each head become interleaved pairs."""
    if rows % (2 * heads):
        raise SourceError(f"{rows} rows cannot be un-permuted for {heads} heads")
    moved = np.arange(rows).reshape(heads, 2, rows // heads // 2).swapaxes(1, 2).reshape(-1)
    return np.argsort(moved)  # moved[j] = the HF row now at GGUF row j; invert it


class GGUFSource:
    """An opened GGUF file: spec, tensor index (HF names, fp32), and dequantizing reads."""

    def __init__(self, path: Path, with_tokenizer: bool = False) -> None:
        self.path = self.root = path
        self.repo_id = self.commit = None
        self.weight_files = [path]
        self.tokenizer: tuple[VocabArrays, TokenizerMeta] | None = None
        self._reader = _open_reader(path)
        self.fields = self._reader.fields
        self.architecture = self._string("general.architecture")
        self.family = _family_of(self.architecture, path)
        raw = {t.name: t for t in self._reader.tensors}
        self.spec = self._spec(raw)
        self.gguf_tensors = self._map_tensors(raw)
        self.tensors = {name: TensorInfo(name, path, "F32", _hf_shape(t.data, t.ggml_type),
                                         0, 4 * math.prod(_hf_shape(t.data, t.ggml_type)))
                        for name, t in self.gguf_tensors.items()}
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        if with_tokenizer and has_tokenizer(self._value):
            self.tokenizer = gguf_tokenizer_section(self._value, gguf_schema()["tokenizer"],
                                                    self.spec.vocab_size, path)

    # -- the model spec ------------------------------------------------------------------
    def _value(self, key: str) -> Any:
        f = self.fields.get(key)
        if f is None:
            return None
        try:
            return f.contents()
        except Exception as exc:  # the reader's own decoding of a damaged field
            raise SourceError(f"{self.path}: GGUF key {key!r} cannot be read ({exc})") from None

    def _string(self, key: str) -> str:
        value = self._value(key)
        if value is None:
            raise SourceError(f"{self.path}: required GGUF key {key!r} is missing")
        if not isinstance(value, str):
            raise SourceError(f"{self.path}: GGUF key {key!r} must be a string, not "
                              f"{type(value).__name__}")
        return value

    def _spec(self, raw: dict[str, Any]) -> ModelSpec:
        schema, arch = gguf_schema(), self.architecture
        cfg: dict[str, Any] = {"model_type": self.family.name}
        for item in schema["config"]:
            key = item["key"].format(arch=arch)
            value = self._value(key)
            if value is None:
                if "default" in item:
                    value = item["default"]
                elif item.get("optional"):
                    continue
                else:
                    raise SourceError(f"{self.path}: required GGUF key {key!r} is missing")
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not numeric or (item["type"] == "int" and not float(value).is_integer()):
                kind = "an integer" if item["type"] == "int" else "a number"
                raise SourceError(f"{self.path}: GGUF key {key!r} must be {kind}, not {value!r}")
            cfg[item["config"]] = int(value) if item["type"] == "int" else float(value)
        for key, allowed in schema["refused_keys"].items():
            value = self._value(key.format(arch=arch))
            if value is not None and value not in allowed:
                why = schema["refused_keys_why"].get(key)
                raise ConfigError(f"{self.path}: GGUF key {key.format(arch=arch)!r} = {value!r} "
                                  "is not supported" + (f": {why}" if why else ""))
        for name, why in schema["refused_tensors"].items():
            if name in raw:
                raise ConfigError(f"{self.path}: has {name}: {why}")
        dims = self._value(f"{arch}.rope.dimension_count")
        head_dim = cfg.get("head_dim", cfg["hidden_size"] // max(1, cfg["num_attention_heads"]))
        if dims is not None and dims != head_dim:
            raise ConfigError(f"{self.path}: {arch}.rope.dimension_count={dims} rotates part of "
                              f"a head of {head_dim}; partial rotary is not supported")
        emb = raw.get("token_embd.weight")
        if emb is None:
            raise SourceError(f"{self.path}: tensor 'token_embd.weight' is missing")
        cfg["vocab_size"] = _hf_shape(emb.data, emb.tensor_type.name)[0]
        declared = self._value(f"{arch}.vocab_size")
        if declared is not None and declared != cfg["vocab_size"]:
            raise SourceError(f"{self.path}: {arch}.vocab_size={declared} but token_embd.weight "
                              f"has {cfg['vocab_size']} rows")
        cfg["tie_word_embeddings"] = "output.weight" not in raw
        spec = spec_from_config(cfg, f"{self.path} (GGUF keys)")
        scalar = spec.query_pre_attn_scalar
        if scalar is not None and scalar != spec.head_dim:
            # no GGUF key holds it: transformers' loader takes its config class default, and
            # llama.cpp scales by 1/sqrt(head_dim) (27B models aside); they disagree here
            raise ConfigError(f"{self.path}: the GGUF does not record query_pre_attn_scalar; "
                              f"transformers' GGUF loader takes {scalar:g} and llama.cpp scales "
                              f"attention by head_dim={spec.head_dim} instead, so the file has "
                              "no one meaning")
        return spec

    # -- tensors ---------------------------------------------------------------------------
    def _map_tensors(self, raw: dict[str, Any]) -> dict[str, GGUFTensor]:
        """Every GGUF tensor under the Hugging Face name the family gives its role."""
        out: dict[str, GGUFTensor] = {}
        by_gguf = {}
        assert self.family.gguf is not None
        permuted = self.family.gguf.rope_permuted
        for role, info in registry().roles.items():
            if not self.family.has(role):
                continue
            layers = range(self.spec.num_layers) if info.scope == "layer" else [None]
            for layer in layers:
                gguf = info.gguf if layer is None else info.gguf.replace("{layer}", str(layer))
                shift = self.family.features.norm_weight_offset if info.kind == "norm" else 0.0
                by_gguf[gguf] = (self.family.hf_name(role, layer),
                                 info.unpermute if permuted else None, shift)
        for name, t in raw.items():
            if name not in by_gguf:
                raise SourceError(f"{self.path}: GGUF tensor {name!r} has no Hugging Face "
                                  f"counterpart for a {self.architecture} model")
            hf, heads_field, shift = by_gguf[name]
            qtype = t.tensor_type.name
            shape = _hf_shape(t.data, qtype)
            rows = None
            if heads_field:
                rows = llama_permutation(shape[0], getattr(self.spec, heads_field))
            out[hf] = GGUFTensor(hf, name, qtype, rows, t.data, shift)
        return out

    def _dequantized(self, name: str) -> np.ndarray:
        """The whole tensor as fp32 in Hugging Face order (the last few are cached)."""
        hit = self._cache.get(name)
        if hit is not None:
            self._cache.move_to_end(name)
            return hit
        t = self.gguf_tensors[name]
        try:
            values = _to_fp32(t)
        except (ValueError, NotImplementedError, TypeError, IndexError) as exc:
            raise SourceError(f"{self.path}: tensor {t.gguf_name!r} ({t.ggml_type}) cannot be "
                              f"read: {exc}") from None
        if t.rows is not None:
            values = values.reshape(len(t.rows), -1)[t.rows]
        values = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        if t.shift:  # as transformers' GGUF loader undoes it: ``weights - 1`` in fp32
            values = values - np.float32(t.shift)
        self._cache[name] = values
        while len(self._cache) > _CACHED:
            self._cache.popitem(last=False)
        return values

    def read(self, name: str, start: int, count: int, out: np.ndarray | None = None) -> np.ndarray:
        """Elements ``[start, start+count)`` of HF tensor ``name`` as fp32, into ``out`` when
        given (the checkpoint source's interface)."""
        values = self._dequantized(name)[start:start + count]
        if out is None:
            return values.copy()
        out[:count] = values
        return out[:count]

    def read_raw(self, name: str, start: int, count: int) -> np.ndarray:
        """The same values as :meth:`read` (a GGUF source is always seen as fp32)."""
        return self._dequantized(name)[start:start + count]

    def read_all(self, name: str) -> np.ndarray:
        return self._dequantized(name).reshape(self.tensors[name].shape)

    # -- --quant keep --------------------------------------------------------------------------
    def kept_dtype(self, slot: TensorSlot) -> DType:
        """The dtype ``slot`` gets under ``--quant keep``: fp32 for float sources, the source's
        own quantized type when the blob can hold its blocks as they are; else a LayoutError
        naming the tensor and its type."""
        if slot.content != "weights" or slot.zeros or len(slot.shape) < 2 or not slot.sources:
            return slot.dtype
        kinds = {self.gguf_tensors[n].ggml_type for n in slot.sources if n in self.gguf_tensors}
        if not kinds or kinds <= set(FLOAT_TYPES):
            return DType.FP32
        first = self.gguf_tensors[slot.sources[0]]
        if len(kinds) > 1:
            raise LayoutError(f"{self.path}: {slot.name} packs GGUF tensors of types "
                              f"{', '.join(sorted(kinds))}; {_SUGGEST}")
        qtype = kinds.pop()
        if qtype not in KEPT_TYPES:
            raise LayoutError(f"{self.path}: tensor {first.gguf_name!r} is {qtype}, which the "
                              f"blob format cannot hold as it is; {_SUGGEST}")
        dtype = DType[qtype.upper()]
        why = _unkeepable(slot, dtype, self.tensors[slot.sources[0]].shape)
        if why:
            raise LayoutError(f"{self.path}: tensor {first.gguf_name!r} ({qtype}) cannot pass "
                              f"through into {slot.name}: {why}; {_SUGGEST}")
        return dtype

    def kept_rows(self, slot: TensorSlot, dtype: DType) -> np.ndarray:
        """The packed tensor ``slot`` as ggml blocks, rows ``[rows][bytes]``, copied from the
        GGUF's own blocks (Q/K rows un-permuted)."""
        rm = row_map(slot)
        block = dtype.block
        # padding: all-zero blocks, which every kept type dequantizes to 0.0 (scales are 0)
        out = np.zeros((rm.rows, rm.width // block.elements * block.nbytes), dtype=np.uint8)
        for k, name in enumerate(slot.sources):
            t = self.gguf_tensors[name]
            cols = self.tensors[name].shape[-1]
            data = t.data.reshape(-1, cols // block.elements * block.nbytes)
            mine = rm.src_index == k
            hf_rows, first_cols = np.divmod(rm.src_start[mine], cols)
            gguf_rows = t.rows[hf_rows] if t.rows is not None else hf_rows
            for c in np.unique(first_cols):
                at = first_cols == c
                b0 = int(c) // block.elements * block.nbytes
                width = rm.run // block.elements * block.nbytes
                out[rm.pad_rows[mine][at], :width] = data[gguf_rows[at], b0:b0 + width]
        return out

    @property
    def has_tokenizer(self) -> bool:
        """The file has tokenizer keys (``tokenizer.ggml.model``)."""
        return has_tokenizer(self._value)

    def tokenizer_document(self) -> dict[str, Any]:
        """The tokenizer.json the blob's tokenizer must rebuild (transformers' from the keys)."""
        return tokenizer_json(self._value, gguf_schema()["tokenizer"], self.path)

    # -- the TensorSource interface ------------------------------------------------------------
    def input_files(self) -> list[Path]:
        return [self.path]

    def provenance(self, hash_files: bool = True) -> Provenance:
        """The file's name, size and SHA-256 (no path: the same file gives the same blob)."""
        digest = sha256_file(self.path) if hash_files else None
        return Provenance("gguf", ((self.path.name, self.path.stat().st_size, digest),))

    def close(self) -> None:
        self._cache.clear()

    def __enter__(self) -> "GGUFSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SUGGEST = "convert with --quant f32 (dequantize) or --quant TYPE (dequantize, re-quantize)"


def requantize_warning(source: object, quant: str | None) -> str | None:
    """What to tell a user who re-quantizes an already quantized GGUF (``--quant TYPE``): its
    blocks are dequantized and rounded a second time (llama.cpp's quantize refuses this
    without ``--allow-requantize``); None for anything else."""
    if not isinstance(source, GGUFSource) or quant not in quant_names():
        return None
    kinds = sorted({t.ggml_type for t in source.gguf_tensors.values()} - set(FLOAT_TYPES))
    if not kinds:
        return None
    return (f"{source.path}: its tensors are already quantized ({', '.join(kinds)}); --quant "
            f"{quant} dequantizes them and rounds them again, so the blob carries both errors "
            "(llama.cpp asks for --allow-requantize); --quant keep keeps its own blocks")


def _unkeepable(slot: TensorSlot, dtype: DType, source_shape: tuple[int, ...]) -> str | None:
    """Why ``slot``'s packed rows are not whole blocks of its source rows, or None."""
    rm = row_map(slot)
    n = dtype.block.elements
    if rm.width % n or rm.run % n:
        return f"its packed rows of {rm.run} values (padded to {rm.width}) are not whole " \
               f"{dtype.label} blocks of {n}"
    if np.any(rm.src_start % source_shape[-1] % n):
        return f"its packed rows start inside a {dtype.label} block of the source row"
    return None


def _family_of(architecture: str, path: Path) -> Family:
    """The supported family llama.cpp writes as ``architecture``, else a ConfigError."""
    reg = registry()
    family = reg.gguf_family(architecture)
    if family is None:
        known = [f.gguf.architecture for n in reg.supported()
                 if (f := reg.families[n]).gguf is not None]
        raise ConfigError(f"{path}: GGUF architecture {architecture!r} is not supported "
                          f"(supported: {', '.join(known)})")
    return require_family(family.name, f"{path} (GGUF architecture {architecture!r})")


def _hf_shape(data: np.ndarray, qtype: str) -> tuple[int, ...]:
    """The Hugging Face shape of a GGUF tensor (rows first); a quantized row's bytes are
    counted back to values by its block geometry."""
    if data.dtype != np.uint8:
        return tuple(int(d) for d in data.shape)
    elements, nbytes = _ggml_blocks()[qtype]
    return (*(int(d) for d in data.shape[:-1]), int(data.shape[-1]) // nbytes * elements)


@cache
def _ggml_blocks() -> dict[str, tuple[int, int]]:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    return {t.name: GGML_QUANT_SIZES[t] for t in GGMLQuantizationType}


def _to_fp32(t: GGUFTensor) -> np.ndarray:
    if t.ggml_type == "F32":
        return np.asarray(t.data, dtype=np.float32)
    if t.ggml_type == "F16":
        return np.asarray(t.data).astype(np.float32)
    from gguf.constants import GGMLQuantizationType
    from gguf.quants import dequantize
    return dequantize(np.asarray(t.data), GGMLQuantizationType[t.ggml_type])


def _open_reader(path: Path) -> Any:
    """``GGUFReader(path)``; every failure is a SourceError naming the file."""
    if not path.is_file():
        raise SourceError(f"{path}: no such GGUF file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise SourceError(f"{path}: not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
    try:
        from gguf import GGUFReader
    except ImportError:  # pragma: no cover - gguf is a dependency
        raise SourceError(f"{path}: reading GGUF needs the 'gguf' package") from None

    class Reader(GGUFReader):
        def _build_tensors(self, start_offs: int, fields: list[Any]) -> None:
            """GGUFReader's, with a tensor that runs past the end of the file named (its own
            error is numpy's reshape of a short slice)."""
            try:
                super()._build_tensors(start_offs, fields)
            except ValueError:
                _raise_if_truncated(path, start_offs, fields, len(self.data))
                raise

    try:
        return Reader(path, "r")
    except SourceError:
        raise
    except Exception as exc:  # the reader raises ValueError, IndexError, struct errors...
        raise SourceError(f"{path}: not a readable GGUF file "
                          f"({type(exc).__name__}: {exc})") from None


def _raise_if_truncated(path: Path, start: int, fields: list[Any], size: int) -> None:
    """A SourceError naming the first tensor whose data (by its tensor info) ends past the
    file's ``size`` bytes: a truncated download or copy."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    for f in fields:
        _, name, _, dims, raw_type, offset = f.parts
        try:
            qtype = GGMLQuantizationType(int(raw_type[0]))
        except ValueError:
            return
        elements, nbytes = GGML_QUANT_SIZES[qtype]
        end = start + int(offset[0]) + math.prod(int(d) for d in dims) * nbytes // elements
        if end > size:
            raise SourceError(
                f"{path}: truncated: tensor {bytes(name).decode('utf-8', 'replace')!r} "
                f"({qtype.name}) ends at byte {end:,} but the file has {size:,} bytes "
                "(an incomplete download or copy?)") from None


def open_gguf(src: str, with_tokenizer: bool = False) -> GGUFSource:
    """Open ``src`` as a GGUF source; ``with_tokenizer``: also build its tokenizer section."""
    return GGUFSource(Path(src), with_tokenizer)
