"""``bumpconv inspect FILE``: what is in a blob, and whether it is intact."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..blob.check import CheckReport, check_blob, check_engine_only
from ..blob.describe import blob_summary, format_blob
from ..blob.reader import open_blob
from ..conversion.gguf_report import format_gguf, gguf_summary
from ..conversion.gguf_source import is_gguf, open_gguf
from ..format.errors import BlobError
from . import OldName


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="describe a .bump blob and check its integrity",
                       description="Identify a bump blob (bumpconv- or engine-written "
                                   "BUMPWGT3/4/5), list its tensors, and optionally verify it.")
    p.add_argument("file", type=Path, help=".bump file, a model directory (its weights.bump and "
                                           "the engine's sidecars), or a .gguf source to describe")
    p.add_argument("--check", action="store_true",
                   help="recompute every checksum and hash, check padding, and the engine's "
                        "traps in the sidecars beside the blob (also in the engine's own "
                        "directories); exit 1 on failure")
    p.add_argument("--verify", dest="check", nargs=0, const=True, action=OldName, new="--check")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--summary", action="store_true", help="omit the per-tensor table")
    p.add_argument("--verbose", action="store_true",
                   help="list each way the engine's own C tokenizer would encode text "
                        "differently from Hugging Face's (a count otherwise)")
    p.add_argument("--config", type=Path, metavar="CONFIG_JSON",
                   help="config.json for files that do not record every setting (BUMPWGT3/4)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if is_gguf(str(args.file)):  # a source, not a blob: what bumpconv reads from it
        with open_gguf(str(args.file), with_tokenizer=True) as source:
            summary = gguf_summary(source)
            print(json.dumps(summary, indent=2) if args.json
                  else format_gguf(source, summary, tensors=not args.summary))
        return 0
    try:
        bf = open_blob(args.file, config=args.config)
    except BlobError as exc:  # perhaps the engine's own blob: its directory can still be checked
        engine = check_engine_only(args.file) if args.check else None
        if engine is None:
            raise
        return _engine_only(engine, str(exc), args.json)
    with bf:
        report = check_blob(bf) if args.check else None
        summary = blob_summary(bf, report)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_blob(summary, tensors=not args.summary, verbose=args.verbose))
    return 0 if report is None or report.ok else 1


def _engine_only(report: CheckReport, why: str, as_json: bool) -> int:
    """Print the engine checks of a directory whose blob bumpconv does not read."""
    checks = [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in report.checks]
    if as_json:
        print(json.dumps({"path": str(report.path), "blob": f"not read: {why}",
                          "checks": checks}, indent=2))
    else:
        print(f"{report.path}: its blob is not one bumpconv reads ({why}), so only the engine "
              "checks of its sidecars ran")
        for c in report.checks:
            print(f"check     {'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
    return 0 if report.ok else 1
