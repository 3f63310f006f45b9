"""Profiles: a bump layout's header, dtype table, tensor order and packing, as data.

"Profile" is the one word for a layout bumpconv can write or read: ``convert --profile NAME``,
the file ``schemas/NAME.profile.json`` (an instance of :class:`Profile`), ``bumpconv.profile``
in a blob's metadata, and its hash, which the metadata carries under the engine's key name
``template_hash``. The converter,
the reader, ``verify`` and the runtime all expand the same profile against a
:class:`~bumpconv.format.spec.ModelSpec` (:func:`expand_tensors`), so there is exactly one description
of where each tensor lives and how it is packed.

A tensor rule names its sources by role (``wq``, ``w1.gate``: the roles of the architecture
registry, :mod:`.registry`), never by Hugging Face name, so one layout serves every family:
expanding a profile for a model resolves each role to the name its family gives it. Its
``when`` (and ``sources_when``, and a refusal's ``flag``) is a condition: a spec flag or a
family feature (:meth:`ModelSpec.flags`), negated by a leading ``!``.

A tensor rule says how its packed array is made from its sources, in three steps that are
each trivially invertible:

1. ``stack`` the sources (when there is more than one) along a new leading axis,
2. ``reshape`` the result to ``view`` (default: ``box``),
3. ``transpose`` it by ``axes`` (default: identity); the result has shape ``box``.

The packed tensor has shape ``shape`` (the padded extents); the ``box`` corner holds the data
and everything else is zero. Shapes are written in the symbols of :meth:`ModelSpec.dims`
(``"H*D"``, ``"AE"``, ``"2"``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from collections.abc import Iterable
from typing import Callable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .dtypes import DType, dtype_named
from .errors import LayoutError
from .registry import Family, registry

_EXPR = re.compile(r"^[A-Z0-9]+([*/][A-Z0-9]+)*$")
_CONDITION = re.compile(r"^!?[a-z][a-z0-9_]*$")


def holds(condition: str | None, flags: dict[str, bool]) -> bool:
    """Whether a rule's condition holds for a model's flags (None: always; ``!x``: not x)."""
    if condition is None:
        return True
    name = condition.removeprefix("!")
    if name not in flags:
        raise LayoutError(f"unknown condition {name!r} (known: {', '.join(sorted(flags))})")
    return flags[name] != condition.startswith("!")


def _check_condition(value: str | None) -> str | None:
    if value is not None and not _CONDITION.match(value):
        raise ValueError(f"condition {value!r} must be a flag name, or '!' and one")
    return value


def evaluate(expr: str, dims: dict[str, int]) -> int:
    """Evaluate a shape expression such as ``"H*D"`` or ``"E/H"`` (left to right, exact)."""
    if not _EXPR.match(expr):
        raise LayoutError(f"bad shape expression {expr!r}")
    tokens = re.split(r"([*/])", expr)
    value = _atom(tokens[0], dims)
    for op, atom in zip(tokens[1::2], tokens[2::2]):
        rhs = _atom(atom, dims)
        if op == "*":
            value *= rhs
        else:
            if rhs == 0 or value % rhs:
                raise LayoutError(f"{expr} is not an exact division ({value}/{rhs})")
            value //= rhs
    return value


def _atom(token: str, dims: dict[str, int]) -> int:
    if token.isdigit():
        return int(token)
    if token not in dims:
        raise LayoutError(f"unknown dimension symbol {token!r}")
    return dims[token]


class HeaderField(BaseModel):
    """One field of the fixed 128-byte header (or of a wider engine variant)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    offset: int = Field(ge=0)
    type: Literal["magic", "version", "u32", "u64", "sha256", "zeros"] = Field(
        description="magic and version hold the file's magic and version; sha256 the checksum")
    size: int | None = Field(default=None, gt=0, description="byte size, for 'zeros' only")
    value: str | int | None = Field(
        default=None,
        description="a dimension expression, an integer constant, or null for a field whose "
                    "value bumpconv does not interpret (engine-only fields)")

    @property
    def nbytes(self) -> int:
        return {"magic": 8, "version": 4, "u32": 4, "u64": 8, "sha256": 32}.get(self.type) or int(self.size or 0)


