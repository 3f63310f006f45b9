"""The model spec: one normalised description of a model, read from config.json.

transformers 4.x and 5.x write different config layouts (``rope_theta``/``rope_scaling``/
``torch_dtype`` vs ``rope_parameters``/``dtype``). Everything downstream - the plan, the header,
the runtime - reads only this spec, so the two layouts are reconciled exactly once, here.

What differs between architectures is not written here but read from the architecture
registry (:mod:`.registry`): which family a ``model_type`` is and whether bumpconv implements
every operation it needs, its features (q/k/v biases, q/k norms, a sliding window), the config
keys those read, and how its missing keys are treated.

Missing required keys are errors that name the key. The only values that are derived rather
than read are the ones transformers itself derives the same way for that architecture (the
registry's ``config`` rules: ``num_key_value_heads`` = heads, ``head_dim`` = hidden/heads,
``tie_word_embeddings``'s default), and the spec records which keys were derived so `inspect`
can show it.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .constants import align_up_elems
from .errors import ConfigError, first_error
from .registry import Family, registry, require_family
from .vocab import VocabCounts

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")

#: transformers' names of a layer's attention type (Gemma 3's ``layer_types``).
FULL, SLIDING = "full_attention", "sliding_attention"
LayerType = Literal["full_attention", "sliding_attention"]


#: The padded dimension symbols and the dimension each pads (to a row of ROW_ALIGN_BYTES).
ALIGNED = {"AE": "E", "AD": "D", "AI": "I", "AC": "T"}


#: The largest dimension the format describes: the header's fields are u32 and readers size
#: with int32 arithmetic. A different fact from the C runtime's BUMP_RUNTIME_MAX_DIM
#: (native/validate.h, 2**24), the largest it runs: it refuses a larger blob with a named error.
FORMAT_MAX_DIM = 2**31 - 1


class RopeSpec(BaseModel):
    """Rotary embedding settings, already reconciled between config layouts. Everything the
    runtime will need of them is validated here, at convert time, not first at run time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    theta: float = Field(gt=0, allow_inf_nan=False)
    type: Literal["default", "linear", "llama3"] = "default"
    factor: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    low_freq_factor: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    high_freq_factor: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    original_max_position_embeddings: int | None = Field(default=None, gt=0, le=FORMAT_MAX_DIM)

    @model_validator(mode="after")
    def _scaling_complete(self) -> "RopeSpec":
        needed = {
            "default": (),
            "linear": ("factor",),
            "llama3": ("factor", "low_freq_factor", "high_freq_factor",
                       "original_max_position_embeddings"),
        }[self.type]
        for key in needed:
            if getattr(self, key) is None:
                raise ValueError(f"rope type {self.type!r} needs {key!r}")
        if self.type == "llama3" and not self.low_freq_factor < self.high_freq_factor:  # type: ignore[operator]
            raise ValueError(f"llama3 rope needs low_freq_factor < high_freq_factor, got "
                             f"{self.low_freq_factor} and {self.high_freq_factor}")
        return self


