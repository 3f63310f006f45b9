"""``bumpconv convert SRC OUT``: plan, then stream the checkpoint into a blob atomically."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..conversion.plan import make_plan
from ..conversion.report import format_plan
from ..conversion.source import open_source
from ..conversion.writer import write_blob
from ..format.profile import DEFAULT_PROFILE, PROFILES


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a HF checkpoint to a .bump blob",
                       description="Convert a Hugging Face checkpoint (a directory, or a repo id "
                                   "already in the local HF cache) to a bump blob.")
    p.add_argument("src", help="model directory or cached repo id (org/name)")
    p.add_argument("out", type=Path, help="output .bump file")
    p.add_argument("--profile", "--format", dest="profile", default=DEFAULT_PROFILE,
                   choices=PROFILES, help=f"layout profile to write (default: {DEFAULT_PROFILE}; "
                                          "--format is the old name)")
    p.add_argument("--context", type=int, metavar="N",
                   help="context length to record (and pos_emb rows for bumpwgt3)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan and output size without reading tensor data")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="convert weights that hold NaN or infinity (refused by default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with open_source(args.src) as source:
        plan = make_plan(source.spec, source.tensors, args.profile, context=args.context)
        if args.dry_run:
            print(format_plan(plan, source))
            return 0
        result = write_blob(plan, source, args.out, force=args.force, progress=not args.quiet,
                            allow_nonfinite=args.allow_nonfinite)
    if not args.quiet:
        print(f"wrote {result.path} ({result.size:,} bytes, {len(plan.tensors)} tensors, "
              f"{plan.profile.magic}, sha256 {result.checksum[:16]}...)", file=sys.stderr)
    return 0
