"""The benchmark's accuracy-vs-storage plot names each method at its own point: read back from the drawn figure,
every label lies nearest its own point, or a leader line runs from it to that point."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from samcl.bench.render import accuracy_vs_storage

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "results.json"


def label_report(texts, fig) -> list[tuple[str, bool, bool]]:
    """(label, its own point is the nearest to its box, its leader line ends at its own point) per label."""
    fig.canvas.draw()
    ax, renderer = fig.axes[0], fig.canvas.get_renderer()
    points = np.array([ax.transData.transform(t.xy) for t in texts])
    out = []
    for i, text in enumerate(texts):
        box = text.get_window_extent(renderer)
        dx = np.maximum(np.maximum(box.x0 - points[:, 0], 0), points[:, 0] - box.x1)
        dy = np.maximum(np.maximum(box.y0 - points[:, 1], 0), points[:, 1] - box.y1)
        gaps = np.hypot(dx, dy)
        nearest = gaps[i] <= gaps.min() + 0.5
        led = False
        if text.leader is not None:
            end = text.leader.get_transform().transform(text.leader.get_path().vertices)[-1]
            to_points = np.hypot(*(end - points).T)
            led = to_points[i] <= 6 and to_points.argmin() == i
        out.append((text.get_text(), nearest, led))
    return out


@pytest.fixture(scope="module")
def committed():
    return json.loads(RESULTS.read_text())


def test_every_label_of_the_committed_plot_belongs_to_its_own_point(committed):
    fig, texts = accuracy_vs_storage(committed)
    placed = label_report(texts, fig)
    assert [name for name, nearest, led in placed if not (nearest or led)] == []
    assert {name for name, *_ in placed} >= {"samcl-mlp", "samcl-noprompt", "samcl-oracle", "samcl / samcl-ranpac"}


def test_labels_of_crowded_points_get_leader_lines(committed):
    """Six methods moved within a few pixels of each other: the labels cannot all sit by their points, so those
    moved away are tied to their own point by a line."""
    report = copy.deepcopy(committed)
    names = list(report["methods"])[8:14]
    for k, name in enumerate(names):
        report["methods"][name]["aggregate"]["storage"]["total"]["mean"] = 500_000 * (1 + 0.03 * k)
        report["methods"][name]["aggregate"]["continual"]["iou"]["AA"]["mean"] = 0.70 + 0.002 * k
    fig, texts = accuracy_vs_storage(report)
    placed = label_report(texts, fig)
    assert [name for name, nearest, led in placed if not (nearest or led)] == []
    assert any(led for name, _, led in placed if name in names)
