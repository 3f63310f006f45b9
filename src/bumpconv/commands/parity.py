"""``bumpconv parity SRC BLOB``: is the blob the same model as SRC, and if not, where not?

The reference is transformers itself (see bumpconv.reference); the comparison and its
thresholds are in bumpconv.parity and docs/parity.md. Exit status 0 only when every check
passes, 1 on a difference (or an error).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ParityError
from . import positive_float, positive_int
from ..parity import (ParityOptions, ParityReport, Row, Thresholds, run_parity,
                      write_dump)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "parity", help="compare a blob with its HF checkpoint: logits, layers, stages",
        description="Run the blob in the C runtime and the source in transformers (fp32, eager "
                    "attention) on fixed prompts; compare token ids, logits at every position, "
                    "the hidden state after every layer, and the stages of one layer.")
    p.add_argument("src", help="model directory or cached repo id the blob was made from")
    p.add_argument("blob", type=Path, help=".bump file")
    p.add_argument("--layer", type=int, metavar="N",
                   help="diff every stage of layer N (default: the first layer that fails)")
    p.add_argument("--tol", type=positive_float, default=Thresholds.rtol, metavar="RTOL",
                   help="relative error tolerance of hidden states and stages "
                        f"(max|run-ref|/max|ref|; default {Thresholds.rtol:g})")
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.dump is not None and args.layer is None:
        raise ParityError("--dump needs --layer N (the layer whose stages to save)")
    options = ParityOptions(
        prompts=tuple(args.prompt) if args.prompt else None, layer=args.layer,
        context_sweep=args.context_sweep, thresholds=Thresholds(rtol=args.tol),
        threads=args.threads, rope_pairing=args.rope_pairing)
    report = run_parity(args.src, args.blob, options)
    if args.dump is not None:
        write_dump(args.dump, report, args.layer)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, allow_nan=False))
    else:
        print(format_report(report, dumped=args.dump))
    return 0 if report.passed else 1


def format_report(r: ParityReport, dumped: Path | None = None) -> str:
    """The human-readable report: one section per check, the verdict last."""
    t = r.thresholds
    out = [f"parity: {r.blob} against {r.src} (transformers fp32, eager attention)"]
    out += [f"note: {n}" for n in r.notes]
    sizes = ", ".join(str(len(p.ids)) for p in r.prompts)
    bad = [i for i, p in enumerate(r.prompts) if p.first_mismatch is not None]
    if all(p.synthetic for p in r.prompts):
        out.append(f"tokens: {len(r.prompts)} synthetic prompt(s) of {sizes} ids")
    else:
        out.append(f"tokens: {len(r.prompts)} prompt(s) of {sizes} tokens; tokenizer.json and "
                   "AutoTokenizer ids " + ("identical" if not bad else
                                            f"DIFFER in prompt(s) {', '.join(map(str, bad))}"))
    out.append(f"\nlogits at every position (pass: max|diff| <= {t.logit_atol:g}, NMSE <= "
               f"{t.nmse:g}, KL <= {t.kl:g}, top-1 agrees)")
    out.append(f"  {'prompt':>6} {'tokens':>6} {'max|diff|':>10} {'max NMSE':>10} {'max KL':>10} "
               f"{'top-1':>9} {'first bad':>9}")
    for i, c in enumerate(r.logits):
        first = str(int(c.bad_positions[0])) if not c.passed else "-"
        out.append(f"  {i:>6} {len(c.max_abs):>6} {c.max_abs.max():>10.2e} {c.nmse.max():>10.2e} "
                   f"{c.kl.max():>10.2e} {f'{c.top1_identical}/{len(c.max_abs)}':>9} {first:>9}")
    out.append(f"\nhidden state after every layer, prompt {r.sweep_prompt} (relative error "
               f"max|run-ref|/max|ref|, rtol {t.rtol:g})")
    out += _rows(r.sweep.rows, r.sweep.first_bad)
    for diff in r.stages:
        what = "the output head" if diff.layer is None else f"layer {diff.layer}"
        out.append(f"\nstages of {what}, prompt {r.sweep_prompt} (rtol {t.rtol:g})")
        out += _rows(diff.rows, diff.first_bad)
        if diff.first_bad is not None:
            out.append(f"  first stage beyond tolerance: {diff.first_bad.stage}")
    if r.context is not None:
        c = r.context
        out.append(f"\ncontext sweep 1..{len(c.prefill.max_abs)}: the last position's logits, "
                   "prefill of each prefix and decode steps, against HF")
        for name, check in (("prefill", c.prefill), ("decode", c.decode)):
            out.append(f"  {name:<8} max|diff| {check.max_abs.max():.2e}, max KL "
                       f"{check.kl.max():.2e}, top-1 {check.top1_identical}/{len(check.max_abs)}")
        out.append(f"  first context where top-1 changes: {c.first_top1_change or 'none'}; "
                   f"first failing context: {c.first_failure or 'none'}")
    if dumped is not None:
        out.append(f"\nstage tensors saved to {dumped}")
    out.append("\n" + r.verdict)
    return "\n".join(out)


def _rows(rows: list[Row], first_bad: Row | None) -> list[str]:
    out = [f"  {'':<12} {'shape':<16} {'max|diff|':>10} {'max|ref|':>10} {'rel':>10} "
           f"{'first pos':>9}"]
    for row in rows:
        if row.diff is None:
            out.append(f"  {row.key:<12} {str(list(row.shape)):<16} {row.problem}"
                       + ("  <- first" if row is first_bad else ""))
            continue
        pos = row.first_position
        out.append(f"  {row.key:<12} {str(list(row.shape)):<16} {row.diff.max_abs:>10.2e} "
                   f"{row.diff.ref_max:>10.2e} {row.rel:>10.2e} {'-' if pos is None else pos:>9}"
                   + ("  <- first" if row is first_bad else ""))
    return out
