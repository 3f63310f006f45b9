"""One reference pass, every blob beside it, chunk by chunk: the ``bumpconv eval`` run.

Chunks and scored tokens are llama.cpp's (``llama-perplexity``, also with ``--kl-divergence``):
the token stream (a BOS token first when the tokenizer adds one) is cut into
``len(stream) // ctx`` chunks of ``ctx`` tokens (``--chunks`` keeps the first N), each run from
position 0 with an empty cache, its first token replaced by BOS when the tokenizer has one. In
each chunk only the second half is scored, so every scored token has at least ``ctx / 2`` tokens
of context: the logits at positions ``ctx//2 .. ctx-2`` predicting the tokens at
``ctx//2 + 1 .. ctx-1``, i.e. ``ctx - 1 - ctx//2`` tokens per chunk (255 for ctx 512).

Per chunk there is one forward pass of the reference (transformers' own model from SRC, fp32),
then, for each blob, one of the C runtime, and one of HF carrying the blob's dequantized weights
(:mod:`bumpconv.comparison.dequantized`) unless those weights are bit-identical to SRC's - then that
model *is* the reference, comparison (b) is zero by construction and (c) equals (a). Three
comparisons per blob:

* (a) ``blob_vs_hf``: the blob in the C runtime against HF fp32 - what the user gets;
* (b) ``dequantized_vs_hf``: HF with the blob's weights against HF fp32 - the quantization alone;
* (c) ``blob_vs_dequantized``: the C runtime against HF with the same weights - the kernels alone.

Only per-token scores (a few numbers per scored token) outlive a chunk; no array of vocabulary
size x corpus length ever exists.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..blob.reader import open_blob
from ..files.progress import progress_bar
from ..format.errors import ConfigError, EvalError
from ..comparison.parity_run import blob_spec, compare_specs
from ..comparison.dequantized import load_dequantized
from ..comparison.reference import Reference, source_root, source_spec
from ..run.runtime import BumpModel
from . import corpus as corpora
from .gates import GateTable, WeightGate, load_gates
from .eval_report import BlobResult, EvalReport, SampleInfo
from .stats import LogProbs, TokenScores, score, summarize

#: The three comparisons, in report order: (name, test side, base side).
COMPARISONS: tuple[tuple[str, str, str], ...] = (
    ("blob_vs_hf", "blob", "hf"),
    ("dequantized_vs_hf", "dequantized", "hf"),
    ("blob_vs_dequantized", "blob", "dequantized"),
)


@dataclass(frozen=True)
class EvalOptions:
    """What ``bumpconv eval`` runs on. ``corpus``: a catalog name or a file (None: the default
    set); ``chunks``: at most this many chunks per corpus (None: all); ``rope_pairing``:
    the runtime's fault injection (as parity's), to see how a kernel bug shows in (c)."""

    corpus: str | None = None
    ctx: int = 512
    chunks: int | None = None
    threads: int | None = 2
    gates: Path | None = None
    corpus_dir: Path | None = None
    progress: bool = True
    rope_pairing: str | None = None


def scored_range(ctx: int) -> tuple[int, int]:
    """``(first, n)``: the logits at positions ``first .. first + n - 1`` are scored."""
    first = ctx // 2
    return first, ctx - 1 - first


def chunks(sample: corpora.Sample, ctx: int, limit: int | None) -> list[np.ndarray]:
    """The chunks of ``sample`` (see the module docstring)."""
    n = len(sample.ids) // ctx
    if limit is not None:
        n = min(n, limit)
    out = []
    for i in range(n):
        chunk = sample.ids[i * ctx:(i + 1) * ctx].copy()
        if sample.bos is not None:
            chunk[0] = sample.bos
        out.append(chunk)
    return out


def hf_logits(reference: Reference, ids: np.ndarray, first: int) -> np.ndarray:
    """HF's logits at the scored positions; the output head runs on those rows only."""
    import torch
    keep = len(ids) - first  # positions first .. ctx-1; the last one predicts past the chunk
    with torch.no_grad():
        out = reference.model(torch.as_tensor(ids, dtype=torch.long)[None], use_cache=False,
                              logits_to_keep=keep)
    return out.logits[0, :-1].float().numpy()


def blob_logits(model: BumpModel, ids: np.ndarray, first: int) -> np.ndarray:
    """The C runtime's logits at the scored positions, from an empty cache."""
    model.reset()
    return np.asarray(model.forward(ids, start_pos=0, all_logits=True))[first:len(ids) - 1]


@dataclass(frozen=True)
class _Checked:
    """A blob that passed the checks made before any model is loaded."""

    path: Path
    config: Path | None  # the source's config.json, for a blob that records no settings
    notes: list[str]
    dtypes: list[str]
    gate: WeightGate


@dataclass
class _Blob:
    """One blob's two models; ``dequantized`` None: the blob's weights are bit-identical to
    SRC's, so HF with them is the reference itself."""

    checked: _Checked
    runtime: BumpModel
    dequantized: Reference | None


