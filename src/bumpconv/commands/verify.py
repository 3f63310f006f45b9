"""``bumpconv verify FILE --against SRC``: every packed tensor equals its source, bit for bit."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..api import verify


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="prove a blob holds exactly a checkpoint's weights",
                       description="Check the blob's checksums, then unpack every tensor and "
                                   "compare it with the source exactly (all padding must be zero).")
    p.add_argument("file", type=Path, help=".bump file")
    p.add_argument("--against", required=True, metavar="SRC",
                   help="model directory, cached repo id or .gguf file the blob was made from")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = verify(args.file, args.against)
    print(f"OK: {args.file} matches {args.against}: {result.tensors} packed tensors, "
          f"{result.source_tensors} source tensors, {result.elements:,} values bit-identical "
          "(quantized ones block for block: the source quantized again, or a GGUF's "
          "own blocks), "
          + ("tokenizer arrays identical and rebuilding tokenizer.json, " if result.tokenizer
             else "") + "padding zero, checksums valid")
    return 0
