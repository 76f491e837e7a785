"""Figures as PNG files, one way for every command that draws (`samcl demo`, `samcl benchmark`): matplotlib on
the headless Agg backend, 110 dpi, tight bounding box, no "Software" tag (the bytes depend on the figure alone,
not on the matplotlib version), written atomically.

    plt = pyplot()
    fig, ax = plt.subplots()
    ...
    save_figure(fig, out, "forgetting.png")   # -> "forgetting.png"

Point labels (`label_points`) are placed by adjustText: moved off the points and each other, each moved label tied
to its own point by a thin leader line, so a crowded scatter never shows a name beside another method's point.
"""

from __future__ import annotations

import io
from pathlib import Path

from ..io import atomic_write_bytes

DPI = 110


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed; imported on first use, matplotlib is slow to load)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, folder: Path, name: str) -> str:
    """Write `fig` to folder/name as PNG, close it, and return `name` (what results.json lists)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    pyplot().close(fig)
    atomic_write_bytes(Path(folder) / name, buffer.getvalue())
    return name


def label_points(ax, points: list[tuple[float, float, str]], colors: list | None = None, fontsize: int = 8) -> list:
    """Label each (x, y, text) point of `ax` (drawn already, scales set), in its point's colour: adjustText moves
    the labels apart and off every point, and a label it moved away from its point gets a leader line to it.

    Returns:
      (list): the matplotlib Text of each point, in order; its `xy` is the point it labels and its `leader` the
      line to that point (None when the label sits by it).
    """
    from adjustText import adjust_text

    texts = []
    for k, (x, y, text) in enumerate(points):
        colour = _darker(colors[k]) if colors else "black"
        label = ax.text(x, y, text, fontsize=fontsize, va="center", color=colour)
        label.xy, label.leader = (x, y), None
        texts.append(label)
    if texts:
        _, leaders = adjust_text(texts, x=[p[0] for p in points], y=[p[1] for p in points], ax=ax, iter_lim=2000,
                                 force_explode=(0.3, 1.0), expand=(1.2, 1.5), min_arrow_len=8,
                                 arrowprops={"arrowstyle": "-", "color": "0.45", "lw": 0.6, "shrinkA": 1,
                                             "shrinkB": 3})
        for leader in leaders:
            leader.patchA.leader = leader  # adjustText ties each line to its label (patchA)
    return texts


def _darker(colour, share: float = 0.35) -> tuple:
    """`colour` moved `share` of the way to black: a pastel point's label stays readable on white."""
    from matplotlib.colors import to_rgb

    return tuple((1 - share) * c for c in to_rgb(colour))
