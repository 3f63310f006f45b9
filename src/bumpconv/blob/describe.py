"""What ``inspect`` prints about a blob, for humans and as JSON. Every string that came from a
file is escaped so a crafted name cannot inject terminal control sequences."""

from __future__ import annotations

import math
from typing import Any

from ..format.dtypes import DType
from ..format.profile import bits_per_weight
from ..format.engine_tokenizer import engine_template, engine_tokenizer_warnings
from ..format.spec import ModelSpec, describe_spec
from ..format.text import safe, table
from .check import CheckReport
from .reader import BumpFile


def _written_by(bf: BumpFile) -> str:
    if bf.metadata is not None:
        return bf.metadata.created_by
    if bf.engine_metadata is not None:
        return f"{bf.engine_metadata.get('created_by', 'unknown')} (engine metadata, no manifest)"
    return f"not recorded ({bf.magic} files carry no metadata)"


def blob_summary(bf: BumpFile, report: CheckReport | None) -> dict[str, Any]:
    """Everything `inspect` shows, as plain data (the `--json` output)."""
    payload = sum(t.nbytes for t in bf.tensors)
    params = sum(math.prod(t.slot.box) for t in bf.tensors if t.slot.box is not None)
    by_dtype: dict[str, int] = {}
    for t in bf.tensors:
        by_dtype[t.dtype.label] = by_dtype.get(t.dtype.label, 0) + t.nbytes
    fp32_bytes = sum(t.nbytes for t in bf.tensors if t.dtype == DType.FP32)
    fp32_params = sum(math.prod(t.slot.box) for t in bf.tensors
                      if t.slot.box is not None and t.dtype == DType.FP32)
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
        "checksum_status": _checksum_status(report),
        "header": dict(bf.header),
        "model": bf.spec.model_dump(mode="json", exclude={"derived_keys", "source_dtype"})
        if bf.spec else None,
        "tensors": [{"index": i, "name": t.name, "role": t.slot.role, "layer": t.slot.layer,
                     "shape": list(t.slot.shape), "dtype": t.dtype.label, "offset": t.offset,
                     "bytes": t.nbytes, "blocks": t.slot.numel // t.dtype.block.elements,
                     "bits_per_weight": round(8 * t.nbytes / t.slot.numel, 4),
                     "sources": list(t.slot.sources), "crc32": t.crc32}
                    for i, t in enumerate(bf.tensors)],
        "totals": {"tensors": len(bf.tensors), "parameters": params, "payload_bytes": payload,
                   "bytes_by_dtype": by_dtype, "bits_per_weight": bits_per_weight(bf.tensors),
                   "padding_bytes": fp32_bytes - 4 * fp32_params,
                   "padding_percent": round(100 * (fp32_bytes - 4 * fp32_params) / fp32_bytes, 3)
                   if fp32_bytes else 0.0},
        "source": bf.metadata.bumpconv.source if bf.metadata else None,
        "tokenizer": _tokenizer_summary(bf),
        "notes": list(bf.notes),
    }
    if report is not None:
        out["checks"] = [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in report.checks]
    return out


def _tokenizer_summary(bf: BumpFile) -> dict[str, Any] | None:
    """The tokenizer a blob carries, and where the engine's own C tokenizer would differ."""
    section = bf.metadata.bumpconv.tokenizer if bf.metadata is not None else None
    if section is None or bf.spec is None:
        return None
    record = section.record
    special = [t["content"] for t in record.added_tokens if t.get("special")]
    return {"kind": record.kind, "vocab_size": bf.spec.vocab_size,
            "merges": section.num_merges, "total_vocab_bytes": section.total_vocab_bytes,
            "special_tokens": special, "bos_token_id": record.bos_token_id,
            "eos_token_ids": record.eos_token_ids, "chat_template": record.chat_template is not None,
            "engine_warnings": engine_tokenizer_warnings(
                record, engine_template(bf.spec.architecture), tokenizer_type="bpe")}


def format_blob(summary: dict[str, Any], tensors: bool = True, verbose: bool = False) -> str:
    """``inspect``'s text: the summary, the tensor table unless ``tensors`` is False, and
    where the engine's own C tokenizer would differ from HF's - counted, or with ``verbose``
    listed (the user of ``bumpconv run`` cannot act on it; the engine's user can)."""
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
                 f"{t['blocks']:,}", f"{t['bits_per_weight']:g}", str(t["offset"]),
                 f"{t['bytes']:,}"] for t in s["tensors"]]
        lines += ["", *table(rows, ["#", "tensor", "shape", "dtype", "blocks", "bits/w", "offset",
                                    "bytes"]), ""]
    tot = s["totals"]
    lines.append(f"totals    {tot['tensors']} tensors, {tot['parameters']:,} parameters, "
                 f"{tot['payload_bytes']:,} payload bytes ("
                 + ", ".join(f"{k}: {v:,}" for k, v in tot["bytes_by_dtype"].items())
                 + f"), {tot['bits_per_weight']:.3f} bits per weight, padding "
                 f"{tot['padding_bytes']:,} bytes ({tot['padding_percent']}%)")
    tok = s.get("tokenizer")
    if tok:
        shown = ", ".join(safe(t) for t in tok["special_tokens"][:6])
        more = f" and {len(tok['special_tokens']) - 6} more" if len(tok["special_tokens"]) > 6 else ""
        lines.append(f"tokenizer {tok['kind'].replace('_', ' ')}: {tok['vocab_size']:,} tokens, "
                     f"{tok['merges']:,} merges, {tok['total_vocab_bytes']:,} string bytes; "
                     f"special {shown}{more}; bos {tok['bos_token_id']}, eos "
                     f"{tok['eos_token_ids']}; chat template "
                     f"{'yes' if tok['chat_template'] else 'no'}")
        differences = tok["engine_warnings"]
        if verbose:
            lines += [f"engine    {safe(w)}" for w in differences]
        elif differences:
            lines.append(f"engine    the engine's own C tokenizer would encode some text "
                         f"differently from HF's ({len(differences)} reason(s): inspect "
                         "--verbose); bumpconv run and parity use HF's")
    for note in s["notes"]:
        lines.append(f"note      {safe(note)}")
    for c in s.get("checks", []):
        lines.append(f"check     {'ok  ' if c['ok'] else 'FAIL'} {c['name']}: {safe(c['detail'])}")
    return "\n".join(lines)


def _checksum_status(report: CheckReport | None) -> str:
    """The header checksum's own result (other checks are listed on their own lines)."""
    if report is None:
        return "not checked (use --check)"
    check = next((c for c in report.checks if c.name == "header checksum"), None)
    return "ok" if check is not None and check.ok else "FAILED"