class HeaderVariant(BaseModel):
    """A header layout. The first variant of a profile is the one bumpconv writes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    fields: tuple[HeaderField, ...]
    dtype_table_offset: int = Field(ge=0)
    trailing_data: bool = Field(
        default=False, json_schema_extra={"hashed": False},
        description="files of this variant may carry data after the payload (the engine's GGUF "
                    "writers append vocab data)")

    @model_validator(mode="after")
    def _no_overlap(self) -> "HeaderVariant":
        end = 0
        for f in sorted(self.fields, key=lambda f: f.offset):
            if f.offset < end:
                raise ValueError(f"header field {f.name!r} overlaps the previous field")
            end = f.offset + f.nbytes
        if end > self.dtype_table_offset:
            raise ValueError("header fields run past the dtype table")
        return self


class TensorRule(BaseModel):
    """One packed tensor: where its data comes from and how it is laid out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="packed tensor name; '{layer}' is replaced by the layer index")
    role: str = Field(description="what the tensor means to a runtime (wq, ln1, lm_head, ...)")
    when: str | None = Field(default=None, description="condition under which the tensor exists")
    sources_when: str | None = Field(
        default=None, description="condition under which the sources exist; otherwise zero-filled")
    shape: tuple[str, ...] = Field(description="packed (padded) shape")
    box: tuple[str, ...] | None = Field(
        default=None, description="extent of real data in the packed shape; null = all zeros")
    sources: tuple[str, ...] = Field(
        default=(), json_schema_extra={"hashed": "as-names"},
        description="the roles (schemas/architectures.json) of the source tensors, stacked in "
                    "this order; each family names them")
    source_shape: tuple[str, ...] | None = Field(
        default=None, description="expected shape of every source tensor")
    view: tuple[str, ...] | None = None
    axes: tuple[int, ...] | None = None
    content: Literal["weights", "tokenizer"] = Field(
        default="weights", json_schema_extra={"hashed": "if-set"},
        description="weights: packed from sources (zeros without); tokenizer: one of the "
                    "engine's vocab arrays, built from the source's tokenizer (the rule's name)")
    dtype: str = Field(default="fp32", json_schema_extra={"hashed": "if-set"},
                       description="element type of an unquantized tensor (a DType label)")

    @model_validator(mode="after")
    def _consistent(self) -> "TensorRule":
        _check_condition(self.when)
        _check_condition(self.sources_when)
        roles = registry().roles
        for role in self.sources:
            if role not in roles:
                raise ValueError(f"{self.name}: source {role!r} is not a role of the architecture "
                                 f"registry ({', '.join(roles)})")
        if self.content == "tokenizer" and (self.sources or self.box is not None):
            raise ValueError(f"{self.name}: tokenizer arrays have no sources and no box")
        if self.dtype.upper() not in DType.__members__:
            raise ValueError(f"{self.name}: unknown dtype {self.dtype!r}")
        if self.content == "weights" and (self.box is None) != (not self.sources):
            raise ValueError(f"{self.name}: a tensor has a box exactly when it has sources")
        if self.box is not None:
            if len(self.box) != len(self.shape):
                raise ValueError(f"{self.name}: box and shape differ in rank")
            if self.source_shape is None:
                raise ValueError(f"{self.name}: sources need a source_shape")
            view = self.view or self.box
            axes = self.axes or tuple(range(len(view)))
            if sorted(axes) != list(range(len(view))) or len(view) != len(self.box):
                raise ValueError(f"{self.name}: axes must permute the view's axes")
            if axes[-1] != len(view) - 1:
                raise ValueError(f"{self.name}: the last axis must stay last (rows are streamed)")
        return self


