"""Build the C runtime into the extension module ``bumpconv._native`` (cffi, out-of-line API mode).

Two callers:

* ``pip install -e .`` / ``pip install .``: setup.py names ``native/build_ffi.py:ffibuilder`` in
  ``cffi_modules``, so setuptools compiles the extension next to the package.
* ``make -C native`` (and its ``asan`` target) run this file as a script to build a variant into
  a directory that ``BUMPCONV_NATIVE_DIR`` can point the runtime at. ``bench/bench_pool.py``
  builds the ``openmp`` variant: the same sources with pool_omp.c (libgomp's threads behind
  pool.h) in place of pool.c, to measure the pool against OpenMP and nothing else.

Flags: ``-O3`` and ``-pthread`` (the runtime's own thread pool, pool.c), for the baseline target (never
``-march=native``: the build must run on any CPU of the architecture). The kernels are compiled
once per instruction-set level (kernels_<level>.c, each with its own ``#pragma GCC target``) and
the level is chosen at run time (native/kernels.c).
The runtime is compiled with ``-ffp-contract=off`` so that it rounds as written, like
transformers; the kernels fuse multiply-adds explicitly.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sysconfig
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
SOURCES = ("status.c", "quant.c", "kernels.c", "kernels_portable.c", "kernels_avx2.c",
           "kernels_avxvnni.c", "kernels_avx512.c", "kernels_avx512vnni.c", "guard.c", "validate.c",
           "bump.c", "probe.c")
#: The thread pool's source per variant (pool.h's implementation).
POOL = {"release": "pool.c", "asan": "pool.c", "openmp": "pool_omp.c"}
HEADERS = ("status.h", "blocks.h", "quant.h", "pool.h", "kernels.h", "kernels_vec.h",
           "kernels_dequant.h", "kernels_int8.h", "kernels_impl.h", "guard.h", "validate.h",
           "bump.h", "probe.h")
#: Headers whose declarations between CFFI markers make up the Python-visible API, in order.
CFFI_HEADERS = ("status.h", "blocks.h", "quant.h", "guard.h", "bump.h", "probe.h")
MODULE = "bumpconv._native"

STRICT = ["-Wall", "-Wextra", "-Werror"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]


def _cdef() -> str:
    """The declarations between the CFFI markers of each of CFFI_HEADERS (the headers are the
    single source of the API)."""
    parts = []
    for name in CFFI_HEADERS:
        text = (HERE / name).read_text(encoding="utf-8")
        start = text.index("/* CFFI-BEGIN */") + len("/* CFFI-BEGIN */")
        parts.append(text[start:text.index("/* CFFI-END */")])
    return "\n".join(parts)


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")


def _flags(variant: str, strict: bool) -> tuple[list[str], list[str]]:
    """(compile, link) flags for a variant: release, asan, or openmp (release + -fopenmp)."""
    compile_args = ["-std=c11", "-ffp-contract=off", "-pthread"]
    link_args = ["-pthread"]
    if variant == "asan":
        compile_args += ["-O1", "-g", *SANITIZE]
        link_args += SANITIZE
    else:
        compile_args += ["-O3"]
    if variant == "openmp":
        compile_args += ["-fopenmp"]
        link_args += ["-fopenmp"]
    if strict:
        compile_args += STRICT
    return compile_args, link_args


def make_builder(variant: str = "release", strict: bool = False, absolute: bool = False) -> FFI:
    """An FFI builder for ``bumpconv._native`` with the flags of ``variant``.

    setuptools compiles from the project root and wants paths relative to it; cffi's own
    ``compile()`` changes into its temporary directory first, so it needs absolute paths.
    """
    compile_args, link_args = _flags(variant, strict)
    builder = FFI()
    builder.cdef(_cdef())
    where = str(HERE) if absolute else os.path.relpath(HERE)
    builder.set_source(
        MODULE, "".join(f'#include "{name}"\n' for name in CFFI_HEADERS),
        sources=[os.path.join(where, s) for s in (*SOURCES, POOL[variant])],
        include_dirs=[where],
        depends=[os.path.join(where, h) for h in HEADERS],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    return builder


ffibuilder = make_builder(strict=os.environ.get("BUMPCONV_STRICT") == "1")


def main() -> None:
    ap = argparse.ArgumentParser(description="Build bumpconv._native into a directory.")
    ap.add_argument("--variant", choices=tuple(POOL), default="release")
    ap.add_argument("--out", type=Path, required=True,
                    help="output directory (BUMPCONV_NATIVE_DIR for the runtime)")
    ap.add_argument("--strict", action="store_true", help="warnings are errors")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    builder = make_builder(args.variant, args.strict, absolute=True)
    built = builder.compile(tmpdir=str(out / "tmp"), verbose=False)
    target = out / Path(built).name
    os.replace(built, target)
    print(target)


if __name__ == "__main__":
    main()
