"""Build llama.cpp as a local peer for benchmarks and oracle tests (``make peer``).

Why this exists: llama.cpp is the reference point for speed (llama-bench), for conversion cost
(convert_hf_to_gguf.py + llama-quantize) and for the quantizers themselves (libggml's
``ggml_quantize_chunk``).  No llama.cpp code or binary is committed to this project: the source
comes at run time from the ``llama-cpp-python`` sdist on PyPI (it vendors the full llama.cpp tree
under ``vendor/llama.cpp``) and everything built lives under ``<cache>/peer/``, which is
git-ignored.  Nothing here is used by CI.

Idempotent: each step (download, unpack, configure + build) is skipped when its result exists;
``build-info.json`` records what was built and is what ``bench/peer.py`` reads.

``--level`` builds a second peer for one of the runtime's kernel levels (``BUMPCONV_KERNELS``)
below this machine's, to compare like with like: ``--level avx2`` is llama.cpp with AVX2, FMA and
F16C and no AVX-512 (``GGML_NATIVE=OFF``), in ``<cache>/peer-avx2``, from the same unpacked
source as ``<cache>/peer``. ``bench/bench_runtime.py --level avx2`` measures against it.

    python bench/peer_build.py [--cache .cache] [--jobs 2] [--force] [--level avx2]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

PACKAGE = "llama-cpp-python"
VERSION = "0.3.36"
SDIST = f"llama_cpp_python-{VERSION}.tar.gz"
# Tools worth their build time. llama-cli is left out: in this llama.cpp it links the whole
# server (llama-server-impl); llama-completion is the old interactive `main` and is cheap.
TARGETS = ("llama-bench", "llama-quantize", "llama-perplexity", "llama-simple", "llama-completion")
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",  # libggml*.so for the ctypes oracle in peer.py
    "-DGGML_NATIVE=ON",  # this machine's SIMD (AVX2/FMA/F16C here; AVX-512 if present)
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=ON",  # for llama-simple only; other examples are configured, not built
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_OPENSSL=OFF",  # no model downloads wanted
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # would fetch the web UI from the network
)
LIB_NAMES = ("libggml-base.so", "libggml-cpu.so", "libggml.so", "libllama.so")
# The instruction sets of a peer built for one of the runtime's kernel levels: ggml's options
# with GGML_NATIVE=OFF (which turns SSE4.2, AVX, AVX2, BMI2, FMA and F16C on and AVX-512 off by
# default; they are spelled out so the build says what it is). "native" is -march=native.
LEVEL_FLAGS = {
    "native": ("-DGGML_NATIVE=ON",),
    "avx2": ("-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON",
             "-DGGML_F16C=ON", "-DGGML_BMI2=ON", "-DGGML_AVX_VNNI=OFF", "-DGGML_AVX512=OFF",
             "-DGGML_AVX512_VNNI=OFF", "-DGGML_AVX512_VBMI=OFF", "-DGGML_AVX512_BF16=OFF",
             "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"),
}
LEVEL_FLAGS["avx2-vnni"] = tuple(f.replace("GGML_AVX_VNNI=OFF", "GGML_AVX_VNNI=ON")
                                 for f in LEVEL_FLAGS["avx2"])


def peer_dir(cache: Path, level: str = "native") -> Path:
    """Where a peer lives: ``<cache>/peer`` (this machine's SIMD), ``<cache>/peer-<level>``."""
    return cache / ("peer" if level == "native" else f"peer-{level}")


def cmake_flags(level: str) -> tuple[str, ...]:
    """The configure flags of the peer for ``level``."""
    return tuple(f for f in CMAKE_FLAGS if not f.startswith("-DGGML_NATIVE=")) + LEVEL_FLAGS[level]


def source_dir(cache: Path) -> Path:
    """The unpacked sdist (holds vendor/llama.cpp, whose convert_hf_to_gguf.py peer.py runs)."""
    return peer_dir(cache) / f"llama_cpp_python-{VERSION}"


def run(cmd: list[str], **kw: object) -> None:
    """Run a command, echoing it, failing loudly."""
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]


