"""Fill a blob's metadata document for one conversion: the manifest, the model's config block,
checksums and provenance. No wall-clock time and no paths: ``created_at`` comes only from
``SOURCE_DATE_EPOCH`` (reproducible-builds convention)."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import datetime, timezone

from ..format.constants import FOOTER_SIZE, VERSION
from ..format.profile import profile_hash
from ..format.metadata import (SCHEMA_VERSION, BumpconvSection, ManifestEntry, Metadata,
                               QuantizationSection, TokenizerSection, canonical_json,
                               engine_config)
from ..format.quant_policy import policy_hash
from ..format.tokenizer_meta import TokenizerMeta
from .plan import Plan
from .tensor_source import Provenance, TensorSource

_PLACEHOLDER = "0" * 64
_CRC_PLACEHOLDER = "0" * 8


def created_at() -> str | None:
    """``SOURCE_DATE_EPOCH`` as ISO-8601 UTC, or None: never the wall clock."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return None
    return datetime.fromtimestamp(int(epoch), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_metadata(plan: Plan, payload_sha256: str, tensor_crc32: dict[str, str],
                   provenance: Provenance, tokenizer: TokenizerMeta | None = None) -> Metadata:
    """The metadata of ``plan`` once its payload digests are known; ``tokenizer``: the record
    of the tokenizer whose arrays the blob carries."""
    entries = [ManifestEntry(
        name=t.name, role=t.slot.role, layer=t.slot.layer, dtype=t.dtype.label,
        offset=t.offset, bytes=t.nbytes, shape=list(t.slot.shape), sources=list(t.slot.sources),
        crc32=tensor_crc32[t.name]) for t in plan.tensors]
    summary: dict[str, int] = {}
    for t in plan.tensors:
        summary[t.dtype.label] = summary.get(t.dtype.label, 0) + 1
    return Metadata(
        schema_version=SCHEMA_VERSION,
        format=plan.profile.magic,
        created_by=f"bumpconv {VERSION}",
        created_at=created_at(),
        template=plan.spec.architecture,
        template_hash=profile_hash(plan.profile.profile,
                                   plan.spec.flags(tokenizer=plan.vocab is not None)),
        config=engine_config(plan.spec),
        quant_summary=summary,
        bumpconv=BumpconvSection(
            version=VERSION, profile=plan.profile.profile, payload_sha256=payload_sha256,
            tensors=entries, ignored_sources=list(plan.ignored_sources),
            source=provenance.as_json(), tokenizer=_tokenizer_section(plan, tokenizer),
            quantization=None if plan.quant is None else QuantizationSection(
                policy=plan.quant, policy_sha256=policy_hash())),
    )


def _tokenizer_section(plan: Plan, record: TokenizerMeta | None) -> TokenizerSection | None:
    if plan.vocab is None:
        return None
    if record is None:
        raise AssertionError("a plan that carries the tokenizer's arrays needs its record")
    return TokenizerSection(total_vocab_bytes=plan.vocab.total_vocab_bytes,
                            num_merges=plan.vocab.num_merges, record=record)


def metadata_bytes(plan: Plan, payload_sha256: str, tensor_crc32: dict[str, str],
                   provenance: Provenance, source: TensorSource) -> bytes:
    """The canonical metadata JSON of a conversion."""
    record = source.tokenizer[1] if source.tokenizer is not None else None
    meta = build_metadata(plan, payload_sha256, tensor_crc32, provenance, record)
    return canonical_json(meta.model_dump(mode="json"))


def output_size(plan: Plan, source: TensorSource) -> int:
    """The exact size of the file `convert` will write, without reading tensor data: hashes
    are fixed-width hex, so placeholders give the same metadata length."""
    if not plan.profile.writes_metadata:
        return plan.payload_end
    prov = source.provenance(hash_files=False)
    prov = replace(prov, files=tuple((n, b, h or _PLACEHOLDER) for n, b, h in prov.files))
    crcs = {t.name: _CRC_PLACEHOLDER for t in plan.tensors}
    return plan.payload_end + len(metadata_bytes(plan, _PLACEHOLDER, crcs, prov, source)) + \
        FOOTER_SIZE
