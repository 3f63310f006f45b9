"""``bumpconv run FILE --prompt TEXT``: greedy generation with the C runtime."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..run.generate import GenerationStats, StreamDecoder, eos_token_ids, greedy
from ..run.runtime import BumpModel
from ..run.tokenizer import encode_text, load_tokenizer, tokenizer_path
from . import positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="generate text from a .bump blob with the C runtime",
                       description="Greedy generation: the prompt is encoded with the source "
                                   "checkpoint's tokenizer.json, run through the C runtime, and "
                                   "the continuation is printed as it is produced (timings go "
                                   "to stderr).")
    p.add_argument("file", type=Path, help=".bump file")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("-n", type=positive_int, default=32, metavar="N",
                   help="maximum number of new tokens (default 32)")
    p.add_argument("--tokenizer", type=Path, metavar="DIR",
                   help="source checkpoint directory (or its tokenizer.json); default: "
                        "tokenizer.json beside the blob")
    p.add_argument("--config", type=Path, metavar="CONFIG_JSON",
                   help="the source's config.json (required for bumpwgt3 blobs)")
    p.add_argument("--threads", type=positive_int, metavar="N", help="OpenMP threads (default: all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    stats = GenerationStats()
    with BumpModel.open(args.file, config=args.config, threads=args.threads) as model:
        tok_path = tokenizer_path(args.tokenizer, args.file)
        tokenizer = load_tokenizer(tok_path)
        prompt = encode_text(tokenizer, args.prompt, "--prompt")
        stream = StreamDecoder(tokenizer, prompt)
        for i, token in enumerate(greedy(model, prompt, args.n, eos_token_ids(tok_path.parent),
                                         stats)):
            # the prompt is echoed once the runtime has accepted it (errors print nothing)
            sys.stdout.write((args.prompt if i == 0 else "") + stream.push(token))
            sys.stdout.flush()
    sys.stdout.write("\n")
    print(stats.summary(), file=sys.stderr)
    return 0
