"""``bumpconv run FILE --prompt TEXT``: greedy generation with the C runtime."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..blob.reader import open_blob
from ..format.errors import TokenizerError
from ..native.kernels import ACTIVATIONS
from ..run.chat import render_chat
from ..run.generate import GenerationStats, StreamDecoder, eos_token_ids, greedy
from ..run.runtime import BumpModel
from ..run.carried import blob_tokenizer
from ..run.tokenizer import encode_text, load_tokenizer, tokenizer_path
from . import positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="generate text from a .bump blob with the C runtime",
                       description="Greedy generation: the prompt is encoded with the blob's own "
                                   "tokenizer (or the source checkpoint's tokenizer.json), run "
                                   "through the C runtime, and the continuation is printed as "
                                   "it is produced (timings go to stderr).")
    p.add_argument("file", type=Path, help=".bump file")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("-n", type=positive_int, default=32, metavar="N",
                   help="maximum number of new tokens (default 32)")
    p.add_argument("--chat", action="store_true",
                   help="wrap the prompt in the model's chat template as a user message")
    p.add_argument("--tokenizer", type=Path, metavar="DIR",
                   help="source checkpoint directory (or its tokenizer.json); default: the "
                        "tokenizer the blob carries, else tokenizer.json beside the blob")
    p.add_argument("--config", type=Path, metavar="CONFIG_JSON",
                   help="the source's config.json (required for bumpwgt3 blobs)")
    p.add_argument("--threads", type=positive_int, metavar="N", help="runtime threads (default: the online CPUs)")
    p.add_argument("--activations", choices=ACTIVATIONS, default="fp32",
                   help="decode over quantized weights on fp32 activations (default, exact "
                        "against the dequantized weights) or int8 ones (llama.cpp's integer "
                        "dot products: faster)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    stats = GenerationStats()
    with open_blob(args.file, config=args.config) as bf, \
            BumpModel.from_blob(bf, threads=args.threads,
                                activations=args.activations) as model:
        carried = blob_tokenizer(bf) if args.tokenizer is None else None
        if carried is not None:
            tokenizer, record = carried
            eos = frozenset(record.eos_token_ids)
            template = record.chat_template
            special = {"bos_token": _token(tokenizer, record.bos_token_id),
                       "eos_token": _token(tokenizer, (record.eos_token_ids or [None])[0])}
        else:
            tok_path = tokenizer_path(args.tokenizer, args.file)
            tokenizer = load_tokenizer(tok_path)
            eos = eos_token_ids(tok_path.parent)
            template, special = _template_beside(tok_path)
        text = render_chat(template, args.prompt, special) if args.chat else args.prompt
        prompt = encode_text(tokenizer, text, "--prompt")
        stream = StreamDecoder(tokenizer, prompt)
        for i, token in enumerate(greedy(model, prompt, args.n, eos, stats)):
            # the prompt is echoed once the runtime has accepted it (errors print nothing)
            sys.stdout.write((text if i == 0 else "") + stream.push(token))
            sys.stdout.flush()
    sys.stdout.write("\n")
    print(stats.summary(), file=sys.stderr)
    return 0


def _token(tokenizer, token_id: int | None) -> str | None:  # noqa: ANN001 - BpeTokenizer
    return None if token_id is None else tokenizer.decode([token_id])


def _template_beside(tok_path: Path) -> tuple[str | None, dict[str, str | None]]:
    """A checkpoint directory's chat template and special tokens, for --chat without a
    tokenizer in the blob (the same files the converter records)."""
    from ..conversion.tokenizer_section import build_tokenizer_section
    try:
        _, record = build_tokenizer_section(tok_path.parent)
    except TokenizerError:
        return None, {}
    content = {t["id"]: t["content"] for t in record.added_tokens}
    eos = record.eos_token_ids[0] if record.eos_token_ids else None
    return record.chat_template, {"bos_token": content.get(record.bos_token_id),
                                  "eos_token": content.get(eos)}
