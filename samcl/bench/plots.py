"""Figures as PNG files, one way for every command that draws (`samcl demo`, `samcl benchmark`): matplotlib on
the headless Agg backend, 110 dpi, tight bounding box, no "Software" tag (the bytes depend on the figure alone,
not on the matplotlib version), written atomically.

    plt = pyplot()
    fig, ax = plt.subplots()
    ...
    save_figure(fig, out, "forgetting.png")   # -> "forgetting.png"
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
