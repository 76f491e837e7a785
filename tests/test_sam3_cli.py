"""The command line on an HF-format SAM 3 tracker folder: learn two domains, info, segment, eval (random weights)."""

from __future__ import annotations

import json

import numpy as np
from helpers import cli_learn_red_and_blue, cli_runner, write_domain
from PIL import Image
from test_sam3 import randomize, tiny_sam3_config

from samcl.backbone import Sam3Backbone
from samcl.cli import main


def test_cli_learn_info_segment_eval_on_an_hf_sam3_tracker_folder(tmp_path, capsys):
    backbone = Sam3Backbone.from_config(tiny_sam3_config(), seed=1)
    randomize(backbone.model, 1)
    backbone.model.save_pretrained(tmp_path / "tiny-sam3")
    run = cli_runner(capsys)
    store = cli_learn_red_and_blue(run, tmp_path, tmp_path / "tiny-sam3")
    info = json.loads(run("info", store, "--json"))
    assert info["backbone"]["family"] == "sam3" and [d["name"] for d in info["domains"]] == ["red", "blue"]
    assert info["augmodule"]["neck_channels"] == 32 and info["augmodule"]["adapted_blocks"] == [3]
    assert "sam3 / Sam3TrackerModel" in run("info", store)
    image = tmp_path / "blue" / "test" / "images" / "img000.png"
    answer = run("segment", store, image, "--point", "40,20", "--out", tmp_path / "mask.png", "--json")
    assert json.loads(answer)["results"][0]["domain"] in ("red", "blue")
    width, height = Image.open(image).size
    assert np.asarray(Image.open(tmp_path / "mask.png")).shape == (height, width)
    scores = json.loads(run("eval", store, "--data", f"blue={tmp_path / 'blue'}", "--json"))["domains"]["blue"]
    assert scores["images"] == 2 and 0 <= scores["iou"] <= 1
    code = main(["export", str(store), str(tmp_path / "graphs")])  # (SAM only: one clear line, exit 2)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "SAM 3 tracker's encoder is not exported" in err
    assert "--runtime" not in err  # (export has no such flag)


def test_a_full_sam3_folder_is_refused_in_one_line(tmp_path, capsys):
    """SAM 3 with its detector (model_type "sam3_video", as facebook/sam3) is not a base: the tracker folders are."""
    folder = tmp_path / "sam3"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "sam3_video"}))
    (folder / "model.safetensors").write_bytes(b"")
    write_domain(tmp_path / "red", (200, 30, 30), seed=0, n_train=2, n_test=1)
    code = main(["learn", str(tmp_path / "store"), "--base", str(folder), "--domain", "red", "--data",
                 str(tmp_path / "red")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "sam3_tracker or sam3_tracker_video folder" in err
