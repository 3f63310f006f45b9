"""How far parity's reference is from exact: HF fp32 and the C runtime against HF in float64.

Parity compares the runtime with transformers in fp32 at a relative tolerance of 1e-5. Where a
model's residual stream cancels a large value (SmolLM2-135M carries ~17,000 in one channel and
its layer 28 takes it to ~2,100), fp32 rounding on *either* side can reach that tolerance
relative to the small result. This tool measures it: the same HF model parity uses (for a
quantized blob, carrying the blob's dequantized weights), run once in fp32 and once converted to
float64, and the runtime on the blob, on parity's long default prompt.

Per layer output it prints max|a - b| over two denominators: ``|out|`` (the layer's own output,
parity's old criterion) and ``(b)``, parity's scale now (max(|stream in|, |stream out|),
bumpconv.comparison.metrics), for HF32 vs HF64, runtime vs HF64 and runtime vs HF32 (parity's
own comparison). With ``--stages``, also the worst stage of each layer under parity's stage
scales, HF32 vs HF64 and runtime vs HF32. Figures only, never a verdict.

    python tools/reference_noise.py .cache/smollm2-fp32 BLOB [--layers 10 11 28 29] [--stages]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bumpconv.comparison.dequantized import load_dequantized  # noqa: E402
from bumpconv.comparison.metrics import difference, stage_diff, sweep_scales  # noqa: E402
from bumpconv.comparison.reference import (Reference, source_root,  # noqa: E402
                                           tokenize_prompts)
from bumpconv.format.errors import BumpError  # noqa: E402
from bumpconv.run.runtime import BumpModel  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="the checkpoint the blob was converted from")
    ap.add_argument("blob", type=Path)
    ap.add_argument("--layers", type=int, nargs="*",
                    help="layer outputs to print (default: every layer)")
    ap.add_argument("--stages", action="store_true",
                    help="also the worst stage of each printed layer (parity's stage scales)")
    args = ap.parse_args(argv)
    try:
        reference = load_dequantized(args.src, args.blob).reference
    except BumpError as e:
        print(f"reference_noise: error: {e}", file=sys.stderr)
        return 1
    count = reference.spec.num_layers
    layers = args.layers if args.layers else list(range(count))
    bad = [layer for layer in layers if not 0 <= layer < count]
    if bad:
        ap.error(f"--layers: {bad[0]} is not a layer of the model (0..{count - 1})")
    ref64 = Reference(reference.root, reference.spec, copy.deepcopy(reference.model).double())
    ids = list(tokenize_prompts(source_root(args.src), None, reference.spec.vocab_size)[0].ids)
    tapped = layers if args.stages else []
    r32, r64 = reference.run(ids, tapped), ref64.run(ids, tapped)
    h32, h64 = r32.hidden_states, r64.hidden_states  # HF64's, rounded to fp32 on the way out
    with BumpModel.open(args.blob, threads=2) as model:
        run = model.hidden_states(ids)
        taps = {layer: model.taps(ids, layer) for layer in tapped}
    scales = sweep_scales(h32)
    print(f"{args.blob.name}: {len(ids)} tokens; max|a - b| of each layer's output over |out| "
          "and over (b) = max(|in|, |out|)")
    pairs = (("HF32 vs HF64", h32, h64), ("run vs HF64", run, h64), ("run vs HF32", run, h32))
    head = "".join(f" {name + ' ' + d:>20}" for name, _, _ in pairs for d in ("|out|", "(b)"))
    print(f"{'layer':>5}{head}" + (f" {'worst stage HF32 vs HF64':>28} {'run vs HF32':>22}"
                                   if args.stages else ""))
    for layer in layers:
        i = layer + 1
        cells = []
        for _, a, b in pairs:
            cells += [difference(a[i], b[i]).rel, difference(a[i], b[i], floor=scales[i]).rel]
        line = f"{layer:>5}" + "".join(f" {c:>20.3g}" for c in cells)
        if args.stages:
            hf = stage_diff(layer, r32.stages[layer], r64.stages[layer], 1e-5, h32)
            rt = stage_diff(layer, taps[layer], r32.stages[layer], 1e-5, h32)
            w_hf, w_rt = (max(d.rows, key=lambda r: r.rel) for d in (hf, rt))
            line += f" {w_hf.key:>18} {w_hf.rel:9.3g} {w_rt.key:>12} {w_rt.rel:9.3g}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
