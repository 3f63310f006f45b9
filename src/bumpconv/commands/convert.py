"""``bumpconv convert SRC OUT``: plan, then stream the checkpoint into a blob atomically."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ..conversion.plan import Plan, plan_conversion
from ..conversion.report import format_plan
from ..conversion.sidecars import (check_sidecar_paths, engine_refusal, engine_sidecars,
                                   engine_warnings, write_sidecars)
from ..conversion.source import open_source
from ..conversion.writer import write_blob
from ..format.errors import LayoutError
from ..format.profile import DEFAULT_PROFILE, PROFILES, load_profile


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
    p.add_argument("--engine-sidecars", action=argparse.BooleanOptionalAction, default=None,
                   help="write weights_manifest.json/.map and config.json for the engine's v7 "
                        "build step next to the blob (default: on for engine-v7)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    with open_source(args.src, with_tokenizer=profile.carries_tokenizer) as source:
        plan = plan_conversion(source, args.profile, context=args.context)
        if args.dry_run:
            print(format_plan(plan, source))
            return 0
        inputs = source.input_files()
        sidecars = _sidecars(args, plan, profile.sidecars == "engine-v7", inputs)
        result = write_blob(plan, source, args.out, force=args.force, progress=not args.quiet,
                            allow_nonfinite=args.allow_nonfinite)
        engine_notes = engine_warnings(plan, source) if sidecars else []
    directory = args.out.parent if str(args.out.parent) else Path(".")
    written = write_sidecars(sidecars, directory, args.force, inputs) if sidecars else []
    for note in [] if args.quiet else engine_notes:  # for the engine user the sidecars serve
        warnings.warn(note, stacklevel=1)
    if not args.quiet:
        print(f"wrote {result.path} ({result.size:,} bytes, {len(plan.tensors)} tensors, "
              f"{plan.profile.magic}, sha256 {result.checksum[:16]}...)"
              + (f" and {', '.join(p.name for p in written)}" if written else ""),
              file=sys.stderr)
    return 0


def _sidecars(args: argparse.Namespace, plan: Plan, default: bool,
              inputs: list[Path]) -> dict[str, bytes]:
    """The engine sidecars to write, checked before the blob is: none unless asked for or the
    profile's default, and none (a warning, or an error when asked for) for a model the
    engine's runtime cannot run as transformers does."""
    wanted = default if args.engine_sidecars is None else args.engine_sidecars
    if not wanted:
        return {}
    why = engine_refusal(plan.spec)
    if why is not None:
        if args.engine_sidecars:
            raise LayoutError(f"--engine-sidecars: {why}")
        warnings.warn(f"no engine sidecars: {why}; the blob is for bumpconv's runtime",
                      stacklevel=1)
        return {}
    check_sidecar_paths(args.out.parent if str(args.out.parent) else Path("."), args.force,
                        inputs)
    return engine_sidecars(plan, args.out.name)
