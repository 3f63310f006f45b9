"""The architecture registry: every model family bumpconv knows, as data.

In the spirit of gguf-py's ``MODEL_TENSORS`` + ``TensorNameMap``, ``schemas/architectures.json``
(an instance of :class:`Registry`) says once, per family, what everything else derives:

* its **roles** (the tensors a decoder has: ``wq``, ``ln2``, ``w1.gate``, ...) and the Hugging
  Face name of each, per layer and global. Profiles name roles, never HF tensors, so a layout
  serves every family; the module a parity stage hooks is the module owning its role's tensor
  (:func:`bumpconv.format.stages.stage_module`), so stages follow a family's names too;
* its **features**: the activation, whether it has q/k/v biases, q/k norms, post norms, the
  norm weight offset ((1 + w) in Gemma), the embedding scale, the attention pattern per layer,
  RoPE per layer type, the attention scale and logit soft-capping - each with the config.json
  keys it reads;
* how its **config** is read (missing keys derived as transformers derives them or refused,
  keys refused when set), its **GGUF** architecture (and whether llama.cpp permuted its Q/K
  rows), and the **engine template** that runs it.

Each feature a family has maps to an operation (:data:`OPERATIONS`); a family whose operations
are all in :data:`IMPLEMENTED` is supported (converted, verified, checked against
transformers), any other is described but refused by name with what is missing; the C runtime
runs the families whose operations are all in :data:`RUNTIME_IMPLEMENTED`, and refuses the
others by name (:func:`require_runnable`). A new family that needs no new operation is
therefore one data entry: :func:`register` adds one at run time, exactly as an entry in the
file would.

Why JSON validated by Pydantic rather than a Python table: the registry is the same kind of
fact as the layout profiles and the quantization policy beside it (data the converter is driven
by, with a committed JSON Schema for editors and other tools), and a family added from data -
the file or :func:`register` - goes through the same validation as the shipped ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from .errors import ConfigError, LayoutError, first_error

REGISTRY_FILE = "architectures.json"

#: Every operation a family's features can need, in forward order, with how a refusal names it.
OPERATIONS: dict[str, str] = {
    "embedding_scale": "embeddings scaled by sqrt(hidden_size)",
    "norm_offset": "RMSNorm weights applied as (1 + w)",
    "qkv_bias": "q/k/v biases",
    "qk_norm": "RMSNorm of each query and key head",
    "query_pre_attn_scalar": "attention scaled by query_pre_attn_scalar",
    "sliding_window": "one sliding attention window on every layer",
    "per_layer_attention": "sliding and full attention layers (layer_types or a pattern)",
    "per_layer_rope": "a RoPE base per layer type (rope_local_base_freq)",
    "post_norms": "post-attention and post-feedforward norms",
    "silu": "SwiGLU (a SiLU-gated MLP)",
    "gelu_tanh": "GeGLU with tanh-approximated GELU",
    "logit_softcap": "final logit soft-capping",
}

#: The operations bumpconv reads from a source, packs, verifies and checks against
#: transformers (the Llama body - RMSNorm before attention and MLP, rotate-half RoPE, causal
#: GQA attention - is not listed: every family has it). A family needing any other operation
#: is refused by name.
IMPLEMENTED: frozenset[str] = frozenset(OPERATIONS)

#: The operations bumpconv's C runtime (native/) computes: ``run``, ``parity`` and ``eval``
#: refuse, by name, a blob whose family needs another one (it still converts and verifies).
RUNTIME_IMPLEMENTED: frozenset[str] = frozenset(OPERATIONS)

#: The conditions a family's features set (profile and stage ``when`` keys).
Condition = Literal["qkv_bias", "qk_norm", "post_norms", "norm_offset"]


class Role(BaseModel):
    """A tensor a decoder model can have, whatever its family calls it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: Literal["global", "layer"] = Field(description="once per model, or once per layer")
    kind: Literal["embedding", "norm", "matrix", "bias"]
    gguf: str = Field(description="llama.cpp's tensor name ('{layer}': the block index)")
    unpermute: Literal["num_heads", "num_kv_heads"] | None = Field(
        default=None, description="the head count by which llama.cpp's llama-architecture "
                                  "writer permuted this tensor's rows for interleaved RoPE")
    when: Condition | None = Field(
        default=None, description="the feature under which a family has this role")
    description: str

    @model_validator(mode="after")
    def _scope_matches_gguf(self) -> "Role":
        if (self.scope == "layer") != ("{layer}" in self.gguf):
            raise ValueError(f"a {self.scope} role's GGUF name {self.gguf!r} must "
                             f"{'' if self.scope == 'layer' else 'not '}contain '{{layer}}'")
        return self


