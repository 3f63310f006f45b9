"""Optional local check against the real engine (never run in CI, never vendors engine code).

Given a checkout of C-Kernel-Engine (``--engine DIR`` or ``BUMPCONV_ENGINE_DIR``), this runs the
engine's own v7 HF converter on a checkpoint and compares its blob with bumpconv's engine-v7 blob
of the same checkpoint, tensor by tensor by name (through both manifests): which tensors are
byte-identical, which differ and how, and which exist on one side only.

    python tools/engine_check.py .cache/smollm2-fp32 --engine /path/to/C-Kernel-Engine

The engine's converter is run with the project's Python as a subprocess, in a scratch
directory; nothing of it is imported or copied.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bumpconv.api import convert  # noqa: E402
from bumpconv.blob.reader import open_blob  # noqa: E402

CONVERTER = "version/v7/scripts/convert_hf_to_bump_v7.py"


class EngineFailed(Exception):
    """The engine's own converter did not produce a blob."""


def engine_blob(engine: Path, checkpoint: Path, out: Path) -> dict[str, dict]:
    """Run the engine's converter; its manifest entries by name."""
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
    return {e["name"]: e for e in manifest["entries"]}


def compare(engine_dir: Path, checkpoint: Path) -> dict[str, list[str]]:
    with tempfile.TemporaryDirectory(prefix="bumpconv-engine-check-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "engine").mkdir()
        theirs = engine_blob(engine_dir, checkpoint, tmp_path / "engine")
        (tmp_path / "ours").mkdir()
        ours_path = tmp_path / "ours" / "weights.bump"
        convert(checkpoint, ours_path, profile="engine-v7", engine_sidecars=False)
        engine_bytes = (tmp_path / "engine" / "weights.bump").read_bytes()
        out: dict[str, list[str]] = {"identical": [], "different": [], "only_engine": [],
                                     "only_bumpconv": []}
        with open_blob(ours_path) as bf:
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--engine", type=Path, default=os.environ.get("BUMPCONV_ENGINE_DIR"))
    args = ap.parse_args()
    if args.engine is None or not (args.engine / CONVERTER).is_file():
        print("engine_check: pass --engine DIR (a C-Kernel-Engine checkout) or set "
              "BUMPCONV_ENGINE_DIR", file=sys.stderr)
        return 2
    try:
        result = compare(args.engine, args.checkpoint.resolve())
    except EngineFailed as exc:
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
