"""How far parity's reference is from exact: HF fp32 and the C runtime against HF in float64.

Parity compares the runtime with transformers in fp32 at a relative tolerance of 1e-5. Where a
model's residual stream cancels a large value (SmolLM2-135M carries ~15,000 in one channel and
some layers cancel most of it), fp32 rounding on *either* side can reach that tolerance. This
tool measures it: the same HF model parity uses (for a quantized blob, carrying the blob's
dequantized weights), run once in fp32 and once converted to float64, and the runtime on the
blob, on parity's long default prompt. Per layer output it prints max|a - b| / max|HF64| for HF32
vs HF64, runtime vs HF64, and runtime vs HF32 (parity's number). Figures only, never a verdict.

    python tools/reference_noise.py .cache/smollm2-fp32 BLOB [--layers 10 11 28 29]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bumpconv.comparison.dequantized import load_dequantized  # noqa: E402
from bumpconv.comparison.metrics import difference  # noqa: E402
from bumpconv.comparison.reference import source_root, tokenize_prompts  # noqa: E402
from bumpconv.format.errors import BumpError  # noqa: E402
from bumpconv.run.runtime import BumpModel  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="the checkpoint the blob was converted from")
    ap.add_argument("blob", type=Path)
    ap.add_argument("--layers", type=int, nargs="*",
                    help="layer outputs to print (default: every layer)")
    args = ap.parse_args(argv)
    try:
        reference = load_dequantized(args.src, args.blob).reference
    except BumpError as e:
        print(f"reference_noise: error: {e}", file=sys.stderr)
        return 1
    # hidden_states[L + 1] is layer L's output, except the last layer's (transformers gives it
    # after the final norm): layers 0 .. num_layers - 2 are compared
    comparable = reference.model.config.num_hidden_layers - 1
    layers = args.layers if args.layers else range(comparable)
    bad = [layer for layer in layers if not 0 <= layer < comparable]
    if bad:
        ap.error(f"--layers: {bad[0]} is not a layer this tool compares (0..{comparable - 1})")
    import torch

    m32 = reference.model
    m64 = copy.deepcopy(m32).double()
    ids = list(tokenize_prompts(source_root(args.src), None, m32.config.vocab_size)[0].ids)
    with torch.no_grad():
        x = torch.tensor([ids])
        h32 = m32(x, output_hidden_states=True).hidden_states
        h64 = m64(x, output_hidden_states=True).hidden_states
    with BumpModel.open(args.blob, threads=2) as model:
        run = model.hidden_states(ids)
    # parity's relative error (comparison.metrics.difference), against HF64 or HF32
    print(f"{args.blob.name}: {len(ids)} tokens; relative error of each layer's output")
    print(f"{'layer':>5} {'HF32 vs HF64':>13} {'run vs HF64':>12} {'run vs HF32':>12}")
    for layer in layers:
        a32, a64 = h32[layer + 1][0].double().numpy(), h64[layer + 1][0].numpy()
        r = run[layer + 1]
        print(f"{layer:>5} {difference(a32, a64).rel:>13.3g} {difference(r, a64).rel:>12.3g} "
              f"{difference(r, a32).rel:>12.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
