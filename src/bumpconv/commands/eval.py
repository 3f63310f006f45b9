"""``bumpconv eval SRC BLOB [BLOB...]``: how far each blob is from SRC on real text.

The statistics are llama.cpp's ``--kl-divergence`` ones against transformers' own fp32 model;
docs/eval.md says how each is computed and what the gates are. Exit status 0 only when every
blob is within the gate of its weight type, 1 otherwise (or on an error).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..evaluate.corpus import load_catalog
from ..evaluate.lockstep import EvalOptions, run_eval
from ..evaluate.eval_plot import plot_eval
from ..evaluate.eval_report import format_report
from ..api import check_source_first
from . import capped_threads, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    catalog = load_catalog()
    names = ", ".join(c.name for c in catalog.corpora)
    gated = ", ".join(c.name for c in catalog.corpora if c.gated)
    p = sub.add_parser(
        "eval", help="perplexity, KL divergence and top-1 agreement of blobs against SRC",
        description="Run SRC in transformers (fp32) and every BLOB in the C runtime over a "
                    "corpus, chunk by chunk in lockstep, and report llama.cpp's statistics: "
                    "perplexity of both and their ratio, KL divergence (mean, median, 99%, "
                    "99.9%, max), same top token, RMS and max change in the probability of "
                    "the correct token; for each blob also HF running the blob's own "
                    "dequantized weights, which separates the quantization error from the "
                    "kernels'. Exit status 1 when a blob misses the gate of its weight type.")
    p.add_argument("src", help="model directory or cached repo id the blobs were made from")
    p.add_argument("blobs", type=Path, nargs="+", metavar="BLOB", help=".bump file(s)")
    p.add_argument("--corpus", metavar="NAME|FILE",
                   help=f"a named corpus ({names}) or a UTF-8 text file (default: "
                        f"{', '.join(catalog.default)}; gated: {gated}, the others are "
                        "reported only; a file is gated)")
    p.add_argument("--ctx", type=positive_int, default=EvalOptions.ctx, metavar="N",
                   help=f"tokens per chunk; the second half is scored (default {EvalOptions.ctx})")
    p.add_argument("--chunks", type=positive_int, metavar="N",
                   help="evaluate at most the first N chunks of each corpus")
    p.add_argument("--gates", type=Path, metavar="FILE.json",
                   help="gate table to use instead of the packaged one (schemas/eval-gates.json)")
    p.add_argument("--threads", type=positive_int, default=2, metavar="N",
                   help="threads for torch and the runtime (default 2)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--plot", type=Path, metavar="FILE.png",
                   help="draw the KL distribution and the top-1 disagreement by position "
                        "(needs matplotlib)")
    p.add_argument("--rope-pairing", choices=("interleaved",),
                   help="fault injection: run the runtime with the engine's historical "
                        "interleaved RoPE pairs, to see how a kernel bug shows in (c)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_source_first(args.src, args.blobs[0], "eval")
    options = EvalOptions(corpus=args.corpus, ctx=args.ctx, chunks=args.chunks,
                          threads=capped_threads(args.threads), gates=args.gates,
                          progress=not args.quiet,
                          rope_pairing=args.rope_pairing)
    report = run_eval(args.src, list(args.blobs), options)
    if args.plot is not None:
        plot_eval(report, args.plot)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, allow_nan=False))
    else:
        print(format_report(report))
    return 0 if report.passed else 1
