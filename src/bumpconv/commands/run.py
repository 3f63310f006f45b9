"""``bumpconv run FILE --prompt TEXT``: greedy generation with the C runtime."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..blob.reader import BumpFile, open_blob
from ..format.errors import BumpError
from ..format.tokenizer_meta import TokenizerMeta
from ..native.kernels import ACTIVATIONS
from ..run.carried_tokenizer import blob_tokenizer
from ..run.chat import chat_prompt
from ..run.generate import GenerationStats, StreamDecoder, eos_token_ids, greedy
from ..run.runtime import BumpModel
from ..run.tokenizer import encode_text, load_tokenizer, tokenizer_path
from . import capped_threads, positive_int

if TYPE_CHECKING:
    from tokenizers import Tokenizer


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
                   help="send the prompt as a user message through the model's chat template "
                        "and print only the reply")
    p.add_argument("--tokenizer", type=Path, metavar="DIR",
                   help="source checkpoint directory (or its tokenizer.json); default: the "
                        "tokenizer the blob carries, else tokenizer.json beside the blob")
    p.add_argument("--config", type=Path, metavar="CONFIG_JSON",
                   help="the source's config.json (required for bumpwgt3 blobs)")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="runtime threads (default: the CPUs this process may use; more are "
                        "capped to that, with a warning)")
    p.add_argument("--activations", choices=ACTIVATIONS, default="fp32",
                   help="decode over quantized weights on fp32 activations (default, exact "
                        "against the dequantized weights) or int8 ones (llama.cpp's integer "
                        "dot products: faster)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    stats = GenerationStats()
    threads = capped_threads(args.threads)
    with open_blob(args.file, config=args.config) as bf, \
            BumpModel.from_blob(bf, threads=threads, activations=args.activations) as model:
        tokenizer, eos, record = _tokenizer(args, bf)
        text = chat_prompt(record, tokenizer, args.prompt) if args.chat else args.prompt
        prompt = encode_text(tokenizer, text, "--prompt")
        stream = StreamDecoder(tokenizer, prompt)
        echo = "" if args.chat else text  # a chat prints the reply, not the template around it
        for i, token in enumerate(greedy(model, prompt, args.n, eos, stats)):
            # the prompt is echoed once the runtime has accepted it (errors print nothing)
            sys.stdout.write((echo if i == 0 else "") + stream.push(token))
            sys.stdout.flush()
    sys.stdout.write("\n")
    print(stats.summary(), file=sys.stderr)
    return 0


def _tokenizer(args: argparse.Namespace,
               bf: BumpFile) -> tuple[Tokenizer, frozenset[int], TokenizerMeta | None]:
    """The tokenizer, the ids that end generation, and the tokenizer record (chat template,
    special tokens): the blob's own, else the files of ``--tokenizer`` or beside the blob."""
    carried = blob_tokenizer(bf) if args.tokenizer is None else None
    if carried is not None:
        tokenizer, record = carried
        return tokenizer, frozenset(record.eos_token_ids), record
    tok_path = tokenizer_path(args.tokenizer, args.file)
    record = _record_beside(tok_path) if args.chat else None
    return load_tokenizer(tok_path), eos_token_ids(tok_path.parent), record


def _record_beside(tok_path: Path) -> TokenizerMeta | None:
    """A checkpoint directory's tokenizer record (chat template, special tokens), built as the
    converter builds it, for --chat without a tokenizer in the blob; None if it cannot be."""
    from ..conversion.tokenizer_section import build_tokenizer_section
    try:
        return build_tokenizer_section(tok_path.parent)[1]
    except BumpError:  # not a tokenizer bumpconv carries: no template to offer
        return None
