"""The front door for Python users: the verbs of the command line as functions, and a reader.

Each verb is what the matching ``bumpconv`` subcommand does, without the printing. Errors a
user can cause raise :class:`bumpconv.BumpError` subclasses whose message names the file,
tensor or key. Two ways into a blob, named for what they return:

* :func:`safe_open` reads it like a safetensors file: tensors by their Hugging Face names, as
  numpy arrays (dequantized and un-packed), the raw blocks, the metadata. No C runtime.
* :func:`load_model` runs it: the C runtime (:class:`~bumpconv.run.runtime.BumpModel`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .blob.check import check_blob
from .blob.describe import blob_summary
from .blob.reader import is_bump_file, open_blob
from .blob.tensors import TensorReader, open_tensors
from .blob.verify import VerifyResult, verify_against
from .comparison.parity_run import ParityOptions, run_parity
from .comparison.parity_report import ParityReport
from .conversion.convert import convert_checkpoint
from .conversion.source import open_source
from .conversion.writer import WriteResult
from .format.errors import BlobError, BumpError
from .format.profile import DEFAULT_PROFILE
from .run.runtime import BumpModel


def convert(src: str | Path, out: str | Path, *, profile: str = DEFAULT_PROFILE,
            context: int | None = None, quant: str | None = None, force: bool = False,
            engine_sidecars: bool | None = None) -> WriteResult:
    """Convert a Hugging Face checkpoint (a directory, or a repo id already in the local HF
    cache) or a GGUF file to a bump blob, atomically: ``out`` appears only when complete.
    ``quant`` names a quantization policy (``"q8_0"``, ``"q4_k_m"``, ...; any case, so
    llama.cpp's ``"Q4_K_M"`` too; schemas/quant.policy.json), ``"f32"``, or for a GGUF
    ``"keep"`` (its default: its own blocks; docs/gguf.md). For the engine-v7 profile an
    ``out`` not ending in ``.bump`` is a model directory - ``out/weights.bump`` with the
    engine's sidecars, committed as a unit (docs/engine.md); the result's ``path`` is then the
    blob in it.

    >>> import bumpconv
    >>> result = bumpconv.convert("SmolLM2-135M/", "smollm2.bump")  # doctest: +SKIP
    >>> result.size, result.checksum[:8]                             # doctest: +SKIP
    (538208745, '2c9f...')
    """
    return convert_checkpoint(str(src), Path(out), profile, context=context,
                              quant=quant.lower() if quant is not None else None,
                              force=force, engine_sidecars=engine_sidecars).result


def safe_open(blob: str | Path, framework: str = "np", *,
              config: str | Path | None = None) -> TensorReader:
    """Read a blob the way safetensors' ``safe_open`` reads a checkpoint: ``keys()`` are the
    Hugging Face tensor names it holds, ``get_tensor(name)`` one of them as a float32 numpy
    array in its HF shape (dequantized from its ggml blocks where quantized, un-packed by the
    inverse of its packing rule), ``get_raw(packed_name)`` a packed tensor as stored (its
    ggml blocks), ``metadata()`` the blob's metadata. ``framework`` is accepted for
    safetensors' spelling; only numpy (``"np"``/``"numpy"``) is returned (torch arrays:
    ``torch.from_numpy``). ``config``: a BUMPWGT3 file's config.json, when needed."""
    if framework not in ("np", "numpy"):
        raise BumpError(f"safe_open: framework {framework!r}: bumpconv returns numpy arrays "
                        "(framework='np'); wrap them with torch.from_numpy if needed")
    return open_tensors(blob, config)


def load_model(blob: str | Path, *, config: str | Path | None = None, check: bool = False,
               threads: int | None = None, activations: str = "fp32") -> BumpModel:
    """Open a blob in the C runtime: logits with ``forward``, greedy tokens with ``generate``
    (the whole API: docs/runtime-api.md). ``check`` recomputes every checksum first;
    ``config`` is the source's config.json, needed only for BUMPWGT3 files; ``threads``
    defaults to the CPUs this process may use."""
    return BumpModel.open(blob, config=config, check=check, threads=threads,
                          activations=activations)


def inspect(blob: str | Path, *, check: bool = False,
            config: str | Path | None = None) -> dict[str, Any]:
    """What a blob holds (every header field, tensor, the model's settings, the source's
    provenance) as plain data - what ``inspect --json`` prints; with ``check``, also every
    checksum's verdict under "checks"."""
    with open_blob(blob, config=Path(config) if config is not None else None) as bf:
        return blob_summary(bf, check_blob(bf) if check else None)


def verify(blob: str | Path, src: str | Path) -> VerifyResult:
    """Prove that ``blob`` holds exactly the weights of ``src``, bit for bit (after checking
    its checksums); raises :class:`bumpconv.VerifyError` naming the first difference."""
    if not is_bump_file(blob) and is_bump_file(src):
        raise BlobError(f"{blob}: not a bump file, but {src} is one: the blob comes first "
                        f"(bumpconv verify {src} --against {blob}; "
                        "in Python verify(blob, src))")
    with open_blob(blob) as bf, \
            open_source(str(src), with_tokenizer=bf.profile.carries_tokenizer) as source:
        check_blob(bf, padding=False).raise_on_failure()
        return verify_against(bf, source)


def parity(src: str | Path, blob: str | Path, **options: Any) -> ParityReport:
    """Compare ``blob``, run by the C runtime, with transformers' own model of ``src``: logits
    at every position, every layer, and every stage of every layer. Options are
    those of :class:`bumpconv.comparison.parity_run.ParityOptions` (``layer``, ``prompts``, ...).
    Needs the ``[reference]`` extra (torch, transformers)."""
    check_source_first(src, blob, "parity")
    return run_parity(str(src), Path(blob), ParityOptions(**options))


def check_source_first(src: str | Path, blob: str | Path, verb: str) -> None:
    """Refuse ``verb SRC BLOB`` called as ``verb BLOB SRC`` (parity and eval take the source
    first, verify the blob first), naming the right order."""
    if is_bump_file(src) and not is_bump_file(blob):
        raise BumpError(f"{src} is a bump file and {blob} is not: the source comes first "
                          f"(bumpconv {verb} {blob} {src}; in Python {verb}(src, blob))")