class Activation(BaseModel):
    """The MLP's gate activation: the operation, and the config key that may name it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    op: Literal["silu", "gelu_tanh"]
    key: str = Field(description="the config key naming the activation (hidden_act, ...)")
    default: str = Field(description="its value when the key is absent, as transformers has it")


class Attention(BaseModel):
    """Which layers attend to every earlier position and which to a sliding window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: Literal["full", "sliding", "per_layer"] = Field(
        description="full: every layer attends to every earlier position; sliding: every layer "
                    "to the last `window` positions when the config sets one (Mistral); "
                    "per_layer: each layer is sliding or full (Gemma 3)")
    window: str | None = Field(default=None, description="the config key of the window size")
    window_default: int | None = Field(
        default=None, gt=0, description="per_layer: the window when the key is absent, as "
                                        "transformers' config class has it")
    layer_types: str | None = Field(
        default=None, description="per_layer: the config key listing each layer's type")
    full_every: str | None = Field(
        default=None, description="per_layer, when the list is absent: the config key saying "
                                  "every how many layers one is full (the others slide)")
    full_every_default: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _keys_match_pattern(self) -> "Attention":
        if (self.pattern == "full") != (self.window is None):
            raise ValueError("a sliding or per-layer pattern needs the window's config key "
                             "(window), and only then")
        if (self.pattern == "per_layer") != bool(self.layer_types or self.full_every):
            raise ValueError("a per-layer pattern needs layer_types or full_every, and only then")
        if self.full_every_default is not None and self.full_every is None:
            raise ValueError("full_every_default without full_every")
        if self.window_default is not None and self.pattern != "per_layer":
            raise ValueError("window_default is for a per-layer pattern (a sliding one slides "
                             "only when the config sets a window)")
        return self


