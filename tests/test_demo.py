"""Smoke test of `samcl demo --quick` (CI runs it here) and of the protocol's bookkeeping."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from samcl.backbone import TINY_SAM_DIR
from samcl.bench.demo import typical_example
from samcl.cli import main
from samcl.metrics import continual_metrics


def test_continual_metrics_definitions():
    a = [[0.5, 0.1], [0.4, 0.8]]
    m = continual_metrics(a)
    assert m["AA"] == pytest.approx(0.6)
    assert m["FM_reference"] == pytest.approx(0.1 / 2)
    assert m["FM_best"] == pytest.approx(0.1)
    assert m["FT"] == pytest.approx(0.1)


class RoutedStub:
    """A set that learned `polyps`: test image i is routed to `routes[i]` and its mask covers i + 1 pixels of the
    truth's 10 (IoU (i + 1) / 10)."""

    def __init__(self, routes):
        self.routes, self.domains = routes, ["polyps"]
        self.module_set = SimpleNamespace(domain_name=lambda k: "polyps" if k == 0 else "base",
                                          index_of=lambda name: 0 if name == "polyps" else -1)

    def segment(self, images, prompts):
        out = []
        for image in images:
            i = int(image[0, 0, 0])
            mask = np.zeros((1, 4, 4), bool)
            mask.flat[: i + 1] = True
            out.append(SimpleNamespace(masks=mask, domain=self.routes[i]))
        return out


def typical_of(routes, name="polyps"):
    truth = np.zeros((4, 4), bool)
    truth.flat[:10] = True
    test = [SimpleNamespace(image=np.full((4, 4, 3), i, np.uint8), mask=truth, points=None, labels=None)
            for i in range(len(routes))]
    sample, _, iou, caption = typical_example(RoutedStub(routes), SimpleNamespace(name=name, test=test),
                                              batch_size=2)
    return int(sample.image[0, 0, 0]), iou, caption


def test_demo_example_is_a_median_iou_image_among_the_correctly_routed():
    # images 0 and 4 go to base (image 0 would be the old "first test image": IoU 0.1, sent to base)
    index, iou, caption = typical_of(["base", "polyps", "polyps", "polyps", "base"])
    assert index == 2 and iou == pytest.approx(0.3) and caption == "median of 3/5 routed to polyps"
    index, _, caption = typical_of(["base", "base", "base"])  # nothing routed right: the median of all, said so
    assert index == 1 and caption == "none of 3 routed to polyps: median of all"
    index, _, caption = typical_of(["polyps", "base", "base", "polyps"], name="documents")  # never learned
    assert index == 1 and caption == "median of 2/4 routed to base"


@pytest.mark.slow
@pytest.mark.skipif(not (TINY_SAM_DIR / "config.json").is_file(), reason="shipped tiny SAM not built yet")
def test_demo_quick_writes_results_and_plots(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "AA" in out and "selector accuracy" in out and "storage" in out
    results = json.loads((tmp_path / "results.json").read_text())
    summary = results["samcl"]["summary"]
    order = results["samcl"]["order"]
    assert len(results["samcl"]["matrix_iou"]) == len(order) >= 5
    assert {"AA", "FM_reference", "FM_best", "FT"} <= set(summary["iou"])
    for name in ("continual_matrix.png", "iou_per_step.png", "examples.png"):
        assert (tmp_path / name).stat().st_size > 10_000
