"""No file hangs, exhausts or crashes samcl: FIFOs and devices where a file is expected are refused before any read
blocks, torch files built to amplify memory or the stack are refused before they are inflated, copied or run, and
each case ends as one line with exit code 2. Cases that would hang or crash run as children with a timeout, so a
regression fails the test instead of stopping the suite (tests/crafted_files.py builds the files)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from crafted_files import (TINY_BLOCKS, TINY_DIM, TINY_NECK, deep_list_pickle, deep_tuple_key_pickle, eps_as_list, fifo,
                           module_file, module_path, nan_module, nested_json, run_cli, shared_list_pth, stride0_pth,
                           torch_zip, zip_bomb_pth)
from helpers import cli_error, one_error_line, write_domain
from reference_files import write_reference_dir

import samcl.io
from samcl import SamclError
from samcl.cli import main

HANG = 120  # seconds after which a child counts as hung (it ends in about 3 s: starting Python and torch)
FAST = ["--epochs", "1", "--json"]
#: A child that imported torch and refused a file stays far below this; copying out the crafted tensors needs more.
MEMORY_BOUND = 1 << 30


def one_line(result: dict, *names) -> str:
    """A child process's `one_error_line` (run_cli's exit code and stderr lines)."""
    return one_error_line(result["code"], result["lines"], names)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A store on the builtin tiny SAM with one learned domain, its data, and a folder of the authors' files."""
    root = tmp_path_factory.mktemp("hostile")
    write_domain(root / "red", (200, 30, 30), seed=0, n_train=4, n_test=1)
    assert main([str(a) for a in ["learn", root / "store", "--domain", "red", "--data", root / "red", *FAST]]) == 0
    write_reference_dir(root / "SAM1", TINY_DIM, TINY_BLOCKS, TINY_NECK)
    return root


def reference_copy(ws: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ws / "SAM1", tmp_path / "SAM1"))


def import_args(folder: Path, tmp_path: Path) -> list:
    return ["import-reference", folder, tmp_path / "imported", "--base", "builtin:tiny-sam"]


# ---------------------------------------------------------------------------------------------------- the reader
def test_fifos_and_devices_are_refused_before_any_read(tmp_path):
    read_limited = samcl.io.read_limited
    pipe = fifo(tmp_path / "pipe.json")
    for path, kind in ((pipe, "fifo"), (Path("/dev/zero"), "character device")):
        link = tmp_path / f"link-to-{path.name}"
        link.symlink_to(path)
        for target in (path, link):
            with pytest.raises(SamclError, match=f"{target}: is a {kind}, not a regular file"):
                read_limited(target, 1 << 20)
    with pytest.raises(SamclError, match="is a folder"):
        read_limited(tmp_path, 10)


def test_reads_are_bounded_and_json_depth_is_limited(tmp_path):
    read_limited, read_json_file, json_depth = samcl.io.read_limited, samcl.io.read_json_file, samcl.io.json_depth
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"a": "x" * 2000}))
    with pytest.raises(SamclError, match="2,009 bytes, more than .*at most 1,000"):
        read_limited(big, 1000)
    assert json_depth(b'{"a": [1, "[[[[", {"b": []}]}') == 4
    deep = tmp_path / "deep.json"
    deep.write_text(nested_json(100_000))
    with pytest.raises(SamclError, match="nested 100,000 levels deep"):
        read_json_file(deep, 1 << 20)


# ---------------------------------------------------------------------------------------------------- store files
@pytest.mark.parametrize("command", ["info", "segment", "learn"])
def test_fifo_module_file_is_refused_by_info_segment_and_learn(ws, tmp_path, command):
    store = Path(shutil.copytree(ws / "store", tmp_path / "store"))
    victim = fifo(module_path(store))
    image = ws / "red" / "test" / "images" / "img000.png"
    args = {"info": ["info", store],
            "segment": ["segment", store, image, "--point", "5,5", "--out", tmp_path / "m.png"],
            "learn": ["learn", store, "--domain", "blue", "--data", ws / "red", *FAST]}[command]
    one_line(run_cli(args, HANG), victim, "is a fifo")


