"""``bumpconv convert SRC OUT``: plan, then stream the checkpoint into a blob atomically."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ..conversion.convert import convert_checkpoint, writes_directory
from ..conversion.gguf_source import requantize_warning
from ..conversion.plan import FP32, KEEP, plan_conversion
from ..conversion.plan_report import format_plan
from ..conversion.source import open_source
from ..files.atomic import check_destination
from ..format.engine_directory import MODEL_FILES
from ..format.engine_policy import is_engine_profile
from ..format.profile import DEFAULT_PROFILE, PROFILES, load_profile
from ..format.quant_policy import quant_names
from . import OldName


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a HF checkpoint to a .bump blob",
                       description="Convert a Hugging Face checkpoint (a directory, or a repo id "
                                   "already in the local HF cache) to a bump blob.")
    p.add_argument("src", help="model directory, cached repo id (org/name) or .gguf file")
    p.add_argument("out", type=Path, help="output: for an engine profile a model directory "
                                          "(weights.bump + the engine's sidecars) unless the "
                                          "name ends in .bump (the blob alone); else a file")
    p.add_argument("--profile", default=DEFAULT_PROFILE, choices=PROFILES,
                   help=f"layout profile to write (default: {DEFAULT_PROFILE})")
    p.add_argument("--format", dest="profile", choices=PROFILES, action=OldName, new="--profile")
    p.add_argument("--context", type=int, metavar="N",
                   help="context length to record (and pos_emb rows for bumpwgt3)")
    p.add_argument("--quant", type=str.lower, choices=(KEEP, FP32, *quant_names()), metavar="NAME",
                   help="quantize the matrices: a single type (" + ", ".join(
                       n for n in quant_names() if not n.endswith("_m")) + ") or a llama.cpp "
                        "mix (" + ", ".join(n for n in quant_names() if n.endswith("_m")) +
                        "), in any case (Q4_K_M as llama.cpp spells it); norms and biases "
                        "stay fp32 (schemas/quant.policy.json). A GGUF source: 'keep' (its "
                        "default) passes its quantized blocks through, 'f32' dequantizes, a "
                        "policy name re-quantizes (docs/gguf.md)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan and output size without reading tensor data (with "
                        "--quiet, without the per-tensor table); the output path is checked "
                        "as a conversion would")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="convert weights that hold NaN or infinity (refused by default)")
    p.add_argument("--engine-sidecars", action=argparse.BooleanOptionalAction, default=None,
                   help="the engine's weights_manifest.json/.map and config.json come with a "
                        "model directory and never beside a .bump file; this flag only asserts "
                        "which one you expect")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.add_argument("--verbose", action="store_true",
                   help="also print what the engine's own C tokenizer would do differently "
                        "from Hugging Face's on this tokenizer (bumpconv run is unaffected)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.dry_run:
        profile = load_profile(args.profile)
        with open_source(args.src, with_tokenizer=profile.carries_tokenizer) as source:
            plan = plan_conversion(source, args.profile, context=args.context, quant=args.quant)
            if (requantized := requantize_warning(source, args.quant)) is not None:
                warnings.warn(requantized, stacklevel=1)
            check_destination(args.out, args.force, source.input_files(),
                              MODEL_FILES if writes_directory(args.out, args.profile) else None)
            print(format_plan(plan, source, tensors=not args.quiet))
        return 0
    done = convert_checkpoint(args.src, args.out, args.profile, context=args.context,
                              quant=args.quant, force=args.force,
                              engine_sidecars=args.engine_sidecars, progress=not args.quiet,
                              allow_nonfinite=args.allow_nonfinite)
    if args.verbose:
        for note in done.engine_notes:  # for the engine user the sidecars serve
            print(f"bumpconv: note: {note}", file=sys.stderr)
    if not args.quiet:
        r = done.result
        what = (f"{done.directory}/: {r.path.name}" if done.directory is not None else r.path)
        print(f"wrote {what} ({r.size:,} bytes, {len(done.plan.tensors)} tensors, "
              f"{done.plan.profile.magic}, sha256 {r.checksum[:16]}...)"
              + (f" and {', '.join(p.name for p in done.sidecars)}" if done.sidecars else ""),
              file=sys.stderr)
        if done.directory is None and is_engine_profile(done.plan.profile):
            print(f"  the blob alone, without the engine's sidecars; `bumpconv convert "
                  f"{args.src} DIR` writes a model directory that the engine's ck_run_v7/v8 "
                  "run as it is", file=sys.stderr)
    return 0
