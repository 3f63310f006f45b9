"""A progress bar on a terminal (tqdm), and nothing at all elsewhere."""

from __future__ import annotations

import shutil
import sys
from typing import Protocol


class Progress(Protocol):
    def update(self, n: int) -> None: ...
    def close(self) -> None: ...


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, label: str, enabled: bool, unit: str = "B") -> Progress:
    """tqdm counting ``unit`` (bytes are scaled to KiB/MiB) when ``enabled`` and stderr is a
    terminal; otherwise a bar that does nothing."""
    if not (enabled and sys.stderr.isatty()):
        return _NoBar()
    from tqdm import tqdm
    # A terminal that reports no size (0x0) would make tqdm draw nothing: fall back to 80x24.
    size = shutil.get_terminal_size((80, 24))
    scaled = unit == "B"
    return tqdm(total=total, unit=unit, unit_scale=scaled, unit_divisor=1024 if scaled else 1000,
                desc=label, leave=False, ncols=size.columns, nrows=size.lines)
