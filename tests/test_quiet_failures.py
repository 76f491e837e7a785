"""Small failures that were late, silent or tracebacks: identical training images, hidden files in data folders,
output names too long for their temporaries, exports into symlinks, and stores that `info` passed but a command
refused once the base loaded. Each ends as success or one line with exit code 2, before anything is written."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
from helpers import cli_error, toy_samples, write_domain, write_split
from PIL import Image

from samcl.cli import main
from samcl.data import FolderDataset

FAST = ["--epochs", "1", "--json"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A store on the builtin tiny SAM with one learned domain."""
    root = tmp_path_factory.mktemp("quiet")
    write_domain(root / "red", (200, 30, 30), seed=0, n_train=4, n_test=1)
    assert main([str(a) for a in ["learn", root / "store", "--domain", "red", "--data", root / "red", *FAST]]) == 0
    return root


def test_identical_training_images_learn_without_a_traceback(tmp_path, capsys):
    sample = toy_samples(1, (30, 200, 30), 3)[0]
    same = [type(sample)(f"copy{i}", sample.image, sample.mask, sample.points, sample.labels) for i in range(6)]
    write_split(tmp_path / "same", same)
    assert main(["learn", str(tmp_path / "store"), "--domain", "same", "--data", str(tmp_path / "same"),
                 *FAST]) == 0
    assert main(["learn", str(tmp_path / "store"), "--domain", "red", "--data", str(tmp_path / "same"),
                 *FAST]) == 0  # a second domain of the same images: both covariances degenerate
    capsys.readouterr()


def test_hidden_images_in_a_data_folder_are_counted_in_a_warning(tmp_path):
    split = write_split(tmp_path / "d", toy_samples(2, (200, 30, 30), 0))
    for name in ("._img000.png", ".img001.png"):
        shutil.copy(split / "images" / "img000.png", split / "images" / name)
    (split / "images" / ".DS_Store").write_bytes(b"\0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = FolderDataset(split)
    assert len(data) == 2
    said = [str(w.message) for w in caught]
    assert said == [f"{split / 'images'}: 2 hidden files (name starting with '.', e.g. '._img000.png') skipped"]


def test_a_long_image_name_is_written_whole_or_refused_before_any_output(ws, tmp_path, capsys):
    image = Image.fromarray(toy_samples(1, (200, 30, 30), 7)[0].image)
    short, long_ = tmp_path / "a.png", tmp_path / f"{'x' * 240}.png"  # its temporary's name would be 258 bytes
    for path in (short, long_):
        image.save(path)
    out = tmp_path / "masks"
    assert main(["segment", str(ws / "store"), str(short), str(long_), "--point", "20,20", "--out", f"{out}/",
                 "--json"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(["a.png", long_.name])  # no temporary left
    capsys.readouterr()
    too_long = tmp_path / f"{'y' * 253}.png"
    line = cli_error(capsys, "segment", ws / "store", short, "--point", "20,20", "--out", too_long,
                     names=[too_long])
    assert "too long" in line or "longer than the folder takes" in line


@pytest.mark.parametrize("link", ["to_empty_folder", "dangling"])
def test_export_through_a_symlink_writes_the_links_target(ws, tmp_path, capsys, link):
    pytest.importorskip("onnx")
    target = tmp_path / "target"
    if link == "to_empty_folder":
        target.mkdir()
    (tmp_path / "link").symlink_to(target)
    assert main(["export", str(ws / "store"), str(tmp_path / "link"), "--json"]) == 0
    capsys.readouterr()
    assert (tmp_path / "link").is_symlink() and (target / "samcl_export.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "target"]  # no temporary left


def test_export_into_a_symlink_to_a_full_folder_is_refused_before_any_work(ws, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "full")
    cli_error(capsys, "export", ws / "store", tmp_path / "link", names=[tmp_path / "link", "not an empty folder"])
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    cli_error(capsys, "export", ws / "store", loop, names=[loop, "a symlink that loops"])


def edited_store(ws: Path, tmp_path: Path, edit) -> Path:
    store = Path(shutil.copytree(ws / "store", tmp_path / "store"))
    manifest = json.loads((store / "manifest.json").read_text())
    edit(manifest)
    (store / "manifest.json").write_text(json.dumps(manifest))
    return store


def test_format_version_true_is_refused(ws, tmp_path, capsys):
    store = edited_store(ws, tmp_path, lambda m: m.update(format_version=True))
    cli_error(capsys, "info", store, names=["format_version True is not a version number"])


def adapt_block_99(manifest: dict) -> None:
    manifest["augmodule"]["adapted_blocks"][-1] = 99
    for domain in manifest["domains"]:
        domain["config"]["adapted_blocks"][-1] = 99


@pytest.mark.parametrize("edit, problem", [
    (adapt_block_99, "adapts blocks [99], which the base cannot adapt (1..5, from its config)"),
    (lambda m: m.update(base_hint="/dev/zero"), "base_hint '/dev/zero' is a character device, not a model folder"),
])
def test_info_refuses_what_segment_would_once_the_base_loads(ws, tmp_path, capsys, edit, problem):
    store = edited_store(ws, tmp_path, edit)
    cli_error(capsys, "info", store, names=[store / "manifest.json", problem])
    image = tmp_path / "a.png"
    Image.fromarray(toy_samples(1, (200, 30, 30), 7)[0].image).save(image)
    assert main(["segment", str(store), str(image), "--point", "20,20", "--out", str(tmp_path / "m.png")]) == 2
    capsys.readouterr()


def test_info_says_what_it_cannot_check_without_the_base(ws, capsys):
    assert main(["info", str(ws / "store"), "--json"]) == 0
    unchecked = json.loads(capsys.readouterr().out)["unchecked"]
    assert unchecked == ["the base's weights against the recorded sha256 (checked when a command loads the base)"]
    assert main(["info", str(ws / "store")]) == 0
    assert "not checked without loading the base: the base's weights" in capsys.readouterr().out