class Rope(BaseModel):
    """RoPE per layer type: empty for one RoPE on every layer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    local_theta: str | None = Field(
        default=None, description="the config key of the sliding layers' own RoPE base (in "
                                  "the transformers 5 layout: rope_parameters[layer type])")
    local_theta_default: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _default_needs_key(self) -> "Rope":
        if self.local_theta_default is not None and self.local_theta is None:
            raise ValueError("local_theta_default without local_theta")
        return self


class Features(BaseModel):
    """What a family's forward pass computes beyond the Llama body, with the keys it reads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    activation: Activation
    qkv_bias: bool = Field(description="q/k/v projections have biases (Qwen2)")
    qk_norm: bool = Field(description="each query and key head is RMS-normed (Qwen3, Gemma 3)")
    post_norms: bool = Field(
        description="the attention and feed-forward outputs are normed before their residual "
                    "adds too (Gemma's four norms per layer: ln1, post_attention_norm, ln2, "
                    "post_ffn_norm)")
    norm_weight_offset: Literal[0.0, 1.0] = Field(
        description="RMSNorm scales by (offset + w): 0 for Llama, 1 for Gemma")
    embedding_scale: Literal["none", "sqrt_hidden"] = Field(
        description="the embeddings are multiplied by sqrt(hidden_size) (Gemma)")
    attention: Attention
    rope: Rope
    query_scale: str | None = Field(
        description="the config key whose -1/2 power scales the attention scores instead of "
                    "head_dim's (Gemma: query_pre_attn_scalar)")
    query_scale_default: float | None = Field(
        default=None, gt=0, description="its value when the key is absent, as transformers' "
                                        "config class has it")
    logit_softcap: str | None = Field(
        description="the config key of the final logits' soft-cap, tanh(x / cap) * cap "
                    "(Gemma: final_logit_softcapping)")

    @model_validator(mode="after")
    def _query_default_needs_key(self) -> "Features":
        if self.query_scale_default is not None and self.query_scale is None:
            raise ValueError("query_scale_default without query_scale")
        return self

    def conditions(self) -> dict[str, bool]:
        """The feature conditions (profile and stage ``when`` keys) and whether they hold."""
        return {"qkv_bias": self.qkv_bias, "qk_norm": self.qk_norm,
                "post_norms": self.post_norms, "norm_offset": self.norm_weight_offset != 0}

    def operations(self) -> tuple[str, ...]:
        """The operations these features need, in :data:`OPERATIONS` order."""
        needed = {
            "embedding_scale": self.embedding_scale != "none",
            "norm_offset": self.norm_weight_offset != 0,
            "qkv_bias": self.qkv_bias,
            "qk_norm": self.qk_norm,
            "query_pre_attn_scalar": self.query_scale is not None,
            "sliding_window": self.attention.pattern == "sliding",
            "per_layer_attention": self.attention.pattern == "per_layer",
            "per_layer_rope": self.rope.local_theta is not None,
            "post_norms": self.post_norms,
            self.activation.op: True,
            "logit_softcap": self.logit_softcap is not None,
        }
        return tuple(op for op in OPERATIONS if needed.get(op))


class ConfigRules(BaseModel):
    """How a family's config.json is read, beyond the keys every family shares."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text_config: str | None = Field(
        default=None, description="the key holding the text model's own config (a multimodal "
                                  "checkpoint's); its keys are read as the model's")
    head_dim: Literal["derive", "require"] = Field(
        description="a missing head_dim: hidden_size / num_attention_heads as transformers "
                    "derives it, or an error")
    num_key_value_heads: Literal["heads", "require"] = Field(
        description="missing num_key_value_heads: num_attention_heads, or an error")
    tie_word_embeddings: bool = Field(
        description="tie_word_embeddings when the key is absent (transformers' default)")
    refuse: dict[str, str] = Field(
        default_factory=dict, description="keys whose value must be absent, null or false, "
                                          "each with why")


class GGUFArchitecture(BaseModel):
    """How llama.cpp writes the family."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: str = Field(description="general.architecture")
    rope_permuted: bool = Field(
        description="llama.cpp permuted the rows of Q and K (weights and biases) for its "
                    "interleaved RoPE; the roles' 'unpermute' undo it")