class ModelSpec(BaseModel):
    """Everything the converter and runtime need to know about a model, and nothing else."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: str = Field(
        description="the config.json model_type: a family of the architecture registry "
                    "(schemas/architectures.json) whose operations bumpconv implements")
    num_layers: int = Field(gt=0, le=FORMAT_MAX_DIM)
    vocab_size: int = Field(gt=0, le=FORMAT_MAX_DIM)
    hidden_size: int = Field(gt=0, le=FORMAT_MAX_DIM)
    intermediate_size: int = Field(gt=0, le=FORMAT_MAX_DIM)
    num_heads: int = Field(gt=0, le=FORMAT_MAX_DIM)
    num_kv_heads: int = Field(gt=0, le=FORMAT_MAX_DIM)
    head_dim: int = Field(gt=0, le=FORMAT_MAX_DIM)
    context_length: int = Field(gt=0, le=FORMAT_MAX_DIM)
    rms_norm_eps: float = Field(gt=0, allow_inf_nan=False)
    rope: RopeSpec
    tie_word_embeddings: bool
    qkv_bias: bool
    qk_norm: bool
    sliding_window: int | None = Field(
        default=None, gt=0, le=FORMAT_MAX_DIM,
        description="the window of the sliding layers: every layer's when layer_types is None "
                    "(Mistral), else those of type sliding_attention (Gemma 3)")
    layer_types: tuple[LayerType, ...] | None = Field(
        default=None, description="each layer's attention (Gemma 3), as transformers names it; "
                                  "None: every layer alike")
    rope_local: RopeSpec | None = Field(
        default=None, description="the RoPE of the sliding layers when they have their own "
                                  "(Gemma 3's local base); `rope` is the full layers'")
    query_pre_attn_scalar: float | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="attention scores are scaled by its -1/2 power (None: head_dim's)")
    final_logit_softcapping: float | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="logits become tanh(x / cap) * cap (None: no soft-cap)")
    source_dtype: str | None = None
    derived_keys: tuple[str, ...] = ()

    @field_validator("architecture")
    @classmethod
    def _registered(cls, value: str) -> str:
        try:
            require_family(value, "architecture")
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("architecture: ")) from None
        return value

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelSpec":
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_attention_heads={self.num_heads} is not a multiple of "
                f"num_key_value_heads={self.num_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotate-half RoPE")
        if self.layer_types is not None:
            if len(self.layer_types) != self.num_layers:
                raise ValueError(f"layer_types lists {len(self.layer_types)} layers, the model "
                                 f"has num_hidden_layers={self.num_layers}")
            if SLIDING in self.layer_types and self.sliding_window is None:
                raise ValueError("layer_types has sliding_attention layers but no "
                                 "sliding_window is set")
        if self.rope_local is not None and self.layer_types is None:
            raise ValueError("a RoPE of the sliding layers needs layer_types")
        return self

    def layer_type(self, layer: int) -> LayerType:
        """Whether ``layer`` attends to every earlier position or to a sliding window."""
        if self.layer_types is not None:
            return self.layer_types[layer]
        return SLIDING if self.sliding_window is not None else FULL

    def window(self, layer: int) -> int | None:
        """The attention window of ``layer`` (None: every earlier position)."""
        return self.sliding_window if self.layer_type(layer) == SLIDING else None

    def rope_of(self, layer: int) -> RopeSpec:
        """The RoPE settings of ``layer`` (the sliding layers' own, when the model has them)."""
        if self.rope_local is not None and self.layer_type(layer) == SLIDING:
            return self.rope_local
        return self.rope

    def with_context(self, context_length: int | None) -> "ModelSpec":
        """The same model with a user's context override (``--context N``)."""
        if context_length is None:
            return self
        if not 0 < context_length <= FORMAT_MAX_DIM:
            raise ConfigError(f"--context must be in [1, {FORMAT_MAX_DIM}], got {context_length}")
        return self.model_copy(update={"context_length": context_length})

    def dims(self, vocab: VocabCounts | None = None) -> dict[str, int]:
        """The symbols profiles use in shapes and header fields (with ``vocab``, also the sizes
        of the tokenizer arrays, VB and M)."""
        d = {
            "L": self.num_layers, "V": self.vocab_size, "E": self.hidden_size,
            "I": self.intermediate_size, "H": self.num_heads, "KV": self.num_kv_heads,
            "D": self.head_dim, "T": self.context_length,
        }
        d.update({a: align_up_elems(d[base]) for a, base in ALIGNED.items()})
        if vocab is not None:
            d.update(vocab.dims())
        return d

    @property
    def family(self) -> Family:
        """The architecture's registry entry: its tensor names, features and hooks."""
        family = registry().family(self.architecture)
        if family is None:  # registered when the spec was made, forgotten since
            raise ConfigError(f"architecture {self.architecture!r} is no longer registered")
        return family

    def flags(self, tokenizer: bool = False) -> dict[str, bool]:
        """The conditions under which optional tensors and stages are present (profile and
        stage ``when`` keys): the family's feature conditions, with the biases and q/k norms
        this model has (a blob read without its config says so by its sizes), whether the head
        is untied, and (``tokenizer``) whether the blob carries the tokenizer's arrays."""
        return {**self.family.features.conditions(), "qkv_bias": self.qkv_bias,
                "qk_norm": self.qk_norm, "untied": not self.tie_word_embeddings,
                "tokenizer": tokenizer}


def _require(cfg: dict[str, Any], key: str, where: str) -> Any:
    if key not in cfg or cfg[key] is None:
        raise ConfigError(f"{where}: required key {key!r} is missing")
    return cfg[key]


def _or_default(cfg: dict[str, Any], key: str, default: Any, where: str,
                derived: list[str]) -> Any:
    """``cfg[key]``, else the family's ``default`` (``key`` then joins ``derived``: the
    metadata records which keys were derived), else a missing-key error."""
    if cfg.get(key) is not None:
        return cfg[key]
    if default is None:
        raise ConfigError(f"{where}: required key {key!r} is missing")
    derived.append(key)
    return default


def _positive_int(value: Any, key: str, where: str) -> int:
    """Strictly an integer (never a bool, a float or a string) in [1, FORMAT_MAX_DIM], as
    transformers' own config classes expect."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= FORMAT_MAX_DIM:
        raise ConfigError(f"{where}: {key!r} must be an integer in [1, {FORMAT_MAX_DIM}], "
                          f"got {value!r}")
    return value


def _positive_number(value: Any, key: str, where: str) -> float:
    """Strictly a JSON number (never a bool or a string), finite and positive."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where}: {key!r} must be a finite positive number, got {value!r}")
    return float(value)


