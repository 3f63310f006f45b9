"""The BUMPWGT5 metadata JSON: the engine's keys plus bumpconv's manifest and provenance.

The document's models, its canonical encoding (sorted keys, no spaces, ASCII: exactly as the
engine writes it, so equal inputs give equal bytes) and the one mapping between the engine's
``config`` block and :class:`~bumpconv.format.spec.ModelSpec`. Filling it for a conversion is
the converter's job (:mod:`bumpconv.conversion.manifest`).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from .spec import ModelSpec, RopeSpec
from .tokenizer_meta import TokenizerMeta
from .vocab import VocabCounts

SCHEMA_VERSION = 1


class ManifestEntry(BaseModel):
    """One payload tensor as recorded in the file (what `inspect` and `verify` read back)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    role: str
    layer: int | None
    dtype: str
    offset: int = Field(ge=0)
    bytes: int = Field(ge=0)
    shape: list[int]
    sources: list[str]
    crc32: str = Field(pattern=r"^[0-9a-f]{8}$", description="CRC32 of the packed bytes: names a damaged tensor")


#: EngineConfig keys added after blobs were first written: absent (not null) when the model
#: does not use them, so the bytes of every earlier model's blob are unchanged.
_LATER_KEYS = ("layer_types", "rope_local", "query_pre_attn_scalar", "final_logit_softcapping")


class EngineConfig(BaseModel):
    """The engine's ``config`` keys, with the model's real eps and rope settings."""

    model_config = ConfigDict(extra="forbid")

    model: str
    num_layers: int
    embed_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    context_length: int
    rope_theta: float
    vocab_size: int
    rms_eps: float
    rope_scaling: dict[str, Any] | None
    tie_word_embeddings: bool
    qkv_bias: bool
    qk_norm: bool
    sliding_window: int | None
    layer_types: list[str] | None = Field(
        default=None, description="each layer's attention (full_attention, sliding_attention)")
    rope_local: dict[str, Any] | None = Field(
        default=None, description="the sliding layers' RoPE: theta, type and scaling")
    query_pre_attn_scalar: float | None = None
    final_logit_softcapping: float | None = None

    @model_serializer(mode="wrap")
    def _without_absent_keys(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        for key in _LATER_KEYS:
            if out.get(key) is None:
                out.pop(key, None)
        return out


class TokenizerSection(BaseModel):
    """The tokenizer a blob carries: the sizes of its arrays (the engine's manifest keys) and
    the record of everything the arrays do not hold (pipeline, special tokens, template)."""

    model_config = ConfigDict(extra="forbid")

    total_vocab_bytes: int = Field(ge=1)
    num_merges: int = Field(ge=0)
    record: TokenizerMeta

    @property
    def counts(self) -> VocabCounts:
        return VocabCounts(self.total_vocab_bytes, self.num_merges)


class QuantizationSection(BaseModel):
    """How a quantized blob's dtypes were chosen: the policy's name and the SHA-256 of the
    policy file (schemas/quant.policy.json) that defined it."""

    model_config = ConfigDict(extra="forbid")

    policy: str
    policy_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class BumpconvSection(BaseModel):
    """What bumpconv adds: the profile, checksums, the manifest, and where the weights came from."""

    model_config = ConfigDict(extra="forbid")

    version: str
    profile: str
    payload_sha256: str
    tensors: list[ManifestEntry]
    ignored_sources: list[str]
    source: dict[str, Any]
    tokenizer: TokenizerSection | None = Field(
        default=None, description="present when the blob carries the tokenizer's arrays")
    quantization: QuantizationSection | None = Field(
        default=None, description="present when `convert --quant` chose the dtypes")

    @model_serializer(mode="wrap")
    def _without_absent_sections(self, handler: Any) -> dict[str, Any]:
        """A blob without a tokenizer or quantization has no such key at all (not null), so the
        files bumpconv wrote before those existed are still what it writes."""
        out = handler(self)
        for key in ("tokenizer", "quantization"):
            if out.get(key) is None:
                out.pop(key, None)
        return out


class Metadata(BaseModel):
    """The whole JSON document between the payload and the BUMPV5MD footer."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int
    format: str
    created_by: str
    created_at: str | None
    template: str
    template_hash: str
    config: EngineConfig
    quant_summary: dict[str, int]
    bumpconv: BumpconvSection


def engine_config(spec: ModelSpec) -> EngineConfig:
    """The ``config`` block of a blob's metadata for ``spec`` (the inverse of
    :func:`spec_from_engine_config`)."""
    rope = spec.rope
    scaling = None if rope.type == "default" else rope.model_dump(exclude={"theta"}, exclude_none=True)
    return EngineConfig(
        model=spec.architecture, num_layers=spec.num_layers, embed_dim=spec.hidden_size,
        num_heads=spec.num_heads, num_kv_heads=spec.num_kv_heads, head_dim=spec.head_dim,
        intermediate_size=spec.intermediate_size, context_length=spec.context_length,
        rope_theta=rope.theta, vocab_size=spec.vocab_size, rms_eps=spec.rms_norm_eps,
        rope_scaling=scaling, tie_word_embeddings=spec.tie_word_embeddings,
        qkv_bias=spec.qkv_bias, qk_norm=spec.qk_norm, sliding_window=spec.sliding_window,
        layer_types=list(spec.layer_types) if spec.layer_types is not None else None,
        rope_local=(spec.rope_local.model_dump(exclude_none=True)
                    if spec.rope_local is not None else None),
        query_pre_attn_scalar=spec.query_pre_attn_scalar,
        final_logit_softcapping=spec.final_logit_softcapping)


def spec_from_engine_config(c: EngineConfig) -> ModelSpec:
    """The model spec a blob's metadata records (the inverse of :func:`engine_config`)."""
    return ModelSpec(
        architecture=c.model, num_layers=c.num_layers, vocab_size=c.vocab_size,
        hidden_size=c.embed_dim, intermediate_size=c.intermediate_size,
        num_heads=c.num_heads, num_kv_heads=c.num_kv_heads, head_dim=c.head_dim,
        context_length=c.context_length, rms_norm_eps=c.rms_eps,
        rope=RopeSpec(theta=c.rope_theta, **(c.rope_scaling or {})),
        tie_word_embeddings=c.tie_word_embeddings, qkv_bias=c.qkv_bias,
        qk_norm=c.qk_norm, sliding_window=c.sliding_window,
        layer_types=tuple(c.layer_types) if c.layer_types is not None else None,
        rope_local=RopeSpec(**c.rope_local) if c.rope_local is not None else None,
        query_pre_attn_scalar=c.query_pre_attn_scalar,
        final_logit_softcapping=c.final_logit_softcapping)


def canonical_json(obj: Any) -> bytes:
    """The engine's canonical encoding."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
