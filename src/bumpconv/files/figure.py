"""Figures written as PNG files: matplotlib without pyplot's global state or a display.

matplotlib is an optional extra (``bumpconv[plot]``); only the commands' ``--plot`` options need
it, so it is imported here, on demand, with a one-line error when it is missing. A PNG is saved
at a fixed size (figure inches x dpi, no tight bounding box), so its pixel size is known.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ..format.errors import PlotError
from .atomic import atomic_output, write_all
from .extras import install_command

#: Pixels per inch of every saved figure.
DPI = 100


def new_figure(width_in: float, height_in: float) -> Any:
    """A matplotlib ``Figure`` of ``width_in`` x ``height_in`` inches (not registered with
    pyplot, so nothing is shown and nothing leaks between calls)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError(f"--plot needs matplotlib: {install_command('plot')}") from None
    return Figure(figsize=(width_in, height_in), dpi=DPI)


def save_png(fig: Any, path: Path) -> None:
    """Render ``fig`` to ``path`` as a PNG of exactly width x height x :data:`DPI` pixels,
    atomically (an existing file is replaced)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    with atomic_output(path, force=True) as fd:
        write_all(fd, buf.getbuffer())
