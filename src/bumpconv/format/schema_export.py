"""Export the JSON Schemas of the Pydantic models into ``schemas/``.

The committed ``*.schema.json`` files are the machine-readable contract for other tools (the
engine, editors validating a layout file). ``make schemas`` regenerates them and a test fails
when they are stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from .profile import Profile
from .metadata import Metadata
from .registry import Registry
from .spec import ModelSpec

EXPORTED: dict[str, type[BaseModel]] = {
    "architectures.schema.json": Registry,
    "profile.schema.json": Profile,
    "metadata.schema.json": Metadata,
    "model-spec.schema.json": ModelSpec,
}


def render(model: type[BaseModel]) -> str:
    return json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "schemas")
    for name, model in EXPORTED.items():
        (out / name).write_text(render(model), encoding="utf-8")
        print(out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