class Bake(BaseModel):
    """A value the profile's tensors carry already applied: under ``when``, every tensor whose
    sources are roles of ``kind`` is packed as (the family's ``norm_weight_offset`` + w),
    computed in fp32 as transformers computes the factor it multiplies by (Gemma's (1 + w)),
    for a runtime whose RMSNorm has no offset form."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    when: str = Field(description="condition under which the offset is baked")
    kind: Literal["norm"] = Field(description="the registry role kind whose tensors carry it")
    description: str = Field(default="", json_schema_extra={"hashed": False})

    @model_validator(mode="after")
    def _condition(self) -> "Bake":
        _check_condition(self.when)
        return self


class LayerGroup(BaseModel):
    """Rules repeated for every layer, in order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_layer: tuple[TensorRule, ...]


class Refusal(BaseModel):
    """A condition under which the profile cannot represent the model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flag: str
    message: str

    @model_validator(mode="after")
    def _condition(self) -> "Refusal":
        _check_condition(self.flag)
        return self


class Requirement(BaseModel):
    """Two dimension expressions that must be equal for the profile to represent the model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    left: str
    right: str
    message: str


class ReadMagic(BaseModel):
    """A magic this profile's reader accepts (engine-written files of older versions)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    magic: str = Field(min_length=8, max_length=8)
    version: int
    metadata: bool = Field(description="whether files with this magic end in JSON + footer")


def _field_offset(f: object) -> int:
    offset = f.get("offset") if isinstance(f, dict) else getattr(f, "offset", 0)
    return offset if isinstance(offset, int) else 0


class Profile(BaseModel):
    """A complete bump layout: header variants, dtype table, checksum coverage, tensor order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str
    description: str
    magic: str = Field(min_length=8, max_length=8)
    version: int
    reads: tuple[ReadMagic, ...] = Field(description="every magic the reader accepts")
    header_fields: tuple[HeaderField, ...] = Field(
        default=(), json_schema_extra={"hashed": False},
        description="fields every header variant shares; each variant's 'fields' adds its own")
    headers: tuple[HeaderVariant, ...] = Field(
        min_length=1, description="header variants, the written one first; each variant's "
                                  "fields are completed with header_fields when loaded")
    dtype_enum: Literal["current", "legacy"]
    checksum_field: str
    checksum_covers: Literal["payload_end", "file_end"] = Field(
        description="the checksum covers [dtype table offset, this point)")
    refuse: tuple[Refusal, ...] = ()
    require: tuple[Requirement, ...] = ()
    bake: tuple[Bake, ...] = Field(
        default=(), json_schema_extra={"hashed": "if-set"},
        description="values the tensors carry already applied (Gemma's norm weight offset)")
    sidecars: Literal["engine-v7"] | None = Field(
        default=None, json_schema_extra={"hashed": False},
        description="files written next to the blob by default: 'engine-v7' = the engine's "
                    "weights_manifest.json/.map and build config.json")
    tensors: tuple[Union[TensorRule, LayerGroup], ...]

    @model_validator(mode="before")
    @classmethod
    def _share_header_fields(cls, data: object) -> object:
        """Complete every variant with the shared fields (sorted by offset), so that code and
        the profile hash see whole variants."""
        if not isinstance(data, dict) or not data.get("header_fields"):
            return data
        shared = list(data["header_fields"])
        variants = []
        for v in data.get("headers", ()):
            if isinstance(v, dict):
                own = list(v.get("fields", ()))
                names = {f.get("name") if isinstance(f, dict) else f.name for f in own}
                merged = [f for f in shared if (f.get("name") if isinstance(f, dict)
                                                else f.name) not in names] + own
                v = {**v, "fields": sorted(merged, key=_field_offset)}
            variants.append(v)
        return {**data, "headers": variants}

    @model_validator(mode="after")
    def _source_scopes(self) -> "Profile":
        """A per-layer rule reads per-layer roles; any other rule, global ones."""
        roles = registry().roles
        for item in self.tensors:
            scope, rules = (("layer", item.per_layer) if isinstance(item, LayerGroup)
                            else ("global", (item,)))
            for rule in rules:
                for role in rule.sources:
                    if roles[role].scope != scope:
                        raise ValueError(f"{rule.name}: source {role!r} is a "
                                         f"{roles[role].scope} role, the rule a {scope} one")
        return self

    @property
    def carries_tokenizer(self) -> bool:
        """Whether the profile has slots for the tokenizer's arrays."""
        return any(r.content == "tokenizer" for r in self.rules())

    @property
    def writes_metadata(self) -> bool:
        """Whether files this profile writes end in the metadata JSON and footer."""
        return next(r.metadata for r in self.reads if r.magic == self.magic)

    def flags_used(self) -> tuple[str, ...]:
        """Every flag some rule's, refusal's or bake's condition names, sorted."""
        conditions = {r.flag for r in self.refuse} | {b.when for b in self.bake}
        for rule in self.rules():
            conditions.update(c for c in (rule.when, rule.sources_when) if c)
        return tuple(sorted({c.removeprefix("!") for c in conditions}))

    def tensor_count(self, layers: int, flags: dict[str, bool], sources: bool = False) -> int:
        """How many tensors (or, with ``sources``, source tensors) the profile has for a model,
        computed without expanding it, so that a damaged header's or a hostile config's layer
        count cannot make anyone build a huge list."""
        def count(r: TensorRule) -> int:
            if not holds(r.when, flags):
                return 0
            if not sources:
                return 1
            return len(r.sources) if holds(r.sources_when, flags) else 0
        total = 0
        for item in self.tensors:
            if isinstance(item, LayerGroup):
                total += layers * sum(count(r) for r in item.per_layer)
            else:
                total += count(item)
        return total

    def rules(self) -> list[TensorRule]:
        out: list[TensorRule] = []
        for item in self.tensors:
            out.extend(item.per_layer if isinstance(item, LayerGroup) else (item,))
        return out


