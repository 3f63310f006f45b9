"""Local checks against the real engine, C-Kernel-Engine (never run in CI, and nothing of the
engine is in this project: it has no licence). You point the tool at what you built yourself.

``runtime``: the engine's own compiled runtime (a ``libmodel.so`` its driver built from a
bumpconv model directory) against bumpconv's runtime on the same blob and against transformers::

    python ENGINE/version/v7/scripts/ck_run_v7.py run DIR --generate-only --context-len 1024
    python tools/engine_check.py runtime DIR --lib DIR/.ck_build/libmodel.so --source SRC

(v8: ``ck_run_v8.py run DIR --generate-only --context-len 1024 --logits-layout full`` builds
``DIR/.ck_build_v8/libmodel.so``; with its default layout only the last prefill row is kept,
which is then all the prefill comparison has.) The library is loaded with ctypes and fed token
ids (its tokenizer is not used): greedy ids from a prompt, then teacher-forced logits over the
first ``--positions`` tokens of an eval corpus (bumpconv.evaluate.corpus), token by token
through its decode path and in one batch through its prefill path, each compared with
bumpconv's runtime doing the same (int8 activations when the library quantizes its
activations, as it does by default for quantized weights) and with transformers' fp32 model of
SRC: top-1 agreement, mean KL, max |dlogit|.

``tensors``: the engine's own v7 HF converter run on SRC, its blob compared with bumpconv's
engine-v7 blob of SRC tensor by tensor (fp32: bit identity)::

    python tools/engine_check.py tensors SRC --engine ENGINE
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bumpconv.api import convert  # noqa: E402
from bumpconv.blob.reader import open_blob  # noqa: E402
from bumpconv.format.dtypes import DType  # noqa: E402
from bumpconv.format.errors import BumpError  # noqa: E402
from bumpconv.format.engine_directory import BLOB_NAME, MANIFEST_MAP  # noqa: E402

CONVERTER = "version/v7/scripts/convert_hf_to_bump_v7.py"
PROMPT = "The capital of France is"
#: The engine's HF converter names the untied head lm_head_weight, which its own build step
#: cannot map (engine-quant-v8.md B6); bumpconv writes output.weight. Same tensor.
RENAMED = {"lm_head_weight": "output.weight"}


class EngineFailed(Exception):
    """The engine's converter or runtime did not do what was asked."""


# -- the engine's runtime, through ctypes ------------------------------------------------------

class EngineRuntime:
    """A ``libmodel.so`` built by the engine's driver (its exports: engine-build.md). It keeps
    one model in global state, so one per process."""

    def __init__(self, lib: Path, weights: Path, manifest_map: Path) -> None:
        for key, value in (("CK_NUM_THREADS", "2"), ("OMP_NUM_THREADS", "1"),
                           ("CK_DISABLE_TOKENIZER", "1")):
            os.environ.setdefault(key, value)
        try:
            self.lib = ctypes.CDLL(str(lib))
        except OSError as exc:  # e.g. v8's fp32 last-only logits call a gemv it does not have
            raise EngineFailed(f"{lib}: cannot be loaded ({exc})") from None
        self.lib.ck_model_init_with_manifest.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
        self.lib.ck_model_embed_tokens.argtypes = (ctypes.POINTER(ctypes.c_int32), ctypes.c_int)
        self.lib.ck_model_decode.argtypes = (ctypes.c_int32, ctypes.POINTER(ctypes.c_float))
        self.lib.ck_model_forward.argtypes = (ctypes.POINTER(ctypes.c_float),)
        self.lib.ck_model_get_logits.restype = ctypes.POINTER(ctypes.c_float)
        rc = self.lib.ck_model_init_with_manifest(os.fsencode(weights), os.fsencode(manifest_map))
        if rc != 0:
            raise EngineFailed(f"{lib}: ck_model_init_with_manifest returned {rc}")
        self.vocab = int(self.lib.ck_model_get_vocab_size())
        self.stride = int(self.lib.ck_model_get_logits_stride())
        self.context = int(self.lib.ck_model_get_context_window())
        #: False: the library keeps only the last position's logits in prefill (ck_run_v8's
        #: default --logits-layout auto); decode still gives every position's
        self.all_rows = self.stride >= self.vocab

    def _rows(self, n: int) -> np.ndarray:
        flat = np.ctypeslib.as_array(self.lib.ck_model_get_logits(), shape=(n * self.stride,))
        return flat.reshape(n, self.stride)[:, :self.vocab].copy()

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        """Reset, run ``ids`` as one batch; the logits of positions 1..n-1 ([n-1, V]): the
        engine moves the last row over the first, so position 0's are gone. A library that
        keeps only the last row gives that one ([1, V])."""
        self.lib.ck_model_kv_cache_reset()
        arr = (ctypes.c_int32 * len(ids))(*ids)
        self.lib.ck_model_embed_tokens(arr, len(ids))
        if not self.all_rows:
            buf = (ctypes.c_float * self.vocab)()
            self.lib.ck_model_forward(buf)
            return np.frombuffer(buf, np.float32)[None].copy()
        rows = self._rows(len(ids))
        return np.concatenate([rows[1:-1], rows[:1]]) if len(ids) > 1 else rows

    def decode_all(self, ids: Sequence[int]) -> np.ndarray:
        """Reset, run ``ids`` one token at a time (its decode path); every position's logits."""
        self.lib.ck_model_kv_cache_reset()
        out = np.empty((len(ids), self.vocab), np.float32)
        buf = (ctypes.c_float * self.vocab)()
        for i, token in enumerate(ids):
            self.lib.ck_model_decode(int(token), buf)
            out[i] = np.frombuffer(buf, np.float32)
        return out

    def greedy(self, ids: Sequence[int], n: int) -> list[int]:
        last = self.prefill(ids)[-1] if len(ids) > 1 else self.decode_all(ids)[-1]
        out: list[int] = []
        buf = (ctypes.c_float * self.vocab)()
        for _ in range(n):
            out.append(int(np.argmax(last)))
            self.lib.ck_model_decode(out[-1], buf)
            last = np.frombuffer(buf, np.float32)
        return out