def _check_blobs(src: str, root: Path, blobs: list[Path], options: EvalOptions,
                 table: GateTable, gates_source: str) -> list[_Checked]:
    """Same dimensions as SRC, a gate for every weight type, a context that fits."""
    spec = source_spec(root)
    out = []
    for blob in blobs:
        b_spec, config = blob_spec(blob, root)
        notes = compare_specs(spec, b_spec, src, str(blob))
        with open_blob(blob, config=config) as bf:
            dtypes = {t.dtype for t in bf.tensors if t.slot.content == "weights"}
        gate = table.for_types(dtypes, str(blob), gates_source)
        for what, length in ((src, spec.context_length), (str(blob), b_spec.context_length)):
            if options.ctx > length:
                raise EvalError(f"--ctx {options.ctx} exceeds the context length {length} "
                                f"of {what}")
        out.append(_Checked(blob, config, notes, sorted(d.label for d in dtypes), gate))
    return out


def _samples(root: Path, options: EvalOptions) -> list[corpora.Sample]:
    """The tokenized corpora, each long enough for at least one chunk."""
    tokenizer = corpora.source_tokenizer(root)
    if tokenizer is not None:
        directory = options.corpus_dir or corpora.corpus_dir()
        samples = [corpora.tokenize(tokenizer, text)
                   for text in corpora.resolve(options.corpus, directory)]
    elif options.corpus is not None:
        raise ConfigError(f"{root}: has no tokenizer, so --corpus cannot be tokenized")
    else:
        samples = [corpora.synthetic(source_spec(root).vocab_size, options.ctx)]
    for s in samples:
        if not chunks(s, options.ctx, options.chunks):
            raise EvalError(f"corpus {s.name!r} has {len(s.ids)} tokens, fewer than one chunk "
                            f"of --ctx {options.ctx}")
    return samples


def run_eval(src: str, blobs: list[Path], options: EvalOptions) -> EvalReport:
    """Evaluate every blob against SRC on the corpus (module docstring). Everything that can
    be refused is refused before a model is loaded."""
    if options.ctx < 4:
        raise EvalError(f"--ctx {options.ctx}: must be at least 4 (half of a chunk is scored)")
    root = source_root(src)
    table, gates_source = load_gates(options.gates)
    checked = _check_blobs(src, root, blobs, options, table, gates_source)
    samples = _samples(root, options)
    reference = Reference.load(str(root), options.threads)
    opened: list[_Blob] = []
    try:
        for c in checked:
            deq = load_dequantized(str(root), c.path, options.threads)
            model = None if deq.identical else deq.reference
            del deq
            gc.collect()  # drop an identical copy of the model before loading the next
            fault = {"rope_pairing": options.rope_pairing} if options.rope_pairing else {}
            runtime = BumpModel.open(c.path, c.config, threads=options.threads, **fault)
            opened.append(_Blob(c, runtime, model))
        scores = _lockstep(reference, opened, samples, options)
    finally:
        for b in opened:
            b.runtime.close()
    first, per_chunk = scored_range(options.ctx)
    infos = []
    for s in samples:
        n = len(chunks(s, options.ctx, options.chunks))
        infos.append(SampleInfo(s.name, s.description, s.kind, s.language, s.licence, s.source,
                                s.sha256, len(s.ids), n, n * per_chunk, s.gated, s.synthetic))
    results = []
    for i, b in enumerate(opened):
        c = b.checked
        summaries = {s.name: {name: summarize(scores[(i, s.name, name)])
                              for name, _, _ in COMPARISONS} for s in samples}
        results.append(BlobResult(str(c.path), c.notes, c.dtypes, c.gate,
                                  b.dequantized is None, summaries,
                                  {s.name: scores[(i, s.name, "blob_vs_hf")] for s in samples}))
    return EvalReport(src, options.ctx, first, gates_source, table.kernels, infos, results)


def _lockstep(reference: Reference, blobs: list[_Blob], samples: list[corpora.Sample],
              options: EvalOptions) -> dict[tuple[int, str, str], TokenScores]:
    """Run every chunk through every model, keeping only per-token scores."""
    first, n = scored_range(options.ctx)
    positions = np.arange(first + 1, first + 1 + n)
    parts: dict[tuple[int, str, str], list[TokenScores]] = {}
    plan = [(s, chunks(s, options.ctx, options.chunks)) for s in samples]
    bar = progress_bar(sum(len(c) for _, c in plan), "eval", options.progress, unit="chunk")
    try:
        for sample, sample_chunks in plan:
            for ids in sample_chunks:
                targets = ids[first + 1:]
                hf = LogProbs.of(hf_logits(reference, ids, first))
                for i, b in enumerate(blobs):
                    run = LogProbs.of(blob_logits(b.runtime, ids, first))
                    deq = hf if b.dequantized is None else \
                        LogProbs.of(hf_logits(b.dequantized, ids, first))
                    sides = {"hf": hf, "blob": run, "dequantized": deq}
                    done: dict[tuple[int, int], TokenScores] = {}
                    for name, test, base in COMPARISONS:
                        key = (id(sides[test]), id(sides[base]))  # (c) is (a) when deq is hf
                        if key not in done:
                            done[key] = score(sides[base], sides[test], targets, positions)
                        parts.setdefault((i, sample.name, name), []).append(done[key])
                bar.update(1)
    finally:
        bar.close()
    return {k: TokenScores.concat(v) for k, v in parts.items()}
