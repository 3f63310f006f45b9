"""The pip command that adds one of bumpconv's optional extras (``[reference]``, ``[plot]``) to
this installation: what a missing-dependency error tells the user to run.

bumpconv is not on a package index, so ``pip install 'bumpconv[reference]'`` finds nothing; the
extra must be installed from the checkout bumpconv came from. pip records that directory when it
installs from one (PEP 610's ``direct_url.json``, editable or not), so the command can name it.
"""

from __future__ import annotations

import json
import shlex
from importlib import metadata
from urllib.parse import unquote, urlparse

#: Extra pip options an extra needs: torch from its CPU-only index (PyPI's Linux wheel pulls
#: gigabytes of CUDA libraries, and bumpconv runs on the CPU).
_OPTIONS = {"reference": " --extra-index-url https://download.pytorch.org/whl/cpu"}


def install_command(extra: str) -> str:
    """``pip install '<checkout>[extra]' ...`` for this installation, else the same from ``.``
    with a note that it runs in the bumpconv checkout."""
    checkout = _checkout()
    options = _OPTIONS.get(extra, "")
    if checkout is None:
        return f"pip install '.[{extra}]'{options} (in the bumpconv checkout)"
    return f"pip install {shlex.quote(f'{checkout}[{extra}]')}{options}"


def _checkout() -> str | None:
    """The local directory this bumpconv was installed from, or None (a wheel, an unknown
    installer, or a checkout that no longer exists)."""
    try:
        text = metadata.distribution("bumpconv").read_text("direct_url.json")
        info = json.loads(text) if text else {}
    except (metadata.PackageNotFoundError, ValueError):
        return None
    url = urlparse(str(info.get("url", "")))
    if url.scheme != "file" or "dir_info" not in info:
        return None
    return unquote(url.path)