class Family(BaseModel):
    """One architecture: its names, features, config rules, GGUF form and engine template."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    extends: str | None = Field(
        default=None, description="a family whose sections this one updates key by key")
    description: str
    engine_template: str = Field(description="the engine's template that runs the family")
    tensors: dict[str, str] = Field(description="global role -> Hugging Face tensor name")
    layers: str = Field(description="the decoder layer's module, '{layer}' its index")
    layer_tensors: dict[str, str] = Field(
        description="per-layer role -> Hugging Face tensor name inside the decoder layer")
    saved_as: dict[str, str] = Field(
        default_factory=dict,
        description="checkpoints carry the model's parameters under other names than its "
                    "modules have: each module-name prefix -> the prefix its tensors are saved "
                    "under (transformers' checkpoint conversion mapping, reversed: what it "
                    "saves and what Hub checkpoints hold)")
    head_major: tuple[str, ...] = Field(
        default=(), description="roles whose module sees its input heads first, [batch, heads, "
                                "positions, head_dim] (Gemma 3 norms q and k after moving the "
                                "heads forward, Qwen3 before): parity's stage taps of them are "
                                "read transposed")
    ignored: tuple[str, ...] = Field(
        default=(), description="regular expressions of checkpoint tensors that are not this "
                                "family's weights (derived buffers; a multimodal checkpoint's "
                                "other towers): consumed without being packed")
    features: Features
    config: ConfigRules
    gguf: GGUFArchitecture | None = None
    _name: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _layers_template(self) -> "Family":
        if not self.layers.endswith(".{layer}") or self.layers.count("{layer}") != 1:
            raise ValueError(f"layers {self.layers!r} must end in '.{{layer}}' (and name it once)")
        for prefix, on_disk in self.saved_as.items():
            if not prefix.endswith(".") or not on_disk.endswith("."):
                raise ValueError(f"saved_as {prefix!r} -> {on_disk!r}: prefixes end in '.'")
        return self

    @property
    def name(self) -> str:
        """The config.json model_type."""
        return self._name

    @property
    def supported(self) -> bool:
        return not self.missing_operations()

    def missing_operations(self) -> tuple[str, ...]:
        return tuple(op for op in self.features.operations() if op not in IMPLEMENTED)

    def missing_runtime_operations(self) -> tuple[str, ...]:
        """The operations the family needs that bumpconv's C runtime does not compute."""
        return tuple(op for op in self.features.operations() if op not in RUNTIME_IMPLEMENTED)

    def has(self, role: str) -> bool:
        return role in self.tensors or role in self.layer_tensors

    def module_template(self, role: str) -> str:
        """The name of ``role``'s parameter in transformers' model, '{layer}' standing for
        the layer index."""
        if role in self.tensors:
            return self.tensors[role]
        if role in self.layer_tensors:
            return f"{self.layers}.{self.layer_tensors[role]}"
        raise LayoutError(f"architecture {self.name!r} has no tensor for role {role!r}")

    def module_name(self, role: str, layer: int | None) -> str:
        """The name of ``role``'s parameter in transformers' model (``named_parameters``)."""
        template = self.module_template(role)
        return template if layer is None else template.replace("{layer}", str(layer))

    def saved(self, name: str) -> str:
        """A parameter name as checkpoints carry it (``saved_as``; unchanged without it)."""
        for prefix, on_disk in self.saved_as.items():
            if name.startswith(prefix):
                return on_disk + name[len(prefix):]
        return name

    def hf_template(self, role: str) -> str:
        """The checkpoint name of ``role``, '{layer}' standing for the layer index."""
        return self.saved(self.module_template(role))

    def hf_name(self, role: str, layer: int | None) -> str:
        """The name of ``role``'s tensor in a checkpoint (a source tensor's name)."""
        return self.saved(self.module_name(role, layer))

    def module_of(self, role: str) -> str:
        """The module owning ``role``'s tensor: relative to the decoder layer for a layer
        role, to the model (what ``AutoModelForCausalLM`` builds) for a global one."""
        name = self.layer_tensors.get(role) or self.module_template(role)
        return name.rpartition(".")[0]

    @property
    def layers_module(self) -> str:
        """The module list of the decoder layers (``model.layers``)."""
        return self.layers.removesuffix(".{layer}")