def _require_int(cfg: dict[str, Any], key: str, where: str) -> int:
    return _positive_int(_require(cfg, key, where), key, where)


def _optional_int(cfg: dict[str, Any], key: str, where: str) -> int | None:
    return None if cfg.get(key) is None else _require_int(cfg, key, where)


def _optional_bool(cfg: dict[str, Any], key: str, where: str) -> bool | None:
    value = cfg.get(key)
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"{where}: {key!r} must be true or false, got {value!r}")
    return value


#: The scaling keys a rope block may carry, and how each is read.
_SCALING_KEYS = {"factor": _positive_number, "low_freq_factor": _positive_number,
                 "high_freq_factor": _positive_number,
                 "original_max_position_embeddings": _positive_int}


def _rope_block(cfg: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    block = cfg.get(key)
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: {key!r} must be an object, got {block!r}")
    return block


def _scaling_of(block: dict[str, Any]) -> dict[str, Any]:
    """What a rope block says about scaling (type and factors), theta aside, for comparing the
    two layouts' blocks."""
    out = {k: block[k] for k in _SCALING_KEYS if block.get(k) is not None}
    out["rope_type"] = block.get("rope_type", block.get("type", "default"))
    return out


def _rope_from_config(cfg: dict[str, Any], where: str) -> RopeSpec:
    """Read RoPE settings from either layout: 5.x ``rope_parameters`` or 4.x top-level keys.
    A config carrying both must not contradict itself: transformers 5 applies ``rope_scaling``
    over ``rope_parameters``, so a disagreement would silently make a different model."""
    params = _rope_block(cfg, "rope_parameters", where)
    legacy = _rope_block(cfg, "rope_scaling", where)
    if params and legacy and _scaling_of(params) != _scaling_of(legacy):
        raise ConfigError(f"{where}: 'rope_scaling' {_scaling_of(legacy)} and 'rope_parameters' "
                          f"{_scaling_of(params)} disagree; remove one")
    thetas = {k: v for k, v in (("rope_parameters.rope_theta", params.get("rope_theta")),
                                ("rope_theta", cfg.get("rope_theta"))) if v is not None}
    if len(thetas) == 2 and len(set(map(repr, thetas.values()))) == 2:
        raise ConfigError(f"{where}: 'rope_theta' {thetas['rope_theta']!r} and "
                          f"'rope_parameters.rope_theta' {thetas['rope_parameters.rope_theta']!r} "
                          "disagree")
    if not thetas:
        raise ConfigError(f"{where}: required key "
                          f"{'rope_parameters.rope_theta' if params else 'rope_theta'!r} is missing")
    key, theta = next(iter(thetas.items()))
    scaling = params or legacy
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ConfigError(
            f"{where}: rope type {rope_type!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_ROPE_TYPES)})")
    partial = cfg.get("partial_rotary_factor", scaling.get("partial_rotary_factor", 1.0))
    if partial not in (None, 1, 1.0) or isinstance(partial, bool):
        raise ConfigError(f"{where}: partial_rotary_factor={partial!r} is not supported")
    fields: dict[str, Any] = {}
    if rope_type != "default":
        fields = {k: read(scaling[k], k, where) for k, read in _SCALING_KEYS.items()
                  if scaling.get(k) is not None}
    try:
        return RopeSpec(theta=_positive_number(theta, key, where), type=rope_type, **fields)
    except ValueError as exc:
        raise ConfigError(f"{where}: invalid rope settings: {first_error(exc)}") from None


def spec_from_config(cfg: dict[str, Any], where: str = "config.json") -> ModelSpec:
    """Normalise a parsed config.json into a ModelSpec, refusing what bumpconv cannot represent."""
    family = require_family(_require(cfg, "model_type", where), where)
    arch, rules, features = family.name, family.config, family.features
    if rules.text_config is not None:
        cfg = _text_model_config(cfg, arch, rules.text_config, where)
    act = cfg.get(features.activation.key, features.activation.default)
    if not isinstance(act, str) or registry().activations.get(act) != features.activation.op:
        raise ConfigError(f"{where}: {features.activation.key} {act!r} is not supported (only "
                          f"{features.activation.default!r})")
    if _optional_bool(cfg, "mlp_bias", where):
        raise ConfigError(f"{where}: mlp_bias=true is not supported (the format has no MLP bias slot)")
    for key, why in rules.refuse.items():
        if cfg.get(key) not in (None, False):
            raise ConfigError(f"{where}: {key}={json.dumps(cfg[key])} is not supported for "
                              f"{arch} ({why})")

    derived: list[str] = []
    hidden = _require_int(cfg, "hidden_size", where)
    heads = _require_int(cfg, "num_attention_heads", where)
    kv_heads = _optional_int(cfg, "num_key_value_heads", where)
    if kv_heads is None:
        if rules.num_key_value_heads == "require":
            raise ConfigError(f"{where}: required key 'num_key_value_heads' is missing")
        kv_heads = heads
        derived.append("num_key_value_heads")
    head_dim = _optional_int(cfg, "head_dim", where)
    if head_dim is None:
        if rules.head_dim == "require":
            raise ConfigError(f"{where}: required key 'head_dim' is missing")
        if hidden % heads:
            raise ConfigError(f"{where}: head_dim is missing and hidden_size={hidden} "
                              f"is not a multiple of num_attention_heads={heads}")
        head_dim = hidden // heads
        derived.append("head_dim")
    tie = _optional_bool(cfg, "tie_word_embeddings", where)
    if tie is None:
        tie = rules.tie_word_embeddings
        derived.append("tie_word_embeddings")
    layers = _require_int(cfg, "num_hidden_layers", where)
    window = features.attention.window
    sliding = (_optional_int(cfg, window, where)
               if features.attention.pattern == "sliding" and window else None)
    layer_types = None
    if features.attention.pattern == "per_layer":
        layer_types = _layer_types(cfg, family, layers, where, derived)
        if SLIDING in layer_types:
            assert window is not None
            sliding = _optional_int(cfg, window, where)
            if sliding is None and window not in cfg:
                sliding = features.attention.window_default
                derived.append(window)
    rope, rope_local = _ropes(cfg, family, where, derived)
    query_scale = None
    if features.query_scale is not None:
        query_scale = _positive_number(_or_default(cfg, features.query_scale,
                                                   features.query_scale_default, where, derived),
                                       features.query_scale, where)
    softcap = None
    if features.logit_softcap is not None and cfg.get(features.logit_softcap) is not None:
        softcap = _positive_number(cfg[features.logit_softcap], features.logit_softcap, where)
    dtype = cfg.get("dtype", cfg.get("torch_dtype"))
    try:
        return ModelSpec(
            architecture=arch,
            num_layers=layers,
            vocab_size=_require_int(cfg, "vocab_size", where),
            hidden_size=hidden,
            intermediate_size=_require_int(cfg, "intermediate_size", where),
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            context_length=_require_int(cfg, "max_position_embeddings", where),
            rms_norm_eps=_positive_number(_require(cfg, "rms_norm_eps", where), "rms_norm_eps",
                                          where),
            rope=rope,
            tie_word_embeddings=tie,
            qkv_bias=features.qkv_bias,
            qk_norm=features.qk_norm,
            sliding_window=sliding,
            layer_types=layer_types,
            rope_local=rope_local,
            query_pre_attn_scalar=query_scale,
            final_logit_softcapping=softcap,
            source_dtype=dtype if isinstance(dtype, str) else None,
            derived_keys=tuple(derived),
        )
    except ValueError as exc:
        raise ConfigError(f"{where}: {first_error(exc)}") from None


def _text_model_config(cfg: dict[str, Any], arch: str, key: str,
                       where: str) -> dict[str, Any]:
    """A multimodal checkpoint's text model config: the keys of ``cfg[key]`` under the outer
    model type, with the outer ``tie_word_embeddings`` and dtype (transformers ties the head by
    the top-level config; a tie flag inside the text config is not what it reads)."""
    text = cfg.get(key)
    if text is None:
        raise ConfigError(f"{where}: required key {key!r} is missing")
    if not isinstance(text, dict):
        raise ConfigError(f"{where}: {key!r} must be an object, got {text!r}")
    out = {k: v for k, v in text.items() if k not in ("tie_word_embeddings", "dtype",
                                                       "torch_dtype")}
    out["model_type"] = arch
    for k in ("tie_word_embeddings", "dtype", "torch_dtype"):
        if k in cfg:
            out[k] = cfg[k]
    return out


def _layer_types(cfg: dict[str, Any], family: Family, layers: int, where: str,
                 derived: list[str]) -> tuple[LayerType, ...]:
    """Each layer's attention: the config's list, else every ``full_every``-th layer full and
    the others sliding, as transformers derives it (``(i + 1) % every`` != 0: sliding)."""
    att = family.features.attention
    assert att.layer_types is not None or att.full_every is not None
    listed = cfg.get(att.layer_types) if att.layer_types is not None else None
    if listed is None:
        if att.full_every is None:
            raise ConfigError(f"{where}: required key {att.layer_types!r} is missing")
        every = _positive_int(_or_default(cfg, att.full_every, att.full_every_default, where,
                                          derived), att.full_every, where)
        if att.layer_types is not None:
            derived.append(att.layer_types)
        return tuple(SLIDING if (i + 1) % every else FULL for i in range(layers))
    if not isinstance(listed, list) or any(t not in (FULL, SLIDING) for t in listed):
        raise ConfigError(f"{where}: {att.layer_types!r} must be a list of {FULL!r} and "
                          f"{SLIDING!r}, got {listed!r}")
    if len(listed) != layers:
        raise ConfigError(f"{where}: {att.layer_types!r} lists {len(listed)} layers, "
                          f"num_hidden_layers is {layers}")
    return tuple(listed)


def _ropes(cfg: dict[str, Any], family: Family, where: str,
           derived: list[str]) -> tuple[RopeSpec, RopeSpec | None]:
    """The full layers' RoPE and, for a family with a RoPE per layer type, the sliding layers'.

    Two layouts: transformers 5 keys ``rope_parameters`` by layer type (``full_attention``,
    ``sliding_attention``: each block read as a whole rope block); transformers 4 has
    ``rope_theta`` and ``rope_scaling`` for the full layers (``rope_scaling`` applies to them
    only) and the local base under its own key (``rope_local_base_freq``), defaulting as
    transformers does."""
    local = family.features.rope
    if local.local_theta is None:
        return _rope_from_config(cfg, where), None
    params = _rope_block(cfg, "rope_parameters", where)
    if params and set(params) & {FULL, SLIDING}:
        unknown = sorted(set(params) - {FULL, SLIDING})
        if unknown:
            raise ConfigError(f"{where}: 'rope_parameters' mixes layer types and {unknown}")
        if cfg.get("rope_scaling") is not None:
            raise ConfigError(f"{where}: 'rope_scaling' beside per-layer-type "
                              "'rope_parameters'; remove one")
        blocks = {}
        for kind in (FULL, SLIDING):
            block = _rope_block(params, kind, f"{where} rope_parameters")
            if kind == SLIDING and "rope_theta" not in block:
                block = {**block, "rope_theta": local.local_theta_default}
                derived.append(f"rope_parameters.{SLIDING}.rope_theta")
            sub = {"rope_parameters": block,
                   "partial_rotary_factor": cfg.get("partial_rotary_factor")}
            blocks[kind] = _rope_from_config(sub, f"{where} (rope_parameters.{kind})")
        return blocks[FULL], blocks[SLIDING]
    full = _rope_from_config(cfg, where)
    theta = _or_default(cfg, local.local_theta, local.local_theta_default, where, derived)
    return full, RopeSpec(theta=_positive_number(theta, local.local_theta, where))


def describe_spec(spec: ModelSpec) -> list[str]:
    rope = spec.rope
    scaling = "" if rope.type == "default" else " " + ", ".join(
        f"{k}={v}" for k, v in rope.model_dump(exclude={"theta", "type"}, exclude_none=True).items())
    lines = [
        f"{spec.architecture}: {spec.num_layers} layers, hidden {spec.hidden_size}, "
        f"heads {spec.num_heads} (kv {spec.num_kv_heads}) x {spec.head_dim}, "
        f"intermediate {spec.intermediate_size}, vocab {spec.vocab_size}, context {spec.context_length}",
        f"rms_eps {spec.rms_norm_eps!r}, rope theta {rope.theta!r} ({rope.type}{scaling}), "
        f"{'tied' if spec.tie_word_embeddings else 'untied'} embeddings, "
        f"qkv bias {'yes' if spec.qkv_bias else 'no'}, q/k norm {'yes' if spec.qk_norm else 'no'}"
        + (f", sliding window {spec.sliding_window}"
           if spec.sliding_window and spec.layer_types is None else ""),
    ]
    if spec.layer_types is not None:
        sliding = [i for i, t in enumerate(spec.layer_types) if t == SLIDING]
        local = spec.rope_local
        lines.append(
            f"attention per layer: {len(sliding)} sliding (window {spec.sliding_window}), "
            f"{spec.num_layers - len(sliding)} full (layers "
            f"{', '.join(str(i) for i, t in enumerate(spec.layer_types) if t == FULL) or 'none'})"
            + (f"; sliding layers' rope theta {local.theta!r} ({local.type})" if local else ""))
    extras = []
    if spec.query_pre_attn_scalar is not None:
        extras.append(f"query_pre_attn_scalar {spec.query_pre_attn_scalar!r}")
    if spec.final_logit_softcapping is not None:
        extras.append(f"final logit soft-cap {spec.final_logit_softcapping!r}")
    if extras:
        lines.append(", ".join(extras))
    if spec.derived_keys:
        lines.append("derived as transformers does: " + ", ".join(spec.derived_keys))
    return lines
