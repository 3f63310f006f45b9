"""The BUMPWGT5 metadata JSON: the engine's keys plus bumpconv's manifest and provenance.

Written canonically (sorted keys, no spaces, ASCII) exactly as the engine does, so equal
inputs give equal bytes. No wall-clock time and no paths: ``created_at`` is filled only from
``SOURCE_DATE_EPOCH`` (reproducible-builds convention).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from . import __version__
from .layout import profile_hash
from .plan import Plan
from .source import Provenance

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


class BumpconvSection(BaseModel):
    """What bumpconv adds: the profile, checksums, the manifest, and where the weights came from."""

    model_config = ConfigDict(extra="forbid")

    version: str
    profile: str
    payload_sha256: str
    tensors: list[ManifestEntry]
    ignored_sources: list[str]
    source: dict[str, Any]


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


def engine_config(plan: Plan) -> EngineConfig:
    s = plan.spec
    rope = s.rope
    scaling = None if rope.type == "default" else rope.model_dump(exclude={"theta"}, exclude_none=True)
    return EngineConfig(
        model=s.architecture, num_layers=s.num_layers, embed_dim=s.hidden_size,
        num_heads=s.num_heads, num_kv_heads=s.num_kv_heads, head_dim=s.head_dim,
        intermediate_size=s.intermediate_size, context_length=s.context_length,
        rope_theta=rope.theta, vocab_size=s.vocab_size, rms_eps=s.rms_norm_eps,
        rope_scaling=scaling, tie_word_embeddings=s.tie_word_embeddings,
        qkv_bias=s.qkv_bias, qk_norm=s.qk_norm, sliding_window=s.sliding_window)


def created_at() -> str | None:
    """``SOURCE_DATE_EPOCH`` as ISO-8601 UTC, or None: never the wall clock."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return None
    return datetime.fromtimestamp(int(epoch), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_metadata(plan: Plan, payload_sha256: str, tensor_crc32: dict[str, str],
                   provenance: Provenance) -> Metadata:
    entries = [ManifestEntry(
        name=t.name, role=t.slot.role, layer=t.slot.layer, dtype=t.dtype.name.lower(),
        offset=t.offset, bytes=t.nbytes, shape=list(t.slot.shape), sources=list(t.slot.sources),
        crc32=tensor_crc32[t.name]) for t in plan.tensors]
    summary: dict[str, int] = {}
    for t in plan.tensors:
        summary[t.dtype.name.lower()] = summary.get(t.dtype.name.lower(), 0) + 1
    return Metadata(
        schema_version=SCHEMA_VERSION,
        format=plan.profile.magic,
        created_by=f"bumpconv {__version__}",
        created_at=created_at(),
        template=plan.spec.architecture,
        template_hash=profile_hash(plan.profile.profile),
        config=engine_config(plan),
        quant_summary=summary,
        bumpconv=BumpconvSection(
            version=__version__, profile=plan.profile.profile, payload_sha256=payload_sha256,
            tensors=entries, ignored_sources=list(plan.ignored_sources),
            source=provenance.as_json()),
    )


def canonical_json(obj: Any) -> bytes:
    """The engine's canonical encoding."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
