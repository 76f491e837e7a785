"""The click protocol (RITM's simulated clicker, mIoU@k, NoC) and the commands around it: `samcl eval --clicks N`
and `samcl segment --multimask`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import write_domain
from PIL import Image
from serve_helpers import make_store

from samcl.bench.clicks import click_ious, next_click, noc, summarize_clicks
from samcl.cli import main


def test_first_click_is_the_objects_innermost_pixel():
    truth = np.zeros((10, 14), bool)
    truth[2:7, 3:12] = True  # 5 x 9: the centre row 4, cols 5..9 lie 3 px from the background
    x, y, label = next_click(truth, np.zeros_like(truth), np.zeros_like(truth))
    assert (x, y, label) == (5.0, 4.0, 1)  # the first of the farthest pixels, row-major, as RITM's np.where


def test_the_larger_error_decides_the_click_and_clicked_pixels_are_skipped():
    truth = np.zeros((20, 20), bool)
    truth[2:6, 2:6] = True
    mask = truth.copy()
    mask[10:19, 10:19] = True  # a large false region: the next click is negative, inside it
    x, y, label = next_click(truth, mask, np.zeros_like(truth))
    assert label == 0 and (x, y) == (14.0, 14.0)
    clicked = np.zeros_like(truth)
    clicked[14, 14] = True
    x, y, _ = next_click(truth, mask, clicked)
    assert (x, y) != (14.0, 14.0)
    # the border counts as background (RITM pads by one pixel): a region at the edge is not "far" from it
    edge = np.zeros((8, 8), bool)
    edge[:, :4] = True
    assert next_click(edge, np.zeros_like(edge), np.zeros_like(edge))[:2] == (1.0, 1.0)


def test_noc_and_miou_follow_ritm():
    ious = np.array([0.5, 0.8, 0.86, 0.91] + [0.95] * 16)
    assert noc(ious, 0.85, 20) == 3 and noc(ious, 0.90, 20) == 4 and noc(ious * 0.5, 0.85, 20) == 20
    scores = summarize_clicks([ious, ious * 0.5], 20)
    assert scores["noc@85"] == (3 + 20) / 2 and scores["over@85"] == 1
    assert scores["miou@1"] == pytest.approx(0.375) and scores["miou@10"] == pytest.approx(0.7125)


class Perfect:
    """A predictor that answers the truth after three clicks: the protocol's bookkeeping in isolation."""

    def __init__(self, truth):
        self.truth, self.calls = truth, []

    def predict(self, points, labels, mask_input=None, multimask_output=True, refine=None):
        self.calls.append((len(points), mask_input is not None, multimask_output))
        mask = self.truth if len(points) >= 3 else np.zeros_like(self.truth)
        count = 3 if multimask_output else 1
        return np.stack([mask] * count), np.linspace(0.1, 0.9, count), np.zeros((count, 4, 4), np.float32)


def test_clicks_feed_back_the_previous_logits_and_take_the_best_first_mask():
    truth = np.zeros((12, 12), bool)
    truth[3:9, 3:9] = True
    predictor = Perfect(truth)
    ious = click_ious(predictor, truth, max_clicks=5)
    assert list(ious) == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert predictor.calls[0] == (1, False, True) and predictor.calls[1] == (2, True, False)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("clicks")
    make_store(root / "store", domains=("polyps",))
    write_domain(root / "polyps", (200, 30, 30), seed=0, n_train=1, n_test=2)
    return root


def test_eval_clicks_prints_miou_and_noc_per_run(workspace, capsys):
    code = main(["eval", str(workspace / "store"), "--data", f"polyps={workspace / 'polyps'}", "--clicks", "3",
                 "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["clicks"] == 3
    runs = out["domains"]["polyps"]
    assert set(runs) == {"routed", "base", "oracle"}
    for scores in runs.values():
        assert scores["images"] == 2 and 0 <= scores["miou@1"] <= scores["miou@3"] + 1 and 1 <= scores["noc@85"] <= 3
        assert "miou@5" not in scores  # beyond the clicks asked for
    code = main(["eval", str(workspace / "store"), "--data", f"polyps={workspace / 'polyps'}", "--clicks", "2"])
    table = capsys.readouterr().out
    assert code == 0 and "NoC@85" in table and "oracle" in table and "clicks 2" in table


def test_segment_multimask_writes_three_masks_and_three_scores(workspace, capsys):
    image = workspace / "polyps" / "test" / "images" / "img000.png"
    out = workspace / "mask.png"
    code = main(["segment", str(workspace / "store"), str(image), "--point", "20,20", "--out", str(out),
                 "--multimask", "--json"])
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert code == 0 and len(result["scores"]) == 3 and len(result["masks"]) == 3
    for i, name in enumerate(result["masks"]):
        assert name.endswith(f"mask_{i}.png")
        mask = np.asarray(Image.open(name))
        assert mask.shape == np.asarray(Image.open(image)).shape[:2] and set(np.unique(mask)) <= {0, 255}
    code = main(["segment", str(workspace / "store"), str(image), "--point", "20,20", "--out", "-", "--multimask"])
    assert code == 2 and "--multimask writes 3 files" in capsys.readouterr().err
