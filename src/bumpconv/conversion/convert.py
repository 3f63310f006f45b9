"""One conversion end to end: open the source (with its tokenizer when the profile carries
one), plan, then write either one blob or, for an engine profile, a model directory - the blob
with the engine's sidecars, committed as a unit. The command line and ``bumpconv.convert`` both
run this; only the printing differs.

The output's form follows its name: for an engine profile a path not ending in ``.bump`` is a
model directory (``OUT/weights.bump`` + ``weights_manifest.json``, ``weights_manifest.map``,
``config.json``), which the engine's ``ck_run_v7.py run OUT`` and ``ck_run_v8.py run OUT`` take
as it is; a ``.bump`` path is the blob alone, for bumpconv's own runtime or another directory.
Sidecars never land beside a single file: several files in a shared directory cannot appear
together, and two models there would share one set of sidecars.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..files.atomic import atomic_directory
from ..format.engine_policy import is_engine_profile
from ..files.jsonfile import load_json
from ..format.errors import LayoutError, OutputError
from ..format.profile import load_profile
from ..format.engine_directory import BLOB_NAME, MANIFEST_JSON, MODEL_FILES, described_blob
from .gguf_source import requantize_warning
from .plan import Plan, plan_conversion
from .engine_files import engine_refusal, engine_warnings, sidecar_files, write_sidecars
from .source import open_source
from .writer import WriteResult, write_blob

#: The suffix that makes an engine profile's output a single blob rather than a directory.
BLOB_SUFFIX = ".bump"


@dataclass(frozen=True)
class Conversion:
    """What a conversion wrote, and what an engine user should know about it."""

    result: WriteResult
    plan: Plan
    sidecars: list[Path] = field(default_factory=list)
    engine_notes: list[str] = field(default_factory=list)
    #: the model directory written (None: a single blob)
    directory: Path | None = None


def writes_directory(out: Path, profile: str) -> bool:
    """Whether converting to ``out`` with ``profile`` writes a model directory."""
    return is_engine_profile(load_profile(profile)) and out.suffix != BLOB_SUFFIX


def convert_checkpoint(src: str, out: Path, profile: str, *, context: int | None = None,
                       quant: str | None = None, force: bool = False,
                       engine_sidecars: bool | None = None, progress: bool = False,
                       allow_nonfinite: bool = False) -> Conversion:
    """Convert ``src`` to ``out``: a model directory for an engine profile unless ``out`` ends
    in ``.bump`` (then the blob alone). ``engine_sidecars``: None follows the output's form;
    True or False that contradicts it is a LayoutError before anything is read."""
    chosen = load_profile(profile)
    directory = writes_directory(out, profile)
    if engine_sidecars and not directory:
        raise LayoutError(f"--engine-sidecars: {out}: the engine's sidecars come only with a "
                          "model directory (give OUT without .bump, e.g. out/model/)"
                          if is_engine_profile(chosen) else
                          f"--engine-sidecars: {profile} is not an engine profile")
    if engine_sidecars is False and directory:
        raise LayoutError(f"--no-engine-sidecars: {out}: a model directory is the blob with its "
                          "sidecars; for the blob alone give a .bump path")
    with open_source(src, with_tokenizer=chosen.carries_tokenizer) as source:
        plan = plan_conversion(source, profile, context=context, quant=quant)
        if (requantized := requantize_warning(source, quant)) is not None:
            warnings.warn(requantized, stacklevel=2)
        inputs = source.input_files()
        why = engine_refusal(plan.spec) if is_engine_profile(chosen) else None
        if not directory:
            _refuse_a_model_directorys_blob(out)
            if why is not None:
                warnings.warn(f"the engine's runtime cannot run this model as transformers does "
                              f"({why}); the blob is for bumpconv's runtime", stacklevel=3)
            result = write_blob(plan, source, out, force=force, progress=progress,
                                allow_nonfinite=allow_nonfinite)
            notes = engine_warnings(plan, source) if is_engine_profile(chosen) else []
            return Conversion(result, plan, engine_notes=notes)  # the blob has the engine's tokenizer
        if why is not None:
            raise LayoutError(f"{out}: no model directory for the engine: {why}; a .bump path "
                              "writes the blob alone, for bumpconv's runtime")
        files = sidecar_files(plan, BLOB_NAME)
        with atomic_directory(out, force, MODEL_FILES, inputs) as staging:
            written = write_sidecars(files, staging)
            result = write_blob(plan, source, staging / BLOB_NAME, progress=progress,
                                allow_nonfinite=allow_nonfinite)
        notes = engine_warnings(plan, source)
    return Conversion(replace(result, path=out / BLOB_NAME), plan,
                      [out / p.name for p in written], notes, out)


def _refuse_a_model_directorys_blob(out: Path) -> None:
    """A single blob may not take the place of a model directory's blob: it would sit beside
    the other model's sidecars (replacing the directory is ``convert SRC DIR --force``)."""
    manifest = out.parent / MANIFEST_JSON
    if manifest.is_file() and described_blob(load_json(manifest, OutputError,
                                                       MANIFEST_JSON)) == out.name:
        raise OutputError(f"{out}: is the blob that {manifest} describes; written alone it would "
                          "sit beside another model's sidecars (convert SRC "
                          f"{out.parent} --force replaces the whole model directory)")
