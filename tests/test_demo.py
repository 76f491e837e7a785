"""Smoke test of `samcl demo --quick` (CI runs it here) and of the protocol's bookkeeping."""

import json

import pytest

from samcl.backbone import TINY_SAM_DIR
from samcl.cli import main
from samcl.metrics import continual_metrics


def test_continual_metrics_definitions():
    a = [[0.5, 0.1], [0.4, 0.8]]
    m = continual_metrics(a)
    assert m["AA"] == pytest.approx(0.6)
    assert m["FM_reference"] == pytest.approx(0.1 / 2)
    assert m["FM_best"] == pytest.approx(0.1)
    assert m["FT"] == pytest.approx(0.1)


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
