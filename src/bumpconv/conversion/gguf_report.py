"""What ``bumpconv inspect FILE.gguf`` prints: the model a GGUF holds as bumpconv reads it, each
tensor's Hugging Face name, ggml type, whether it is un-permuted and what llama.cpp added to it
that reading takes off (Gemma's norms: 1), and what ``--quant keep`` would do with the default
profile."""

from __future__ import annotations

from typing import Any

from ..format.errors import LayoutError
from ..format.profile import DEFAULT_PROFILE
from ..format.spec import describe_spec
from ..format.text import safe, table
from .gguf_source import GGUFSource
from .plan import KEEP, plan_conversion


def gguf_summary(source: GGUFSource, profile: str = DEFAULT_PROFILE) -> dict[str, Any]:
    """A JSON-ready description of ``source`` and of its ``--quant keep`` plan."""
    try:
        plan = plan_conversion(source, profile, quant=KEEP)
        keep = {"profile": profile, "ok": True,
                "dtypes": sorted({t.dtype.label for t in plan.tensors
                                  if t.slot.content == "weights"})}
    except LayoutError as exc:
        keep = {"profile": profile, "ok": False, "why": str(exc)}
    tok = source.tokenizer
    return {
        "file": str(source.path), "architecture": source.architecture,
        "model": source.spec.model_dump(mode="json"),
        "tokenizer": None if tok is None else {"kind": tok[1].kind,
                                                "strings": len(tok[0].strings),
                                                "merges": len(tok[0].merges),
                                                "chat_template": tok[1].chat_template is not None},
        "tensors": [{"gguf": t.gguf_name, "hf": t.hf_name, "type": t.ggml_type,
                     "shape": list(source.tensors[t.hf_name].shape),
                     "unpermuted": t.rows is not None, "minus": t.shift}
                    for t in source.gguf_tensors.values()],
        "keep": keep,
    }


_KINDS = {"byte_level_bpe": "byte-level BPE", "sentencepiece_bpe": "SentencePiece-style BPE"}


def format_gguf(source: GGUFSource, summary: dict[str, Any], tensors: bool = True) -> str:
    lines = [f"file      {safe(source.path)} (GGUF, architecture {summary['architecture']})"]
    lines += ["model     " + line for line in describe_spec(source.spec)]
    tok = summary["tokenizer"]
    lines.append("tokenizer " + ("none carried" if tok is None else
                                 f"{_KINDS[tok['kind']]}, {tok['strings']:,} strings, "
                                 f"{tok['merges']:,} "
                                 f"merges, chat template "
                                 f"{'yes' if tok['chat_template'] else 'no'}"))
    keep = summary["keep"]
    lines.append(f"keep      {keep['profile']}: " + (f"ok, matrices {', '.join(keep['dtypes'])}"
                                                     if keep["ok"] else f"refused: {keep['why']}"))
    if tensors:
        shifted = any(t["minus"] for t in summary["tensors"])
        rows = [[t["gguf"], t["hf"], t["type"], "x".join(map(str, t["shape"])),
                 "yes" if t["unpermuted"] else "",
                 *([f"-{t['minus']:g}" if t["minus"] else ""] if shifted else [])]
                for t in summary["tensors"]]
        lines += table(rows, ["gguf", "hugging face", "type", "shape", "un-permuted",
                              *(["read as"] if shifted else [])])
    return "\n".join(lines)