# -- comparisons --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Agreement:
    """``test`` against ``base`` over the same positions."""

    positions: int
    top1: float
    mean_kl: float
    max_dlogit: float


def agreement(base: np.ndarray, test: np.ndarray) -> Agreement:
    from bumpconv.evaluate.stats import LogProbs
    a, b = LogProbs.of(base), LogProbs.of(test)
    kl = np.einsum("ij,ij->i", a.probs, a.values - b.values)
    return Agreement(len(base), float(np.mean(a.top == b.top)), float(kl.mean()),
                     float(np.abs(base.astype(np.float64) - test).max()))


def corpus_ids(src: Path, corpus: str | None, n: int) -> tuple[str, list[int]]:
    """The first ``n`` tokens of an eval corpus under SRC's tokenizer (BOS first, as eval)."""
    from bumpconv.evaluate.corpus import corpus_dir, resolve, source_tokenizer, tokenize
    tok = source_tokenizer(src)
    if tok is None:
        raise EngineFailed(f"{src}: has no tokenizer, so the corpus cannot be tokenized")
    text = resolve(corpus, corpus_dir())[0]
    ids = tokenize(tok, text).ids[:n]
    if len(ids) < n:
        raise EngineFailed(f"corpus {text.name!r} has only {len(ids)} tokens")
    return text.name, [int(i) for i in ids]


#: Kernels its build step labels fp32-activation that quantize their input themselves (q8_1
#: for q5_1, q8_K for q5_k: gemm_kernels_q5_1_q8_1.c:28-50, gemm_kernels_q5_k.c:93-127, at
#: 991d0874; probed through its library: each equals the dequantized product of the quantized
#: input to 3e-7). The engine has no fp32-activation product for these types at all.
_SELF_QUANTIZING = ("gemv_q5_1_q8_1", "gemm_nt_q5_1_q8_1", "gemv_q5_k", "gemm_nt_q5_k")


def engine_activations(lib: Path) -> str:
    """``int8`` when the library quantizes activations before its matmuls (its default for
    quantized weights) or calls a kernel that quantizes them itself, else ``fp32`` (fp32
    weights, or built with ``prefer_q8_activation: false`` in the directory's config.json and
    no such kernel): read from the C its codegen wrote beside it."""
    generated = " ".join(p.read_text(errors="replace") for p in lib.parent.glob("model_v*.c"))
    quantizes = "quantize_row_q8" in generated or any(
        re.search(rf"\b{k}\s*\(", generated) for k in _SELF_QUANTIZING)
    return "int8" if quantizes else "fp32"


