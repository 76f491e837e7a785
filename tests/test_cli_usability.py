"""What a new user meets first, end to end: progress lines in a log, images without masks, a Hugging Face model id
(offline), the overlay, and the shipped `auto` settings of every inference front end (segment, eval, serve)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import cli_error, one_error_line, write_domain
from PIL import Image
from serve_helpers import make_store, png, sample_images

from samcl import SAMCL, Prompt
from samcl.backbone import TINY_SAM_DIR, is_hub_id
from samcl.cli import main
from samcl.cli.overlay import ALPHA, MASK_COLOUR, NEGATIVE, POSITIVE
from samcl.io import bar, log_to_stderr


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("usability") / "store")


@pytest.fixture(scope="module")
def red(tmp_path_factory):
    return write_domain(tmp_path_factory.mktemp("red") / "red", (200, 30, 30), seed=0)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


# ---------------------------------------------------------------------------------------------- progress
def progress_lines(err: str) -> list[str]:
    return [line.removeprefix("samcl: ") for line in err.splitlines() if line.startswith("samcl: ")]


def test_progress_off_a_terminal_is_start_each_tenth_and_done_lines(capsys):
    log_to_stderr()  # what the command sets up
    for _ in bar(range(20), desc="work"):
        for _ in bar(range(3), desc="inner", leave=False):  # inside another bar: detail, not shown
            pass
    for _ in bar(range(0), desc="embed"):  # nothing to do: nothing shown (was a stray 'embed: 0it' bar)
        pass
    lines = progress_lines(capsys.readouterr().err)
    assert lines[0] == "work: started (20 it)" and lines[-1].startswith("work: done, 20/20 it (100 %) in ")
    assert [line.split()[1] for line in lines[1:-1]] == [f"{n}/20" for n in range(2, 20, 2)]
    assert not any(line.startswith(("inner", "embed")) for line in lines)


def test_progress_lines_are_records_of_the_samcl_logger_for_python_users():
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("samcl.progress")
    logger.addHandler(handler)
    try:
        shown = bar(total=4, desc="learn polyps")
        for _ in range(4):
            shown.update()
            shown.set_postfix(loss="0.1234")
        shown.close()
    finally:
        logger.removeHandler(handler)
    assert {r.levelno for r in records} == {logging.INFO}
    assert records[-1].getMessage().startswith("learn polyps: done, 4/4 it (100 %), loss 0.1234 in ")


def test_learn_in_a_log_prints_start_progress_and_done_lines(red, tmp_path, capsys):
    assert main(["learn", str(tmp_path / "s"), "--domain", "red", "--data", str(red), "--epochs", "2"]) == 0
    lines = progress_lines(capsys.readouterr().err)
    learn = [line for line in lines if line.startswith("learn red: ")]
    assert learn[0] == "learn red: started (8 it)" and learn[-1].startswith("learn red: done, 8/8 it (100 %), loss ")
    assert len(learn) >= 4  # and steps in between
    assert not any(line.startswith("embed") for line in lines)


# ---------------------------------------------------------------------------------------------- unlabeled images
def test_learn_skips_images_without_a_mask_only_when_asked(red, tmp_path, capsys):
    data = Path(shutil.copytree(red / "train", tmp_path / "train"))
    lonely = data / "images" / "zz-no-mask.png"
    Image.new("RGB", (40, 30), (10, 200, 10)).save(lonely)
    cli_error(capsys, "learn", tmp_path / "s", "--domain", "red", "--data", data, names=(lonely, "--skip-unlabeled"))
    assert not (tmp_path / "s").exists()
    argv = ["learn", tmp_path / "s", "--domain", "red", "--data", data, "--skip-unlabeled", "--epochs", "1", "--json"]
    assert main([str(a) for a in argv]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["skipped_unlabeled"] == [str(lonely)]
    assert f"left out 1 of 9 images that have no mask (first: {lonely.name})" in err


# ---------------------------------------------------------------------------------------------- --base MODEL_ID
def test_a_hub_model_id_offline_is_one_line_naming_it(red, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-m", "samcl.cli", "learn", str(tmp_path / "s"), "--base",
                           "facebook/sam-vit-base", "--domain", "red", "--data", str(red)],
                          capture_output=True, text=True, timeout=300, env=env)
    one_error_line(done.returncode, done.stderr, names=("facebook/sam-vit-base", "HF_HUB_OFFLINE", "cache"))
    assert not (tmp_path / "s").exists()


def test_a_hub_model_id_in_the_local_cache_is_a_base_the_store_remembers(red, tmp_path, capsys, monkeypatch):
    """The Hub's cache layout (models--OWNER--NAME/snapshots/REVISION, refs/main) holding the tiny SAM: learn takes
    the id, the store records it, and segment reopens the base by it, offline."""
    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--samcl-test--tiny-sam" / "snapshots" / ("0" * 40)
    shutil.copytree(TINY_SAM_DIR, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert is_hub_id("samcl-test/tiny-sam") and not is_hub_id(str(snapshot)) and not is_hub_id("sam_vit_b.pth")
    store = tmp_path / "s"
    argv = ["learn", store, "--base", "samcl-test/tiny-sam", "--domain", "red", "--data", red, "--epochs", "1",
            "--json"]
    assert main([str(a) for a in argv]) == 0
    assert json.loads((store / "manifest.json").read_text())["base_hint"] == "samcl-test/tiny-sam"
    image = red / "test" / "images" / "img000.png"
    assert main([str(a) for a in ["segment", store, image, "--point", "40,20", "--out", tmp_path / "m.png"]]) == 0


# ---------------------------------------------------------------------------------------------- --overlay
def test_segment_overlay_draws_the_mask_and_the_points_over_the_image(store, tmp_path, capsys):
    sample = sample_images(1)[0]
    image_path = tmp_path / "photo.png"
    Image.fromarray(sample.image).save(image_path)
    (x, y), negative = sample.points[0].astype(int).tolist(), (1, 1)
    argv = ["segment", store, image_path, "--point", f"{x},{y}", "--negative", "1,1", "--out", tmp_path / "mask.png",
            "--overlay", tmp_path / "overlay.png"]
    assert main([str(a) for a in argv]) == 0
    mask = np.asarray(Image.open(tmp_path / "mask.png")) > 127
    drawn = np.asarray(Image.open(tmp_path / "overlay.png").convert("RGB")).astype(int)
    image = sample.image.astype(int)
    assert drawn.shape == image.shape and mask.any()
    assert tuple(drawn[y, x]) == POSITIVE and tuple(drawn[negative[1], negative[0]]) == NEGATIVE
    rows, cols = np.indices(mask.shape)
    away = ((rows - y) ** 2 + (cols - x) ** 2 > 100) & ((rows - 1) ** 2 + (cols - 1) ** 2 > 100)
    assert np.array_equal(drawn[~mask & away], image[~mask & away])  # outside the mask: the image itself
    tinted = np.rint((1 - ALPHA) * image + ALPHA * np.array(MASK_COLOUR))
    assert (np.abs(drawn - tinted)[mask & away].max(axis=-1) <= 1).mean() > 0.5  # inside: tinted (rim excepted)
    same = cli_error(capsys, *argv[:-1], tmp_path / "mask.png", names=("--overlay", "--out"))
    assert "also where --out writes" in same


# ---------------------------------------------------------------------------------------------- shipped `auto`
def test_cli_segment_with_the_shipped_auto_settings(store, tmp_path, capsys, shipped_auto_settings):
    sample = sample_images(1)[0]
    Image.fromarray(sample.image).save(tmp_path / "photo.png")
    (x, y) = sample.points[0].astype(int).tolist()
    argv = ["segment", store, tmp_path / "photo.png", "--point", f"{x},{y}", "--out", tmp_path / "m.png", "--json"]
    assert main([str(a) for a in argv]) == 0
    answer = json.loads(capsys.readouterr().out)["results"][0]
    expected = SAMCL.open(store, precision="float32").segment([sample.image], [Prompt.of([[x, y]])])[0]
    assert answer["domain"] == expected.domain
    assert iou(np.asarray(Image.open(tmp_path / "m.png")) > 127, expected.masks[0]) > 0.9


def test_cli_eval_with_the_shipped_auto_settings(store, tmp_path, capsys, shipped_auto_settings):
    from samcl.data.synthetic import write_domain as write_synthetic

    write_synthetic(tmp_path, "polyps", n_train=1, n_test=4, seed=3)
    assert main(["eval", str(store), "--data", f"polyps={tmp_path / 'polyps'}"]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"precision {shipped_auto_settings['precision']}")


def test_server_with_the_shipped_auto_settings(store, shipped_auto_settings):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from test_serve_api import mask_of

    from samcl.serve import ServeConfig, create_app

    sample = sample_images(1)[0]
    expected = SAMCL.open(store, precision="float32").segment([sample.image], [Prompt.of(sample.points)])[0]
    with TestClient(create_app(ServeConfig(store=store, precision="auto", runtime="auto"))) as c:
        upload = c.post("/v1/images", content=png(sample.image)).json()
        answer = c.post("/v1/segment", json={"image_id": upload["image_id"], "points": sample.points.tolist()}).json()
    assert answer["domain"] == expected.domain
    assert iou(mask_of(answer), expected.masks[0]) > 0.9
