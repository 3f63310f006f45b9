"""The C runtime's files include one another in one direction (docs/runtime.md, "Kernels"):
each layer includes only what lies below it, so the kernels never see the model (bump.h), the
codecs never see the runtime, and kernels_int8.h does not lean on kernels_impl.h. Each header
also compiles on its own, for every kernel level's target, so none depends on what another
file happened to include before it."""

from __future__ import annotations

import platform
import re
import shlex
import subprocess
import sysconfig
from pathlib import Path

import pytest

NATIVE = Path(__file__).resolve().parents[1] / "native"

#: Each header's place, lowest first: a file may include only headers ranked below it.
HEADER_RANK = {
    "status.h": 0, "blocks.h": 0,
    "quant.h": 1, "pool.h": 1,
    "kernels.h": 2, "kernels_vec.h": 3, "kernels_dequant.h": 4, "kernels_int8.h": 4,
    "kernels_impl.h": 5,
    "guard.h": 6, "bump.h": 6, "validate.h": 7, "probe.h": 8,
}
#: Sources sit at their own header's rank, except those that use a header above it.
SOURCE_RANK = {"kernels.c": 2, "bump.c": 7.5, "pool_omp.c": 1.5, "kernels_portable.c": 5.5,
               "kernels_avx2.c": 5.5, "kernels_avxvnni.c": 5.5, "kernels_avx512.c": 5.5,
               "kernels_avx512vnni.c": 5.5}


def _includes(path: Path) -> list[str]:
    return re.findall(r'^#include "([^"]+)"', path.read_text(encoding="utf-8"), re.M)


def _rank(path: Path) -> float:
    if path.suffix == ".h":
        return HEADER_RANK[path.name]
    return SOURCE_RANK.get(path.name, HEADER_RANK.get(path.stem + ".h", -1))


def test_every_file_has_a_place_and_includes_only_what_lies_below_it() -> None:
    files = sorted(p for p in NATIVE.iterdir() if p.suffix in (".c", ".h"))
    headers = {p.name for p in files if p.suffix == ".h"}
    assert headers == set(HEADER_RANK), "a header was added or removed: give it a rank here"
    wrong = []
    for path in files:
        rank = _rank(path)
        assert rank >= 0, f"{path.name}: no rank (add it to SOURCE_RANK)"
        for name in _includes(path):
            own = path.suffix == ".c" and name == path.stem + ".h"
            if not own and HEADER_RANK[name] >= rank:
                wrong.append(f"{path.name} includes {name}")
    assert not wrong, "upward or sideways includes: " + ", ".join(wrong)


def _targets() -> dict[str, str]:
    """Each kernel level's `#pragma GCC target` (from its own file), and the baseline's."""
    targets = {"portable": ""}
    if platform.machine() in ("x86_64", "AMD64", "i386", "i686"):
        for path in sorted(NATIVE.glob("kernels_*.c")):
            found = re.search(r'#pragma GCC target\("([^"]+)"\)', path.read_text("utf-8"))
            if found:
                targets[path.stem] = found.group(1)
    return targets


@pytest.mark.parametrize("target", list(_targets().items()), ids=lambda t: t[0])
def test_every_header_compiles_on_its_own(target: tuple[str, str], tmp_path: Path) -> None:
    """Headers with static functions are compiled as their includers compile them (unused
    statics are fine here); kernels_impl.h needs a level's macros and is compiled by the
    build itself, once per level."""
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    name, pragma = target
    for header in sorted(set(HEADER_RANK) - {"kernels_impl.h"}):
        src = tmp_path / f"{Path(header).stem}.c"
        src.write_text((f'#pragma GCC target("{pragma}")\n' if pragma else "")
                       + f'#include "{header}"\n', encoding="utf-8")
        run = subprocess.run([*cc, "-std=c11", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
                              "-Wno-unused-function", "-I", str(NATIVE), str(src)],
                             capture_output=True, text=True)
        assert run.returncode == 0, f"{header} at {name}:\n{run.stderr}"
