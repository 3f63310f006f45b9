"""``bumpconv eval --plot``: the KL distribution and where top-1 disagrees, per blob.

One row per corpus: on the left the distribution of per-token KL(HF || blob) (comparison (a)) on
a log scale, one step histogram per blob; on the right the top-1 disagreement rate against the
position in the chunk (scored positions only, in bins, over all chunks), which shows whether
errors grow with context. KL values below :data:`KL_FLOOR` (an fp32-exact blob has many, some
rounding to 0 or below) are counted in the first bin.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..files.figure import new_figure, save_png
from .eval_report import EvalReport

#: Figure width, and height per corpus row, in inches (the PNG is these times files.figure.DPI).
WIDTH_IN = 12.0
ROW_IN = 3.5
KL_FLOOR = 1e-14
#: Scored positions are grouped into this many bins for the disagreement curve.
POSITION_BINS = 16


def plot_eval(report: EvalReport, path: Path) -> None:
    """Draw the figure of the module docstring and write it to ``path`` as a PNG."""
    rows = len(report.samples)
    fig = new_figure(WIDTH_IN, ROW_IN * rows)
    axes = fig.subplots(rows, 2, squeeze=False)
    edges = np.linspace(np.log10(KL_FLOOR), 1.0, 61)
    for (kl_ax, pos_ax), s in zip(axes, report.samples):
        for b in report.blobs:
            scores = b.scores[s.name]
            label = Path(b.blob).name
            kl = np.log10(np.clip(scores.kl, KL_FLOOR, None))
            kl_ax.hist(kl, bins=edges, histtype="step", label=label)
            positions = np.unique(scores.position)
            groups = np.array_split(positions, min(POSITION_BINS, len(positions)))
            centers = [float(g.mean()) for g in groups]
            rates = [100 * float(np.mean(~scores.same_top[np.isin(scores.position, g)]))
                     for g in groups]
            pos_ax.plot(centers, rates, marker="o", markersize=3, label=label)
        kl_ax.set_title(f"{s.name}: KL(HF || blob) per token, {s.scored} tokens", fontsize=9)
        kl_ax.set_xlabel("log10 KL (nats)")
        kl_ax.set_ylabel("tokens")
        kl_ax.legend(fontsize=7)
        pos_ax.set_title(f"{s.name}: top-1 disagreement by position in the {report.ctx}-token "
                         "chunk", fontsize=9)
        pos_ax.set_xlabel("position of the predicted token")
        pos_ax.set_ylabel("top-1 differs (% of tokens)")
        pos_ax.set_ylim(bottom=0)
        pos_ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)