class Registry(BaseModel):
    """The whole file: the roles, and every family by model_type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str
    profile_hash_names: tuple[str, ...] = Field(
        description="profiles named these families' HF tensors before they named roles: a "
                    "profile's hash (a blob's template_hash) spells each role source as the "
                    "first of them names it, so every layout kept its identity")
    activations: dict[str, Literal["silu", "gelu_tanh"]] = Field(
        description="transformers' activation names (ACT2FN keys) -> operation")
    hash_if_held: tuple[Condition, ...] = Field(
        default=(), description="conditions added to the profiles after their hashes were "
                                "published: a tensor rule, refusal or bake under one counts in a "
                                "blob's template_hash only when it holds for the blob's model "
                                "(as a profile field added later counts only where a profile "
                                "sets it), so a layout's hash moves only when something that "
                                "applies to the model moves")
    roles: dict[str, Role]
    families: dict[str, Family]

    @model_validator(mode="before")
    @classmethod
    def _resolve_extends(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("families"), dict):
            return data
        return {**data, "families": _resolved(data["families"])}

    @model_validator(mode="after")
    def _consistent(self) -> "Registry":
        for name, fam in self.families.items():
            fam._name = name
            _check_family(fam, self.roles)
        for role in self.roles:
            base, _, part = role.partition(".")
            if not base.isidentifier() or (part and not part.isidentifier()):
                raise ValueError(f"role {role!r} must be a name or name.part")
        ggufs = [f.gguf.architecture for f in self.families.values() if f.gguf is not None]
        if len(ggufs) != len(set(ggufs)):
            raise ValueError(f"two families claim one GGUF architecture: {sorted(ggufs)}")
        for name in self.profile_hash_names:
            if name not in self.families:
                raise ValueError(f"profile_hash_names: unknown family {name!r}")
        for fam in self.families.values():
            if fam.features.activation.default not in self.activations:
                raise ValueError(f"{fam.name}: activation default "
                                 f"{fam.features.activation.default!r} is not in 'activations'")
        return self

    def family(self, name: str) -> Family | None:
        return self.families.get(name)

    def supported(self) -> tuple[str, ...]:
        """The families bumpconv converts, in registry order."""
        return tuple(n for n, f in self.families.items() if f.supported)

    def runnable(self) -> tuple[str, ...]:
        """The supported families bumpconv's C runtime also runs, in registry order."""
        return tuple(n for n in self.supported()
                     if not self.families[n].missing_runtime_operations())

    def gguf_family(self, architecture: str) -> Family | None:
        """The family llama.cpp writes under ``general.architecture``."""
        return next((f for f in self.families.values()
                     if f.gguf is not None and f.gguf.architecture == architecture), None)

    def hash_name(self, role: str) -> str:
        """How a profile's hash spells a role source (see ``profile_hash_names``)."""
        for name in self.profile_hash_names:
            if self.families[name].has(role):
                return self.families[name].hf_template(role)
        return role


def _check_family(fam: Family, roles: dict[str, Role]) -> None:
    """Every role a family names exists with its scope; it names exactly the roles its
    features give it."""
    for scope, names in (("global", fam.tensors), ("layer", fam.layer_tensors)):
        for role in names:
            if role not in roles:
                raise ValueError(f"{fam.name}: unknown role {role!r} (roles: {', '.join(roles)})")
            if roles[role].scope != scope:
                raise ValueError(f"{fam.name}: role {role!r} is a {roles[role].scope} role, "
                                 f"not a {scope} one")
    conditions = fam.features.conditions()
    for role, info in roles.items():
        should = info.when is None or conditions[info.when]
        if should and not fam.has(role):
            why = f" (it has {info.when})" if info.when else ""
            raise ValueError(f"{fam.name}: no Hugging Face name for role {role!r}{why}")
        if fam.has(role) and not should:
            raise ValueError(f"{fam.name}: names role {role!r}, which only a family with "
                             f"{info.when} has")


def _resolved(families: dict[str, Any]) -> dict[str, Any]:
    """Entries with ``extends`` completed from their parents (sections updated key by key)."""
    out: dict[str, Any] = {}

    def resolve(name: str, seen: tuple[str, ...]) -> Any:
        if name in out:
            return out[name]
        entry = families[name]
        parent_name = entry.get("extends") if isinstance(entry, dict) else None
        if parent_name is None:
            out[name] = entry
            return entry
        if parent_name not in families:
            raise ValueError(f"{name}: extends unknown family {parent_name!r}")
        if parent_name in seen:
            raise ValueError(f"{name}: extends itself through {' -> '.join(seen)}")
        parent = resolve(parent_name, (*seen, name))
        merged = dict(parent)
        for key, value in entry.items():
            base = merged.get(key)
            merged[key] = {**base, **value} if isinstance(base, dict) and \
                isinstance(value, dict) else value
        out[name] = merged
        return merged

    for name in families:
        resolve(name, ())
    return {name: out[name] for name in families}