#: The profile ``convert`` writes when none is named.
DEFAULT_PROFILE = "engine-v7"
_SUFFIX = ".profile.json"


def _discover() -> tuple[str, ...]:
    """Every profile shipped in ``bumpconv.schemas``, the default first, then by name."""
    names = sorted(p.name.removesuffix(_SUFFIX) for p in resources.files("bumpconv.schemas")
                   .iterdir() if p.name.endswith(_SUFFIX))
    return tuple(sorted(names, key=lambda n: n != DEFAULT_PROFILE))


PROFILES = _discover()


@cache
def load_profile(name: str) -> Profile:
    """Load ``schemas/<name>.profile.json`` (shipped inside the package as bumpconv.schemas)."""
    if name not in PROFILES:
        raise LayoutError(f"unknown profile {name!r} (known: {', '.join(PROFILES)})")
    text = resources.files("bumpconv.schemas").joinpath(name + _SUFFIX).read_text("utf-8")
    return Profile.model_validate_json(text)


def profile_hash(name: str, flags: dict[str, bool] | None = None) -> str:
    """SHA-256 of the canonical JSON of a profile as it applies to a model with ``flags``:
    identifies the exact layout a file used (the metadata's ``template_hash``).

    What the hash leaves out, each so that an unchanged layout keeps its identity:

    * fields marked ``hashed: False``, which only guide reading or source selection, never
      the bytes written;
    * fields marked ``hashed: "if-set"`` at their default (a field added later counts only
      where a profile uses it);
    * a tensor rule, refusal or bake under a condition of the registry's ``hash_if_held`` (a
      condition added after the hashes were published, such as Gemma's ``post_norms``) that
      does not hold for the model: the same principle for items, a rule added later counts only
      for the models it applies to. Without ``flags`` every such item is left out: the profile
      as every model that has none of those conditions sees it.

    Role sources (``hashed: "as-names"``) are hashed as the HF names the profiles spelled
    before they named roles (:meth:`~.registry.Registry.hash_name`), so no layout changed
    identity by that move."""
    later = registry().hash_if_held
    held = frozenset(c for c in later if flags is not None and flags.get(c))
    return _profile_hash(name, held)


