"""``bumpconv parity SRC BLOB``: is the blob the same model as SRC, and if not, where not?

The reference is transformers itself (see bumpconv.comparison.reference); the comparison and its
thresholds are in bumpconv.comparison and docs/parity.md. Exit status 0 only when every check
passes, 1 on a difference (or an error).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..api import check_source_first
from ..format.errors import ParityError
from ..comparison.parity_run import ParityOptions, run_parity, write_dump
from ..comparison.metrics import Thresholds
from ..comparison.parity_plot import plot_parity
from ..comparison.parity_report import format_report
from . import capped_threads, positive_float, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "parity", help="compare a blob with its HF checkpoint: logits, layers, stages",
        description="Run the blob in the C runtime and the source in transformers (fp32, eager "
                    "attention) on fixed prompts; compare token ids, logits at every position, "
                    "the hidden state after every layer, and every stage of every layer up to "
                    "the first that differs.")
    p.add_argument("src", help="model directory, cached repo id or .gguf file the blob was "
                                "made from")
    p.add_argument("blob", type=Path, help=".bump file")
    p.add_argument("--layer", type=int, metavar="N",
                   help="print every stage of layer N in full (every layer's stages are "
                        "checked; the first layer that fails is printed in full anyway)")
    p.add_argument("--tol", type=positive_float, default=Thresholds.rtol, metavar="RTOL",
                   help="relative error tolerance of the hidden state after every layer "
                        f"(max|run-ref| / scale, docs/parity.md; default {Thresholds.rtol:g})")
    p.add_argument("--stage-tol", type=positive_float, default=Thresholds.stage_rtol,
                   metavar="RTOL", help="relative error tolerance of every stage "
                                        f"(default {Thresholds.stage_rtol:g})")
    p.add_argument("--force", action="store_true", help="replace an existing --dump file")
    p.add_argument("--dump", type=Path, metavar="FILE.npz",
                   help="save both sides' stage tensors of the --layer to an .npz")
    p.add_argument("--context-sweep", type=int, nargs="?", const=0, metavar="N",
                   help="also run context lengths 1..N (default N: the long prompt's length) "
                        "through prefill and decode; report the first where top-1 changes")
    p.add_argument("--prompt", action="append", metavar="TEXT",
                   help="prompt to use instead of the built-in ones (repeatable)")
    p.add_argument("--threads", type=positive_int, default=2, metavar="N",
                   help="threads for torch and the runtime (default 2)")
    p.add_argument("--rope-pairing", choices=("interleaved",),
                   help="fault injection: run the runtime with the engine's historical "
                        "interleaved RoPE pairs, to see how parity reports that bug")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--plot", type=Path, metavar="FILE.png",
                   help="draw the relative error per layer and per stage, the first bad one "
                        "marked (needs matplotlib)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_source_first(args.src, args.blob, "parity")
    if args.dump is not None and args.layer is None:
        raise ParityError("--dump needs --layer N (the layer whose stages to save)")
    if args.dump is not None and args.dump.exists() and not args.force:  # before the slow part
        raise ParityError(f"{args.dump}: already exists (use --force to overwrite)")
    options = ParityOptions(
        prompts=tuple(args.prompt) if args.prompt else None, layer=args.layer,
        context_sweep=args.context_sweep,
        thresholds=Thresholds(rtol=args.tol, stage_rtol=args.stage_tol),
        threads=capped_threads(args.threads), rope_pairing=args.rope_pairing)
    report = run_parity(args.src, args.blob, options)
    if args.dump is not None:
        write_dump(args.dump, report, args.layer, force=args.force)
    if args.plot is not None:
        plot_parity(report, args.plot)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, allow_nan=False))
    else:
        print(format_report(report, dumped=args.dump))
    return 0 if report.passed else 1
