"""One conversion end to end: open the source (with its tokenizer when the profile carries
one), plan, write the blob, then the engine sidecars the profile or the caller asks for. The
command line and ``bumpconv.convert`` both run this; only the printing differs."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..format.errors import LayoutError
from ..format.profile import load_profile
from .gguf_source import requantize_warning
from .plan import Plan, plan_conversion
from .sidecars import (check_sidecar_paths, engine_refusal, engine_sidecars, engine_warnings,
                       write_sidecars)
from .source import open_source
from .writer import WriteResult, write_blob


@dataclass(frozen=True)
class Conversion:
    """What a conversion wrote, and what an engine user should know about it."""

    result: WriteResult
    plan: Plan
    sidecars: list[Path] = field(default_factory=list)
    engine_notes: list[str] = field(default_factory=list)


def convert_checkpoint(src: str, out: Path, profile: str, *, context: int | None = None,
                       quant: str | None = None, force: bool = False,
                       engine_sidecars: bool | None = None, progress: bool = False,
                       allow_nonfinite: bool = False) -> Conversion:
    """Convert ``src`` to ``out``. ``engine_sidecars``: None for the profile's default; a
    model the engine's runtime cannot run as transformers does gets none (a warning), or, when
    they were asked for explicitly, a LayoutError before anything is written."""
    chosen = load_profile(profile)
    directory = out.parent if str(out.parent) else Path(".")
    with open_source(src, with_tokenizer=chosen.carries_tokenizer) as source:
        plan = plan_conversion(source, profile, context=context, quant=quant)
        if (requantized := requantize_warning(source, quant)) is not None:
            warnings.warn(requantized, stacklevel=2)
        inputs = source.input_files()
        wanted = chosen.sidecars == "engine-v7" if engine_sidecars is None else engine_sidecars
        files = _sidecar_files(plan, out, wanted, explicit=bool(engine_sidecars))
        if files:
            check_sidecar_paths(directory, force, inputs)
        result = write_blob(plan, source, out, force=force, progress=progress,
                            allow_nonfinite=allow_nonfinite)
        notes = engine_warnings(plan, source) if files else []
    written = write_sidecars(files, directory, force, inputs) if files else []
    return Conversion(result, plan, written, notes)


def _sidecar_files(plan: Plan, out: Path, wanted: bool, explicit: bool) -> dict[str, bytes]:
    if not wanted:
        return {}
    why = engine_refusal(plan.spec)
    if why is not None:
        if explicit:
            raise LayoutError(f"--engine-sidecars: {why}")
        warnings.warn(f"no engine sidecars: {why}; the blob is for bumpconv's runtime",
                      stacklevel=3)
        return {}
    return engine_sidecars(plan, out.name)