@cache
def _profile_hash(name: str, held: frozenset[str]) -> str:
    canon = json.dumps(_hashed_dump(load_profile(name), held), sort_keys=True,
                       separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canon.encode()).hexdigest()


def _hashed_dump(model: BaseModel, held: frozenset[str]) -> dict:
    out = {}
    for key, info in type(model).model_fields.items():
        extra = info.json_schema_extra
        hashed = extra.get("hashed") if isinstance(extra, dict) else True
        value = getattr(model, key)
        if isinstance(value, tuple):
            value = tuple(v for v in value if _applies(v, held))
        if hashed is False or (hashed == "if-set" and value == info.default):
            continue  # "if-set": a field added later counts only where a profile uses it
        if hashed == "as-names":
            value = tuple(registry().hash_name(role) for role in value)
        out[key] = _hashed_value(value, held)
    return out


def _applies(item: object, held: frozenset[str]) -> bool:
    """False for a rule, refusal or bake gated on a later (``hash_if_held``) condition that
    does not hold for the model being hashed for."""
    condition = (getattr(item, "flag", None) if isinstance(item, Refusal)
                 else getattr(item, "when", None))
    if not isinstance(item, BaseModel) or condition is None:
        return True
    name = condition.removeprefix("!")
    if name not in registry().hash_if_held:
        return True
    return (name in held) != condition.startswith("!")


def _hashed_value(value: object, held: frozenset[str]) -> object:
    if isinstance(value, BaseModel):
        return _hashed_dump(value, held)
    if isinstance(value, (tuple, list)):
        return [_hashed_value(v, held) for v in value]
    return value


@dataclass(frozen=True)
class TensorSlot:
    """A rule expanded for one model: concrete names, shapes and byte size (no offset yet)."""

    name: str
    role: str
    layer: int | None
    shape: tuple[int, ...]
    box: tuple[int, ...] | None
    sources: tuple[str, ...]
    """The source tensors' names: the model family's Hugging Face names; the role names when
    the family is unknown (a blob read without metadata or config)."""
    source_roles: tuple[str, ...]
    source_shape: tuple[int, ...] | None
    view: tuple[int, ...] | None
    axes: tuple[int, ...] | None
    content: str = "weights"
    dtype: DType = DType.FP32
    offset: float = 0.0
    """A constant the packed data carries added to every source value, in fp32 (a baked norm
    weight offset: :class:`Bake`); 0 for data stored as the source has it."""

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def zeros(self) -> bool:
        """Weights with no sources: all zero by the profile's definition."""
        return self.content == "weights" and self.box is None


def check_representable(profile: Profile, dims: dict[str, int],
                        flags: dict[str, bool]) -> None:
    """Raise LayoutError when the profile cannot hold this model (refusals, requirements)."""
    for refusal in profile.refuse:
        if holds(refusal.flag, flags):
            raise LayoutError(f"{profile.profile}: {refusal.message}")
    for req in profile.require:
        left, right = evaluate(req.left, dims), evaluate(req.right, dims)
        if left != right:
            raise LayoutError(f"{profile.profile}: {req.message} ({req.left}={left}, {req.right}={right})")


def expand_tensors(profile: Profile, dims: dict[str, int], flags: dict[str, bool],
                   family: Family | None) -> list[TensorSlot]:
    """The profile's payload tensors for one model, in file order, their sources named as
    ``family`` names them (None: by role, for a blob whose family is unknown)."""
    check_representable(profile, dims, flags)
    baked = {b.kind for b in profile.bake if holds(b.when, flags)}
    if baked and family is None:
        raise LayoutError(f"{profile.profile}: its tensors carry a family's norm weight offset, "
                          "and the model's family is unknown")
    slots: list[TensorSlot] = []
    for item in profile.tensors:
        if isinstance(item, LayerGroup):
            for layer in range(dims["L"]):
                slots.extend(_expand_rule(r, dims, flags, layer, family, baked)
                             for r in item.per_layer if holds(r.when, flags))
        elif holds(item.when, flags):
            slots.append(_expand_rule(item, dims, flags, None, family, baked))
    return slots


