"""``bumpconv parity --plot``: relative error per layer and per stage, the first bad one marked.

Left: the hidden state after every layer (``embed`` first) against HF, as relative error
``max|run - ref| / max|ref|`` on a log scale, with the tolerance. Right: every stage of each
stage diff that ran (``--layer N``, or the first failing layer, or the output head). The first
row beyond tolerance in each panel is marked in red and named. Errors of exactly 0 are drawn at
:data:`FLOOR`, infinite ones (a missing tap, a -inf on one side only) at :data:`CEILING`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..files.figure import new_figure, save_png
from .metrics import Row
from .parity_report import ParityReport

#: Figure size in inches (the PNG is these times files.figure.DPI).
WIDTH_IN = 12.0
HEIGHT_IN = 4.5
FLOOR = 1e-12
CEILING = 1e3


def _errors(rows: list[Row]) -> np.ndarray:
    return np.clip(np.array([r.rel for r in rows], dtype=np.float64), FLOOR, CEILING)


def _panel(ax: Any, rows: list[Row], labels: list[str], first_bad: Row | None, rtol: float,
           label: str | None = None) -> None:
    x = np.arange(len(rows))
    y = _errors(rows)
    ax.plot(x, y, marker="o", markersize=3, label=label)
    if first_bad is not None:
        i = rows.index(first_bad)
        ax.plot([x[i]], [y[i]], marker="o", markersize=9, color="red", fillstyle="none")
        ax.annotate(f"first bad: {labels[i]}", (x[i], y[i]), textcoords="offset points",
                    xytext=(6, 6), color="red", fontsize=8)
    ax.axhline(rtol, color="grey", linestyle="--", linewidth=1)
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=90, fontsize=7)


def plot_parity(report: ParityReport, path: Path) -> None:
    """Draw the figure of the module docstring and write it to ``path`` as a PNG."""
    fig = new_figure(WIDTH_IN, HEIGHT_IN)
    layers_ax, stages_ax = fig.subplots(1, 2)
    rtol = report.thresholds.rtol
    sweep = report.sweep
    _panel(layers_ax, sweep.rows, [r.key for r in sweep.rows], sweep.first_bad, rtol)
    layers_ax.set_title(f"hidden state after each layer (prompt {report.sweep_prompt}); "
                        f"rtol {rtol:g}", fontsize=9)
    layers_ax.set_ylabel("relative error")
    for diff in report.stages:
        what = "output head" if diff.layer is None else f"layer {diff.layer}"
        _panel(stages_ax, diff.rows, [r.key for r in diff.rows], diff.first_bad, rtol, what)
    if report.stages:
        stages_ax.legend(fontsize=7)
        stages_ax.set_title("stages", fontsize=9)
    else:
        stages_ax.set_axis_off()
        stages_ax.text(0.5, 0.5, "no stage diff ran\n(every layer within tolerance;\n"
                       "pass --layer N for one)", ha="center", va="center")
    fig.suptitle(report.verdict[:150], fontsize=9)
    fig.tight_layout()
    save_png(fig, path)
