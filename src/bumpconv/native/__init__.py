"""The C extension ``bumpconv._native`` (native/, built by cffi): loading it, and which kernels
it was built with.

``BUMPCONV_NATIVE_DIR=DIR`` loads the extension from DIR instead of the installed package: the
sanitizer build (``make -C native asan-test``) is tested that way.
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import os
from pathlib import Path
from types import ModuleType

from ..format.errors import NativeUnavailableError


@functools.lru_cache(maxsize=None)
def load_native(directory: str | None = None) -> ModuleType:
    """The cffi module ``bumpconv._native``: from ``directory`` when given (a build variant such
    as the sanitizer build), else the one installed with the package."""
    if directory is None:
        try:
            return importlib.import_module("bumpconv._native")
        except ImportError as exc:
            raise NativeUnavailableError(
                f"the C runtime bumpconv._native is not built ({exc}); reinstall with "
                "`pip install -e .` or build it with `make -C native`") from None
    candidates = sorted(p for p in Path(directory).glob("_native*")
                        if p.name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)))
    if not candidates:
        raise NativeUnavailableError(
            f"BUMPCONV_NATIVE_DIR={directory}: no _native extension module there "
            "(build one with `make -C native`)")
    spec = importlib.util.spec_from_file_location("bumpconv._native", candidates[0])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        raise NativeUnavailableError(f"{candidates[0]}: cannot load ({exc})") from None
    return module


def native() -> ModuleType:
    """The extension this process uses (honours ``BUMPCONV_NATIVE_DIR``)."""
    return load_native(os.environ.get("BUMPCONV_NATIVE_DIR") or None)


def kernel_name() -> str:
    """Which SGEMM/GEMV kernel the extension was compiled with (vector width, tile)."""
    mod = native()
    return mod.ffi.string(mod.lib.bump_kernel_name()).decode()