def download(pdir: Path) -> Path:
    """Fetch the sdist with pip (the registry's ordinary client); skip when present."""
    sdist = pdir / SDIST
    if not sdist.exists():
        pdir.mkdir(parents=True, exist_ok=True)
        # pip prepares the sdist's metadata (a scikit-build-core build env): ~1-2 min once.
        run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
             "--quiet", f"{PACKAGE}=={VERSION}", "-d", str(pdir)])
    return sdist


def unpack(sdist: Path, src: Path) -> None:
    """Unpack the sdist once (a marker file says it completed)."""
    marker = src / ".unpacked"
    if marker.exists():
        return
    if src.exists():
        shutil.rmtree(src)
    with tarfile.open(sdist) as tar:
        tar.extractall(src.parent, filter="data")
    marker.touch()


def llama_commit(src: Path) -> str:
    """The llama.cpp commit this sdist vendors, from its CHANGELOG (the sdist has no .git)."""
    text = (src / "CHANGELOG.md").read_text(encoding="utf-8")
    section = text.split(f"## [{VERSION}]", 1)[1].split("\n## [", 1)[0]
    m = re.search(r"ggml-org/llama\.cpp@([0-9a-f]{7,40})", section)
    return m.group(1) if m else "unknown"


def build(src: Path, build_dir: Path, jobs: int, commit: str, flags: tuple[str, ...]) -> float:
    """Configure and build the tools and shared libraries; returns wall seconds."""
    t0 = time.perf_counter()
    llama = src / "vendor" / "llama.cpp"
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    run(["cmake", "-S", str(llama), "-B", str(build_dir), *gen, *flags,
         f"-DLLAMA_BUILD_COMMIT={commit}", "-DLLAMA_BUILD_NUMBER=0"])
    run(["cmake", "--build", str(build_dir), "-j", str(jobs), "--target", *TARGETS])
    return time.perf_counter() - t0


def find_outputs(build_dir: Path) -> dict[str, dict[str, str]]:
    """Paths of the built tools and libraries (missing ones are an error)."""
    bins = {t: build_dir / "bin" / t for t in TARGETS}
    libs = {n: build_dir / "bin" / n for n in LIB_NAMES}
    missing = [str(p) for p in [*bins.values(), *libs.values()] if not p.exists()]
    if missing:
        raise SystemExit(f"peer build incomplete, missing: {missing}")
    return {"tools": {k: str(v) for k, v in bins.items()},
            "libs": {k: str(v) for k, v in libs.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=Path(__file__).resolve().parent.parent / ".cache")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--force", action="store_true", help="rebuild even if build-info.json exists")
    ap.add_argument("--level", choices=sorted(LEVEL_FLAGS), default="native",
                    help="instruction sets: this machine's (native), or a runtime kernel level's "
                         "(into <cache>/peer-<level>)")
    args = ap.parse_args(argv)

    pdir = peer_dir(args.cache.resolve(), args.level)
    info_path = pdir / "build-info.json"
    if info_path.exists() and not args.force:
        info = json.loads(info_path.read_text())
        if all(Path(p).exists() for g in ("tools", "libs") for p in info[g].values()):
            print(f"llama.cpp peer already built ({info_path}):")
            print(json.dumps(info, indent=2))
            return 0

    t0 = time.perf_counter()
    sdist = download(peer_dir(args.cache.resolve()))  # one source for every level
    t_download = time.perf_counter() - t0
    src = source_dir(args.cache.resolve())
    unpack(sdist, src)
    commit = llama_commit(src)
    build_dir = pdir / "build"
    flags = cmake_flags(args.level)
    t_build = build(src, build_dir, args.jobs, commit, flags)
    info = {
        "package": f"{PACKAGE}=={VERSION}",
        "llama_cpp_commit": commit,
        "source": str(src / "vendor" / "llama.cpp"),
        "build": str(build_dir),
        "level": args.level,
        "cmake_flags": list(flags),
        "download_s": round(t_download, 1),
        "build_s": round(t_build, 1),
        **find_outputs(build_dir),
    }
    pdir.mkdir(parents=True, exist_ok=True)
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