def check_runtime(directory: Path, lib: Path, src: Path, positions: int, corpus: str | None,
                  tokens: int, prompt: str, activations: str = "auto") -> dict[str, Any]:
    """Everything ``runtime`` prints, as one record. ``activations``: bumpconv's; ``auto``
    does what the engine's library does."""
    from bumpconv.comparison.reference import Reference
    from bumpconv.run.runtime import BumpModel
    blob = directory / BLOB_NAME
    built_map = lib.parent / MANIFEST_MAP
    ours_map = directory / MANIFEST_MAP
    if built_map.is_file() and built_map.read_bytes() != ours_map.read_bytes():
        raise EngineFailed(f"{lib} was built for another blob ({built_map} differs from "
                           f"{ours_map}): rebuild it from {directory}")
    with open_blob(blob) as bf:
        quantized = any(t.dtype not in (DType.FP32, DType.I32, DType.U8) for t in bf.tensors)
        dtypes = sorted({t.dtype.label for t in bf.tensors if t.slot.content == "weights"})
    if activations == "auto":
        activations = engine_activations(lib) if quantized else "fp32"
    name, ids = corpus_ids(src, corpus, positions)
    from bumpconv.evaluate.corpus import source_tokenizer
    prompt_ids = source_tokenizer(src).encode(prompt, add_special_tokens=False).ids
    engine = EngineRuntime(lib, blob, built_map if built_map.is_file() else ours_map)
    if engine.context < positions:
        raise EngineFailed(f"{lib} was built for a context of {engine.context} positions; "
                           f"rebuild with --context-len {positions} or more")
    record: dict[str, Any] = {"directory": str(directory), "lib": str(lib), "source": str(src),
                              "dtypes": dtypes, "activations": activations, "corpus": name,
                              "positions": positions}
    greedy = {"engine": engine.greedy(prompt_ids, tokens)}
    e_decode, e_prefill = engine.decode_all(ids), engine.prefill(ids)
    with BumpModel.open(blob, threads=2, activations=activations) as model:
        greedy["bumpconv"] = model.generate(prompt_ids, tokens)
        model.reset()
        b_prefill = model.forward(ids)
        model.reset()
        b_decode = np.stack([model.decode(t) for t in ids])
    reference = Reference.load(str(src))
    hf = reference.run(ids).logits
    greedy["transformers"] = _hf_greedy(reference.model, prompt_ids, tokens)
    record["greedy"] = {"prompt": prompt, **greedy,
                        "engine_vs_bumpconv": _same_prefix(greedy["engine"], greedy["bumpconv"]),
                        "engine_vs_transformers": _same_prefix(greedy["engine"],
                                                               greedy["transformers"])}
    record["decode"] = {"engine_vs_bumpconv": asdict(agreement(b_decode, e_decode)),
                        "engine_vs_transformers": asdict(agreement(hf, e_decode)),
                        "bumpconv_vs_transformers": asdict(agreement(hf, b_decode))}
    rows = slice(1, None) if engine.all_rows else slice(-1, None)  # what the engine kept
    record["prefill"] = {"engine_vs_bumpconv": asdict(agreement(b_prefill[rows], e_prefill)),
                         "engine_vs_transformers": asdict(agreement(hf[rows], e_prefill)),
                         "bumpconv_vs_transformers": asdict(agreement(hf[rows], b_prefill[rows]))}
    return record


def _hf_greedy(model: Any, ids: list[int], n: int) -> list[int]:
    import torch
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False,
                             min_new_tokens=n)
    return [int(t) for t in out[0, len(ids):]]


def _same_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def format_runtime(r: dict[str, Any]) -> str:
    g = r["greedy"]
    lines = [f"{r['directory']} ({', '.join(r['dtypes'])}; bumpconv on {r['activations']} "
             f"activations) with {r['lib']}",
             f"greedy {len(g['engine'])} tokens from {g['prompt']!r}: engine = bumpconv for the "
             f"first {g['engine_vs_bumpconv']}, = transformers for the first "
             f"{g['engine_vs_transformers']}",
             f"  engine       {g['engine']}", f"  bumpconv     {g['bumpconv']}",
             f"  transformers {g['transformers']}",
             f"teacher-forced on {r['corpus']!r}, {r['positions']} tokens:",
             f"  {'path':8} {'comparison':26} {'positions':>9} {'top-1':>8} {'mean KL':>10} "
             f"{'max |dlogit|':>12}"]
    for path in ("decode", "prefill"):
        for key, a in r[path].items():
            lines.append(f"  {path:8} {key.replace('_', ' '):26} {a['positions']:>9} "
                         f"{100 * a['top1']:>7.2f}% {a['mean_kl']:>10.2e} {a['max_dlogit']:>12.4g}")
    return "\n".join(lines)


# -- the engine's own HF converter, tensor by tensor ------------------------------------------