def _expand_rule(rule: TensorRule, dims: dict[str, int], flags: dict[str, bool],
                 layer: int | None, family: Family | None, baked: set[str]) -> TensorSlot:
    def ints(exprs: tuple[str, ...] | None) -> tuple[int, ...] | None:
        return None if exprs is None else tuple(evaluate(e, dims) for e in exprs)

    def named(template: str) -> str:
        return template if layer is None else template.replace("{layer}", str(layer))

    has_sources = bool(rule.sources) and holds(rule.sources_when, flags)
    shape = ints(rule.shape)
    assert shape is not None
    box = ints(rule.box) if has_sources else None
    offset = 0.0
    if has_sources and baked and family is not None:
        roles = registry().roles
        if all(roles[r].kind in baked for r in rule.sources):
            offset = family.features.norm_weight_offset
    if box is not None and any(b > s for b, s in zip(box, shape)):
        raise LayoutError(f"{named(rule.name)}: data box {box} exceeds packed shape {shape}")
    return TensorSlot(
        name=named(rule.name),
        role=rule.role,
        layer=layer,
        shape=shape,
        box=box,
        sources=tuple(role if family is None else family.hf_name(role, layer)
                      for role in rule.sources) if has_sources else (),
        source_roles=rule.sources if has_sources else (),
        source_shape=ints(rule.source_shape) if has_sources else None,
        view=ints(rule.view) if has_sources else None,
        axes=rule.axes if has_sources else None,
        content=rule.content,
        dtype=dtype_named(rule.dtype),
        offset=offset,
    )


@dataclass(frozen=True)
class PlacedTensor:
    """A slot at its place in a file: what the writer plans, the reader finds and the runtime
    binds (one record for all three; ``crc32`` is known once a manifest records it)."""

    slot: TensorSlot
    offset: int
    dtype: DType = DType.FP32
    nbytes: int = -1
    crc32: str | None = None

    def __post_init__(self) -> None:
        if self.nbytes < 0:
            object.__setattr__(self, "nbytes", self.dtype.nbytes(self.slot.numel))

    @property
    def name(self) -> str:
        return self.slot.name

    @property
    def end(self) -> int:
        return self.offset + self.nbytes


def place_tensors(profile: Profile, dims: dict[str, int], flags: dict[str, bool],
                  family: Family | None, table_offset: int | None = None,
                  dtype_of: Callable[[TensorSlot], DType] | None = None) -> tuple[PlacedTensor, ...]:
    """Expand a profile for ``family`` (see :func:`expand_tensors`) and place its tensors back
    to back after the dtype table, each of its rule's dtype unless ``dtype_of`` says otherwise
    (a quantization policy)."""
    slots = expand_tensors(profile, dims, flags, family)
    if table_offset is None:
        table_offset = profile.headers[0].dtype_table_offset
    offset = table_offset + 4 + len(slots)
    out = []
    for slot in slots:
        dtype = dtype_of(slot) if dtype_of is not None else slot.dtype
        out.append(PlacedTensor(slot, offset, dtype))
        offset += out[-1].nbytes
    return tuple(out)


def bits_per_weight(tensors: Iterable[PlacedTensor]) -> float:
    """Bits of the weights (not the tokenizer's arrays) per carried parameter."""
    weights = [t for t in tensors if t.slot.content == "weights" and t.slot.box is not None]
    params = sum(math.prod(t.slot.box) for t in weights)  # type: ignore[arg-type]
    return round(8 * sum(t.nbytes for t in weights) / params, 4) if params else 0.0
