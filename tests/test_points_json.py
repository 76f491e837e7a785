"""points.json as users bring it (ours, and the reference code's file with its 1024 square frame), masks
stored as 0/1, EXIF-rotated photos, and how `eval` names the domain learned without a module."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import toy_samples, write_split
from PIL import Image

from samcl import FolderDataset, SamclError
from samcl.cli import main
from samcl.io import read_image, read_mask


@pytest.fixture
def split(tmp_path) -> Path:
    return write_split(tmp_path / "split", toy_samples(4, (200, 30, 30), seed=0), with_points=False)


def put_points(split: Path, content) -> None:
    (split / "masks" / "points.json").write_text(json.dumps(content))


def on_mask_points(mask: np.ndarray, n: int = 3) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.stack([xs[:n], ys[:n]], 1).astype(np.float32)


def test_reference_format_is_read_in_the_1024_square_frame(split):
    plain = FolderDataset(split)
    entries = {}
    for i, stem in enumerate(plain.stems):
        mask = read_mask(plain.masks[stem])
        height, width = mask.shape
        pixels = on_mask_points(mask)
        square = pixels * np.array([1024 / width, 1024 / height])
        entries[plain.images[stem].name] = [square.tolist(), [1, 1, 1]]
    entries["not-in-this-folder.jpg"] = [[[1, 2]], [1]]  # the reference's file covers the whole split
    put_points(split, entries)
    data = FolderDataset(split)
    assert data.points_frame == "square1024" and "1024x1024 square" in data.points_note
    for sample in data:
        assert sample.mask[sample.points[:, 1].astype(int), sample.points[:, 0].astype(int)].all()


def test_points_frame_can_be_forced(split):
    plain = FolderDataset(split)
    put_points(split, {plain.images[s].name: [[[10, 10]], [1]] for s in plain.stems})
    assert FolderDataset(split, points_frame="pixels").points_frame == "pixels"
    assert FolderDataset(split, points_frame="pixels").points_note is None


def test_points_in_the_wrong_frame_warn_loudly(split):
    plain = FolderDataset(split)
    put_points(split, {plain.masks[s].name: [[0, 0], [1, 1], [2, 1], [1, 2]] for s in plain.stems})  # all off-mask
    data = FolderDataset(split)
    with pytest.warns(UserWarning, match=r"in the square1024 frame \(points_frame\)"):
        list(data)


def test_keys_match_full_file_names_and_one_file_twice_is_refused(split):
    plain = FolderDataset(split)
    stem = plain.stems[0]
    put_points(split, {plain.images[stem].name: [[5, 5]], plain.masks[stem].name: [[6, 6]]})
    with pytest.raises(SamclError, match="both"):
        FolderDataset(split)
    put_points(split, {f"{stem}.bmp": [[5, 5]]})  # a.bmp is not a.png: not this image's points
    assert FolderDataset(split).points == {}


@pytest.mark.parametrize("labels", [[1.7], [2], ["1"], [True], [float("nan")]])
def test_labels_must_be_exactly_0_or_1(split, labels, capsys):
    plain = FolderDataset(split)
    put_points(split, {plain.masks[plain.stems[0]].name: {"points": [[5, 5]], "labels": labels}})
    code = main(["eval", str(split), "--data", f"x={split}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "malformed labels" in err[0] and "points.json" in err[0]


def test_zero_one_masks_are_read_as_binary(tmp_path):
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:15] = 1
    Image.fromarray(mask).save(tmp_path / "m.png")
    Image.fromarray(mask.astype(np.uint16)).save(tmp_path / "m16.png")
    assert read_mask(tmp_path / "m.png").sum() == 50
    assert read_mask(tmp_path / "m16.png").sum() == 50


def test_exif_orientation_is_applied_to_images_and_masks(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)  # 40 wide as stored; orientation 6: shown 20 wide, 40 high
    stored[:, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "photo.jpg", exif=exif)
    Image.fromarray(stored[:, :, 0]).save(tmp_path / "mask.png", exif=exif)
    image, mask = read_image(tmp_path / "photo.jpg"), read_mask(tmp_path / "mask.png")
    assert image.shape[:2] == (40, 20) and mask.shape == (40, 20)
    assert mask[:10].all() and not mask[10:].any()  # the left columns as stored are the top rows as shown


def test_eval_names_the_domain_without_module_by_its_name_and_refuses_one_name_twice(tmp_path, capsys):
    from conftest import tiny_sam_config
    from helpers import write_domain

    from samcl.backbone import SamBackbone

    SamBackbone.from_config(tiny_sam_config(), seed=0).model.save_pretrained(tmp_path / "sam")
    write_domain(tmp_path / "coco", (30, 200, 30), seed=3, n_train=3, n_test=3)
    write_domain(tmp_path / "red", (200, 30, 30), seed=0, n_train=3, n_test=3)
    store = tmp_path / "s"
    learn = ["learn", store, "--base", tmp_path / "sam", "--epochs", "1", "--samples-per-domain", "3", "--json"]
    assert main([str(a) for a in [*learn, "--domain", "COCO", "--data", tmp_path / "coco", "--without-module"]]) == 0
    assert main([str(a) for a in [*learn, "--domain", "red", "--data", tmp_path / "red"]]) == 0
    capsys.readouterr()
    assert main(["eval", str(store), "--data", f"COCO={tmp_path / 'coco'}", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["domains"]["COCO"]
    assert "base" not in result["chosen"]
    assert result["selector_accuracy"] == result["chosen"].get("COCO", 0) / result["images"]
    code = main(["eval", str(store), "--data", f"red={tmp_path / 'red'}", "--data", f"red={tmp_path / 'coco'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "given twice" in err[0]
    assert main(["eval", str(store), "--data", f"kvasir={tmp_path / 'red'}", "--json"]) == 0
    captured = capsys.readouterr()
    assert "not a domain of this store" in captured.err
    assert json.loads(captured.out)["domains"]["kvasir"]["selector_accuracy"] is None