def engine_blob(engine: Path, checkpoint: Path, out: Path) -> dict[str, dict]:
    """Run the engine's converter; its manifest entries by (bumpconv's) name."""
    cmd = [sys.executable, str(engine / CONVERTER), "--checkpoint", str(checkpoint),
           "--output", str(out / "weights.bump"), "--manifest-out",
           str(out / "weights_manifest.json")]
    if (checkpoint / "tokenizer.json").exists():
        cmd += ["--tokenizer-json", str(checkpoint / "tokenizer.json")]
    proc = subprocess.run(cmd, cwd=engine, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise EngineFailed(f"the engine's converter ({CONVERTER}) exited with status "
                           f"{proc.returncode} (a full checkout of version/v7 is needed, "
                           f"kernel_maps included):\n{tail}")
    manifest = json.loads((out / "weights_manifest.json").read_text())
    return {RENAMED.get(e["name"], e["name"]): e for e in manifest["entries"]}


def compare_tensors(engine_dir: Path, checkpoint: Path) -> dict[str, list[str]]:
    with tempfile.TemporaryDirectory(prefix="bumpconv-engine-check-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "engine").mkdir()
        theirs = engine_blob(engine_dir, checkpoint, tmp_path / "engine")
        ours_dir = tmp_path / "ours"
        convert(checkpoint, ours_dir, profile="engine-v7")
        engine_bytes = (tmp_path / "engine" / "weights.bump").read_bytes()
        out: dict[str, list[str]] = {"identical": [], "different": [], "only_engine": [],
                                     "only_bumpconv": []}
        with open_blob(ours_dir) as bf:
            for t in bf.tensors:
                entry = theirs.pop(t.name, None)
                if entry is None:
                    out["only_bumpconv"].append(t.name)
                    continue
                mine = bf.tensor_bytes(t.name)
                other = engine_bytes[entry["file_offset"]:entry["file_offset"] + entry["size"]]
                if mine == other:
                    out["identical"].append(t.name)
                else:
                    out["different"].append(f"{t.name}: {_difference(mine, other, t.dtype.label)}")
        out["only_engine"] = sorted(theirs)
        return out


def _difference(mine: bytes, other: bytes, dtype: str) -> str:
    if len(mine) != len(other):
        return f"{len(mine)} bytes vs the engine's {len(other)}"
    if dtype != "fp32":
        return "same size, different bytes"
    a, b = np.frombuffer(mine, "<f4"), np.frombuffer(other, "<f4")
    bad = np.flatnonzero(a != b)
    return (f"{len(bad)} of {len(a)} values differ (first at {int(bad[0])}: "
            f"{a[bad[0]]!r} vs {b[bad[0]]!r})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python tools/engine_check.py",
                                 description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    rt = sub.add_parser("runtime", help="the engine's compiled runtime vs bumpconv's and HF")
    rt.add_argument("directory", type=Path, help="bumpconv's model directory")
    rt.add_argument("--lib", type=Path, required=True,
                    help="the libmodel.so the engine's driver built from DIRECTORY")
    rt.add_argument("--source", type=Path, required=True, help="the checkpoint it came from")
    rt.add_argument("--positions", type=int, default=512)
    rt.add_argument("--corpus", default="prose", help="an eval corpus name, or a text file")
    rt.add_argument("--tokens", type=int, default=16, help="greedy tokens")
    rt.add_argument("--prompt", default=PROMPT)
    rt.add_argument("--activations", choices=("auto", "fp32", "int8"), default="auto",
                    help="bumpconv's activations (auto: int8 when the engine's library "
                         "quantizes its activations, as it does by default for quantized "
                         "weights)")
    rt.add_argument("--json", action="store_true")
    ts = sub.add_parser("tensors", help="the engine's own HF converter vs bumpconv, per tensor")
    ts.add_argument("checkpoint", type=Path)
    ts.add_argument("--engine", type=Path, default=os.environ.get("BUMPCONV_ENGINE_DIR"),
                    help="a C-Kernel-Engine checkout (or BUMPCONV_ENGINE_DIR)")
    args = ap.parse_args(argv)
    try:
        if args.command == "runtime":
            if not args.lib.is_file():
                raise EngineFailed(f"{args.lib}: no such library; build it with the engine's "
                                   "driver (docs/engine.md)")
            record = check_runtime(args.directory, args.lib, args.source, args.positions,
                                   args.corpus, args.tokens, args.prompt, args.activations)
            print(json.dumps(record, indent=2) if args.json else format_runtime(record))
            return 0
        if args.engine is None or not (args.engine / CONVERTER).is_file():
            raise EngineFailed("pass --engine DIR (a C-Kernel-Engine checkout) or set "
                               "BUMPCONV_ENGINE_DIR")
        result = compare_tensors(args.engine, args.checkpoint.resolve())
    except (EngineFailed, BumpError) as exc:
        print(f"engine_check: {exc}", file=sys.stderr)
        return 1
    for key, names in result.items():
        print(f"{key}: {len(names)}")
        if key != "identical":
            for name in names:
                print(f"  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
