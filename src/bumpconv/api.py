"""The front door for Python users: the few verbs of the command line, as functions.

Each is what the matching ``bumpconv`` subcommand does, without the printing. Errors a user can
cause raise :class:`bumpconv.BumpError` subclasses whose message names the file, tensor or key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .blob.check import check_blob
from .blob.describe import blob_summary
from .blob.reader import open_blob
from .blob.verify import VerifyResult, verify_against
from .conversion.convert import convert_checkpoint
from .conversion.source import open_source
from .conversion.writer import WriteResult
from .format.profile import DEFAULT_PROFILE
from .comparison.check import ParityOptions, run_parity
from .comparison.report import ParityReport
from .run.runtime import BumpModel


def convert(src: str | Path, out: str | Path, *, profile: str = DEFAULT_PROFILE,
            context: int | None = None, quant: str | None = None, force: bool = False,
            engine_sidecars: bool | None = None) -> WriteResult:
    """Convert a Hugging Face checkpoint (a directory, or a repo id already in the local HF
    cache) or a GGUF file to a bump blob, atomically: ``out`` appears only when complete.
    ``quant`` names a quantization policy (``"q8_0"``, ``"q4_k_m"``, ...;
    schemas/quant.policy.json), ``"f32"``, or for a GGUF ``"keep"`` (its default: its own
    blocks; docs/gguf.md). For the engine-v7 profile an ``out`` not ending in ``.bump`` is a
    model directory - ``out/weights.bump`` with the engine's sidecars, committed as a unit
    (docs/engine.md); the result's ``path`` is then the blob in it.

    >>> import bumpconv
    >>> result = bumpconv.convert("SmolLM2-135M/", "smollm2.bump")  # doctest: +SKIP
    >>> result.size, result.checksum[:8]                             # doctest: +SKIP
    (538208745, '2c9f...')
    """
    return convert_checkpoint(str(src), Path(out), profile, context=context, quant=quant,
                              force=force, engine_sidecars=engine_sidecars).result


def open(blob: str | Path, *, config: str | Path | None = None, check: bool = False,
         threads: int | None = None) -> BumpModel:  # noqa: A001 - like safetensors' safe_open
    """Open a blob in the C runtime: logits with ``forward``, greedy tokens with ``generate``.
    ``check`` recomputes every checksum first; ``config`` is the source's config.json, needed
    only for BUMPWGT3 files.

    >>> import bumpconv
    >>> with bumpconv.open("smollm2.bump") as model:                 # doctest: +SKIP
    ...     logits = model.forward([504, 3575, 282, 4649, 314])      # [5, 49152]
    ...     tokens = model.generate([504, 3575, 282, 4649, 314], 8)
    """
    return BumpModel.open(blob, config=config, check=check, threads=threads)


def inspect(blob: str | Path, *, check: bool = False,
            config: str | Path | None = None) -> dict[str, Any]:
    """What a blob holds (every header field, tensor, the model's settings, the source's
    provenance) as plain data; with ``check``, also every checksum's verdict under "checks".

    >>> import bumpconv
    >>> info = bumpconv.inspect("smollm2.bump", check=True)          # doctest: +SKIP
    >>> info["checksum_status"], info["totals"]["tensors"]           # doctest: +SKIP
    ('ok', 272)
    """
    with open_blob(blob, config=Path(config) if config is not None else None) as bf:
        return blob_summary(bf, check_blob(bf) if check else None)


def verify(blob: str | Path, src: str | Path) -> VerifyResult:
    """Prove that ``blob`` holds exactly the weights of ``src``, bit for bit (after checking
    its checksums); raises :class:`bumpconv.VerifyError` naming the first difference.

    >>> import bumpconv
    >>> bumpconv.verify("smollm2.bump", "SmolLM2-135M/").elements    # doctest: +SKIP
    134515008
    """
    with open_blob(blob) as bf, \
            open_source(str(src), with_tokenizer=bf.profile.carries_tokenizer) as source:
        check_blob(bf, padding=False).raise_on_failure()
        return verify_against(bf, source)


def parity(src: str | Path, blob: str | Path, **options: Any) -> ParityReport:
    """Compare ``blob``, run by the C runtime, with transformers' own model of ``src``: logits
    at every position, every layer, and the stages of the first layer that differs. Options are
    those of :class:`bumpconv.comparison.check.ParityOptions` (``layer``, ``prompts``, ...).

    >>> import bumpconv
    >>> report = bumpconv.parity("SmolLM2-135M/", "smollm2.bump")    # doctest: +SKIP
    >>> report.passed, report.verdict[:4]                            # doctest: +SKIP
    (True, 'PASS')
    """
    return run_parity(str(src), Path(blob), ParityOptions(**options))
