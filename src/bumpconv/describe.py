"""Human and machine descriptions of plans and blobs (what `convert --dry-run` and `inspect`
print). Every string that came from a file is escaped so a crafted name cannot inject
terminal control sequences."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from .constants import FOOTER_SIZE
from .integrity import IntegrityReport
from .metadata import build_metadata, canonical_json
from .plan import Plan
from .reader import BumpFile
from .source import Source
from .spec import ModelSpec

_PLACEHOLDER = "0" * 64
_CRC_PLACEHOLDER = "0" * 8


def safe(text: object) -> str:
    """Printable rendering of untrusted text: control characters become escapes."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in str(text))


def output_size(plan: Plan, source: Source) -> int:
    """The exact size of the file `convert` will write, without reading tensor data: hashes
    are fixed-width hex, so placeholders give the same metadata length."""
    if plan.profile.checksum_covers != "payload_end":
        return plan.payload_end
    prov = source.provenance(hash_files=False)
    prov = replace(prov, files=tuple((n, b, h or _PLACEHOLDER) for n, b, h in prov.files))
    meta = build_metadata(plan, _PLACEHOLDER, {t.name: _CRC_PLACEHOLDER for t in plan.tensors}, prov)
    return plan.payload_end + len(canonical_json(meta.model_dump(mode="json"))) + FOOTER_SIZE


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
        + (f", sliding window {spec.sliding_window}" if spec.sliding_window else ""),
    ]
    if spec.derived_keys:
        lines.append("derived as transformers does: " + ", ".join(spec.derived_keys))
    return lines


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.rjust(w) if i in (0, 4, 5) else c.ljust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    return [fmt(header)] + [fmt(r) for r in rows]


def format_plan(plan: Plan, source: Source) -> str:
    """The `--dry-run` report: every output tensor, its sources, offset and size."""
    lines = [f"plan: {plan.profile.profile} ({plan.profile.magic}) from {safe(source.root)}"]
    lines += ["model: " + line for line in describe_spec(plan.spec)]
    rows = [[str(i), t.name, "x".join(map(str, t.slot.shape)), t.dtype.name.lower(),
             str(t.offset), f"{t.nbytes:,}", ", ".join(t.slot.sources) or "(zeros)"]
            for i, t in enumerate(plan.tensors)]
    lines += _table(rows, ["#", "tensor", "shape", "dtype", "offset", "bytes", "sources"])
    if plan.ignored_sources:
        lines.append("ignored (derived buffers): " + ", ".join(plan.ignored_sources))
    size = output_size(plan, source)
    params = plan.parameter_count()
    lines.append(f"output: {size:,} bytes ({len(plan.tensors)} tensors, {params:,} parameters, "
                 f"payload {plan.payload_end - plan.payload_offset:,} bytes)")
    return "\n".join(lines)


def _written_by(bf: BumpFile) -> str:
    if bf.metadata is not None:
        return bf.metadata.created_by
    if bf.engine_metadata is not None:
        return f"{bf.engine_metadata.get('created_by', 'unknown')} (engine metadata, no manifest)"
    return f"not recorded ({bf.magic} files carry no metadata)"


def blob_summary(bf: BumpFile, report: IntegrityReport | None) -> dict[str, Any]:
    """Everything `inspect` shows, as plain data (the `--json` output)."""
    payload = sum(t.nbytes for t in bf.tensors)
    params = sum(math.prod(t.slot.box) for t in bf.tensors if t.slot.box is not None)
    by_dtype: dict[str, int] = {}
    for t in bf.tensors:
        by_dtype[t.dtype] = by_dtype.get(t.dtype, 0) + t.nbytes
    fp32_bytes = sum(t.nbytes for t in bf.tensors if t.dtype == "fp32")
    fp32_params = sum(math.prod(t.slot.box) for t in bf.tensors
                      if t.slot.box is not None and t.dtype == "fp32")
    out: dict[str, Any] = {
        "file": str(bf.path),
        "magic": bf.magic,
        "version": bf.version,
        "profile": bf.profile.profile,
        "header_variant": bf.variant.name,
        "header_variant_description": bf.variant.description,
        "written_by": _written_by(bf),
        "size": bf.size,
        "checksum": bf.checksum.hex(),
        "checksum_status": ("not verified (use --verify)" if report is None
                            else "ok" if report.ok else "FAILED"),
        "header": dict(bf.header),
        "model": bf.spec.model_dump(mode="json", exclude={"derived_keys", "source_dtype"})
        if bf.spec else None,
        "tensors": [{"index": i, "name": t.name, "role": t.slot.role, "layer": t.slot.layer,
                     "shape": list(t.slot.shape), "dtype": t.dtype, "offset": t.offset,
                     "bytes": t.nbytes, "sources": list(t.slot.sources), "crc32": t.crc32}
                    for i, t in enumerate(bf.tensors)],
        "totals": {"tensors": len(bf.tensors), "parameters": params, "payload_bytes": payload,
                   "bytes_by_dtype": by_dtype,
                   "padding_bytes": fp32_bytes - 4 * fp32_params,
                   "padding_percent": round(100 * (fp32_bytes - 4 * fp32_params) / fp32_bytes, 3)
                   if fp32_bytes else 0.0},
        "source": bf.metadata.bumpconv.source if bf.metadata else None,
        "notes": list(bf.notes),
    }
    if report is not None:
        out["checks"] = [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in report.checks]
    return out


def format_blob(summary: dict[str, Any], tensors: bool = True) -> str:
    s = summary
    lines = [
        f"file      {safe(s['file'])}",
        f"format    {s['magic']} version {s['version']}, profile {s['profile']}, "
        f"header variant {s['header_variant']} ({s['header_variant_description']})",
        f"written   {safe(s['written_by'])}",
        f"size      {s['size']:,} bytes",
        f"checksum  sha256 {s['checksum'][:16]}... {s['checksum_status']}",
    ]
    if s["model"]:
        spec = ModelSpec.model_validate(s["model"])
        lines += [f"model     {line}" for line in describe_spec(spec)]
    else:
        h = s["header"]
        lines.append("model     " + ", ".join(f"{k}={v}" for k, v in h.items()
                                              if k not in ("version", "model_type")))
    if s["source"]:
        src = s["source"]
        files = ", ".join(f"{safe(f['name'])} ({f['bytes']:,} B, sha256 "
                          f"{(f['sha256'] or '?')[:16]}...)" for f in src["files"])
        where = f"{safe(src['repo_id'])}@{safe(src['commit'])}: " if src.get("repo_id") else ""
        lines.append(f"source    {src['kind']}: {where}{files}")
    if tensors:
        rows = [[str(t["index"]), safe(t["name"]), "x".join(map(str, t["shape"])), t["dtype"],
                 str(t["offset"]), f"{t['bytes']:,}"] for t in s["tensors"]]
        lines += ["", *_table(rows, ["#", "tensor", "shape", "dtype", "offset", "bytes"]), ""]
    tot = s["totals"]
    lines.append(f"totals    {tot['tensors']} tensors, {tot['parameters']:,} parameters, "
                 f"{tot['payload_bytes']:,} payload bytes ("
                 + ", ".join(f"{k}: {v:,}" for k, v in tot["bytes_by_dtype"].items())
                 + f"), padding {tot['padding_bytes']:,} bytes ({tot['padding_percent']}%)")
    for note in s["notes"]:
        lines.append(f"note      {safe(note)}")
    for c in s.get("checks", []):
        lines.append(f"check     {'ok  ' if c['ok'] else 'FAIL'} {c['name']}: {safe(c['detail'])}")
    return "\n".join(lines)