def _load() -> dict[str, Any]:
    text = resources.files("bumpconv.schemas").joinpath(REGISTRY_FILE).read_text("utf-8")
    return json.loads(text)


@cache
def _shipped() -> Registry:
    return Registry.model_validate(_load())


#: Families :func:`register` added in this process (entries as in the file), and the registry
#: they make with the shipped ones (None: the shipped registry alone).
_added: dict[str, dict[str, Any]] = {}
_extended: Registry | None = None


def registry() -> Registry:
    """The shipped registry plus the families :func:`register` added in this process."""
    return _extended if _extended is not None else _shipped()


def _rebuild(added: dict[str, dict[str, Any]]) -> Registry | None:
    """The registry of the shipped families and ``added``; invalid data is a ConfigError."""
    if not added:
        return None
    raw = _load()
    return Registry.model_validate({**raw, "families": {**raw["families"], **added}})


def register(name: str, entry: Mapping[str, Any]) -> Family:
    """Add family ``name`` (a config.json model_type) from ``entry``, an entry as in
    schemas/architectures.json (it may ``extends`` a known family), for this process: the spec,
    profiles, GGUF map and parity hooks then know it as they know the shipped ones. The whole
    registry is validated again; an invalid entry is a ConfigError and changes nothing."""
    global _extended
    if name in registry().families:
        raise ConfigError(f"architecture {name!r} is already registered")
    added = {**_added, name: dict(entry)}
    try:
        extended = _rebuild(added)
    except ValueError as exc:
        raise ConfigError(f"architecture {name!r}: {first_error(exc)}") from None
    assert extended is not None
    _added[name] = dict(entry)
    _extended = extended
    return extended.families[name]


def unregister(name: str) -> None:
    """Forget a family :func:`register` added (the shipped ones stay)."""
    global _extended
    if name not in _added:
        raise ConfigError(f"architecture {name!r} was not registered at run time")
    del _added[name]
    _extended = _rebuild(_added)


@contextmanager
def registered(name: str, entry: Mapping[str, Any]) -> Iterator[Family]:
    """:func:`register` for the duration of a ``with`` block."""
    family = register(name, entry)
    try:
        yield family
    finally:
        unregister(name)


def require_family(name: object, where: str) -> Family:
    """The supported family ``name``, else a ConfigError naming what is unknown or missing."""
    reg = registry()
    fam = reg.family(name) if isinstance(name, str) else None
    supported = ", ".join(reg.supported())
    if fam is None:
        raise ConfigError(f"{where}: architecture {name!r} is not supported "
                          f"(supported: {supported})")
    missing = fam.missing_operations()
    if missing:
        raise ConfigError(f"{where}: architecture {name!r} is not supported yet: bumpconv "
                          f"does not implement its {'; '.join(OPERATIONS[op] for op in missing)}"
                          f" (supported: {supported})")
    return fam


def require_runnable(name: object, where: str) -> Family:
    """The family ``name`` when bumpconv's C runtime computes every operation it needs, else a
    ConfigError naming what it lacks (the blob still converts, verifies and inspects)."""
    fam = require_family(name, where)
    missing = fam.missing_runtime_operations()
    if missing:
        raise ConfigError(f"{where}: bumpconv's C runtime does not run architecture {name!r} "
                          f"yet: it does not compute its "
                          f"{'; '.join(OPERATIONS[op] for op in missing)} (runs: "
                          f"{', '.join(registry().runnable())}); convert, inspect and verify "
                          "work")
    return fam