# ---------------------------------------------------------------------------------------------------- data and base
def test_fifo_points_json_and_image_are_named(ws, tmp_path):
    data = Path(shutil.copytree(ws / "red" / "train", tmp_path / "data"))
    points = fifo(data / "masks" / "points.json")
    one_line(run_cli(["learn", tmp_path / "s1", "--domain", "x", "--data", data, *FAST], HANG), points, "fifo")
    points.unlink()
    image = data / "images" / "img001.png"
    image.unlink()
    fifo(image)
    one_line(run_cli(["learn", tmp_path / "s2", "--domain", "x", "--data", data, *FAST], HANG), image, "fifo")
    assert not (tmp_path / "s1").exists() and not (tmp_path / "s2").exists()


def test_fifo_base_checkpoint_and_weights_are_named(ws, tmp_path):
    checkpoint = fifo(tmp_path / "sam_vit_b.pth")
    learn = ["learn", tmp_path / "s", "--domain", "x", "--data", ws / "red", *FAST]
    one_line(run_cli([*learn, "--base", checkpoint], HANG), checkpoint, "fifo")
    from samcl.backbone import TINY_SAM_DIR

    base = Path(shutil.copytree(TINY_SAM_DIR, tmp_path / "base"))
    weights = fifo(base / "model.safetensors")
    one_line(run_cli([*learn, "--base", base], HANG), weights, "fifo")


# ---------------------------------------------------------------------------------------------------- import
@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_fifo_or_device_module_file_is_refused(ws, tmp_path, kind):
    folder = reference_copy(ws, tmp_path)
    victim = folder / "Kvasir.pth"
    victim.unlink()
    fifo(victim) if kind == "fifo" else victim.symlink_to("/dev/zero")
    result = run_cli(import_args(folder, tmp_path), HANG)
    one_line(result, victim, "not a regular file")
    assert result["peak_rss"] < MEMORY_BOUND


def test_fifo_selector_is_named_as_a_fifo(ws, tmp_path):
    folder = reference_copy(ws, tmp_path)
    (folder / "Module_Selector.pth").unlink()
    selector = fifo(folder / "Module_Selector.pth")
    line = one_line(run_cli(import_args(folder, tmp_path), HANG), selector, "is a fifo")
    assert "no such selector file" not in line


@pytest.mark.parametrize("craft, problem", [
    (stride0_pth, "needs more than its storage of 1 values"),
    (zip_bomb_pth, "nothing was inflated"),
    (lambda p: torch_zip(p, pickled=deep_tuple_key_pickle()), "containers"),
], ids=["stride-0-20000x20000", "zip-bomb-1GiB", "deep-tuple-key"])
def test_amplifying_torch_files_are_refused_in_bounded_memory(ws, tmp_path, craft, problem):
    """630 bytes that copy out to 1.6 GB, 1 MB that inflates to 1 GiB, 300 KB whose key's hash crashes CPython."""
    folder = reference_copy(ws, tmp_path)
    craft(folder / "Kvasir.pth")
    result = run_cli(import_args(folder, tmp_path), HANG)
    one_line(result, folder / "Kvasir.pth", problem)
    assert result["peak_rss"] < MEMORY_BOUND, result
    assert not (tmp_path / "imported").exists()


@pytest.mark.parametrize("craft, problem", [
    (lambda p: torch_zip(p, pickled=deep_list_pickle(100_000)), "containers"),
    (lambda p: torch_zip(p, pickled=deep_list_pickle(40)), "nests deeper than 32 levels"),
    (lambda p: module_file(p, eps_as_list), "norm1_000 has eps [1e-05]"),
    (lambda p: module_file(p, nan_module), "NaN or infinite"),
], ids=["deep-list", "nested-40", "eps-list", "nan-weights"])
def test_malformed_module_files_are_one_line(ws, tmp_path, capsys, craft, problem):
    folder = reference_copy(ws, tmp_path)
    craft(folder / "Kvasir.pth")
    cli_error(capsys, *import_args(folder, tmp_path), names=[folder / "Kvasir.pth", problem])
    assert not (tmp_path / "imported").exists()


def test_shared_nested_list_is_quoted_briefly(ws, tmp_path, capsys):
    """Its halves are one list, 24 levels deep: printed whole it would be 2^24 values long."""
    folder = reference_copy(ws, tmp_path)
    shared_list_pth(folder / "Kvasir.pth")
    line = cli_error(capsys, *import_args(folder, tmp_path), names=[folder / "Kvasir.pth", "lora_layer"])
    assert len(line) < 400


def test_a_good_folder_still_imports(ws, tmp_path):
    assert main([str(a) for a in import_args(ws / "SAM1", tmp_path)]) == 0
    assert os.path.isfile(tmp_path / "imported" / "manifest.json")
