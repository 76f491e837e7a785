"""Every bad input through the `samcl` command: exit code 2, one line on stderr naming the file and the problem,
no traceback (unless --debug), and an existing store's bytes unchanged. Odd but valid images work."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_sam_config
from helpers import cli_error, toy_samples, write_domain, write_split
from PIL import Image
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

import samcl.io.files
import samcl.io.images
from samcl import SAMCL, Prompt, SamclError
from samcl.backbone import SamBackbone
from samcl.cli import main
from samcl.io import read_image, read_mask
from samcl.metrics import mask_scores
from samcl.store.files import sha256_bytes
from samcl.cli.errors import error_line

FAST = ["--epochs", "1", "--json"]


# ---------------------------------------------------------------------------------------------------- helpers
def png_bytes(array: np.ndarray, color_type: int, bit_depth: int = 16) -> bytes:
    """A PNG written by hand (PIL cannot write 16-bit RGB): array H x W (x C) of big-endian samples."""
    height, width = array.shape[:2]
    rows = array.astype(">u2" if bit_depth == 16 else "u1").reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    return png_chunks(width, height, bit_depth, color_type, zlib.compress(raw))


def png_chunks(width: int, height: int, bit_depth: int, color_type: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def split_copy(ws: Path, tmp_path: Path, name: str = "data") -> Path:
    """A fresh copy of a good training split (8 images, PNG images, JPEG masks, points.json)."""
    return Path(shutil.copytree(ws / "red" / "train", tmp_path / name))



@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Two bases (the store's and another one), two domains, and a store holding one learned domain."""
    root = tmp_path_factory.mktemp("bad")
    SamBackbone.from_config(tiny_sam_config(), seed=0).model.save_pretrained(root / "tiny-sam")
    SamBackbone.from_config(tiny_sam_config(), seed=7).model.save_pretrained(root / "other-sam")
    write_domain(root / "red", (200, 30, 30), seed=0)
    write_domain(root / "blue", (30, 30, 200), seed=1, n_train=6, n_test=3)
    code = main([str(a) for a in ["learn", root / "store", "--base", root / "tiny-sam", "--domain", "red",
                                  "--data", root / "red", "--samples-per-domain", "6", "--selector-epochs", "2",
                                  *FAST]])
    assert code == 0
    return root


@pytest.fixture
def store(ws):
    """The shared store; every test using it must leave its bytes exactly as they were."""
    before = snapshot(ws / "store")
    yield ws / "store"
    assert snapshot(ws / "store") == before, "a failed command changed the store"


@pytest.fixture
def store_copy(ws, tmp_path):
    return Path(shutil.copytree(ws / "store", tmp_path / "store"))


def learn_error(capsys, ws, store, data, names=()) -> str:
    return cli_error(capsys, "learn", store, "--domain", "x", "--data", data, *FAST, names=names)


# ---------------------------------------------------------------------------------------------------- images
def test_corrupt_image_is_named(ws, store, tmp_path, capsys):
    data = split_copy(ws, tmp_path)
    (data / "images" / "img003.png").write_bytes(b"this is not a png" * 10)
    line = learn_error(capsys, ws, store, data, names=[data / "images" / "img003.png"])
    assert "not a readable image" in line


def test_truncated_image_is_named(ws, store, tmp_path, capsys):
    data = split_copy(ws, tmp_path)
    victim = data / "images" / "img002.png"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    line = learn_error(capsys, ws, store, data, names=[victim])
    assert "not a readable image" in line and "truncated" in line


def test_empty_image_file_is_named(ws, store, tmp_path, capsys):
    data = split_copy(ws, tmp_path)
    (data / "images" / "img001.png").write_bytes(b"")
    learn_error(capsys, ws, store, data, names=[data / "images" / "img001.png", "not a readable image"])


def test_unreadable_image_is_named(ws, store, tmp_path, capsys, monkeypatch):
    """Permission denied (simulated: the tests may run as root, who can read anything)."""
    data = split_copy(ws, tmp_path)
    victim = data / "images" / "img004.png"
    real_open = samcl.io.images.Image.open

    def guarded(path, *args, **kwargs):
        if Path(getattr(path, "name", path)) == victim:  # (samcl hands PIL the file it opened)
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(samcl.io.images.Image, "open", guarded)
    learn_error(capsys, ws, store, data, names=[victim, "permission denied"])


def test_corrupt_image_in_segment_and_eval_is_named(ws, store, tmp_path, capsys):
    bad = tmp_path / "photo.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    cli_error(capsys, "segment", store, bad, "--point", "5,5", "--out", tmp_path / "m.png", names=[bad])
    data = Path(shutil.copytree(ws / "red" / "test", tmp_path / "test"))
    (data / "images" / "img001.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    cli_error(capsys, "eval", store, "--data", f"red={data}", "--json", names=[data / "images" / "img001.png"])


@pytest.mark.parametrize("width, height", [(12_500, 12_500), (20_000, 20_000)], ids=["samcl-limit", "pil-limit"])
def test_decompression_bomb_is_refused_before_decoding(ws, store, tmp_path, capsys, width, height):
    """Only the header is read: 156 megapixels trips samcl's limit, 400 trips PIL's first; one message."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_chunks(width, height, 1, 0, zlib.compress(b"\x00" * 64)))
    megapixels = f"{width * height / 1e6:.0f} megapixels"
    cli_error(capsys, "segment", store, bomb, "--point", "5,5", "--out", tmp_path / "m.png",
                      names=[bomb, megapixels, "limit of 150 megapixels", "decompression-bomb"])
    assert not (tmp_path / "m.png").exists()
    data = split_copy(ws, tmp_path)
    shutil.copy(bomb, data / "images" / "img005.png")
    learn_error(capsys, ws, store, data, names=[data / "images" / "img005.png", megapixels])


def odd_images(height: int = 40, width: int = 60) -> dict[str, tuple[bytes | Image.Image, np.ndarray]]:
    """Image files in odd formats and the RGB array each must read as."""
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (height, width), dtype=np.uint8)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    wide = rng.integers(0, 65536, (height, width, 3)).astype(np.uint16)
    palette = Image.fromarray(rgb).convert("P")
    return {
        "gray.png": (Image.fromarray(gray), np.repeat(gray[..., None], 3, 2)),
        "gray-alpha.png": (Image.fromarray(gray).convert("LA"), np.repeat(gray[..., None], 3, 2)),
        "rgba.png": (Image.fromarray(np.dstack([rgb, gray])), rgb),
        "palette.png": (palette, np.asarray(palette.convert("RGB"))),
        "gray16.png": (Image.fromarray((gray.astype(np.uint16) * 257)), np.repeat(gray[..., None], 3, 2)),
        "rgb16.png": (png_bytes(wide, color_type=2), (wide >> 8).astype(np.uint8)),
        "float.tif": (Image.fromarray(gray.astype(np.float32) / 255), np.repeat(gray[..., None], 3, 2)),
        "cmyk.jpg": (Image.fromarray(rgb).convert("CMYK"), None),
    }


def write_image(path: Path, content) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        content.save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))


@pytest.mark.parametrize("name", list(odd_images()))
def test_odd_image_formats_read_as_rgb(tmp_path, name):
    content, expected = odd_images()[name]
    write_image(tmp_path / name, content)
    image = read_image(tmp_path / name)
    assert image.shape == (40, 60, 3) and image.dtype == np.uint8
    if expected is not None:
        assert np.abs(image.astype(int) - expected).max() <= 1
    else:  # CMYK JPEG: lossy, but the picture survives
        assert image.std() > 30


@pytest.mark.parametrize("mode", ["L", "P", "I;16", "RGBA", "1", "F"])
def test_odd_mask_formats_threshold_at_half_range(tmp_path, mode):
    mask = np.zeros((20, 30), bool)
    mask[5:12, 8:20] = True
    scale = {"I;16": 65535, "F": 1.0, "1": 1}.get(mode, 255)
    array = mask.astype(np.float32) * scale
    image = {"L": lambda: Image.fromarray(array.astype(np.uint8)),
             "P": lambda: Image.fromarray(array.astype(np.uint8)).convert("P"),
             "I;16": lambda: Image.fromarray(array.astype(np.uint16)),
             "RGBA": lambda: Image.fromarray(array.astype(np.uint8)).convert("RGBA"),
             "1": lambda: Image.fromarray(mask),
             "F": lambda: Image.fromarray(array)}[mode]()
    path = tmp_path / ("mask.tif" if mode == "F" else "mask.png")
    image.save(path)
    assert np.array_equal(read_mask(path), mask)


def test_odd_and_large_images_learn_and_segment(ws, store_copy, tmp_path, capsys):
    """Grayscale, RGBA, 16-bit, palette, float and a 12-megapixel image train together; masks in odd formats."""
    data = tmp_path / "odd"
    samples = toy_samples(8, (120, 200, 40), seed=3)
    write_split(data, samples)
    formats = list(odd_images())
    for sample, name in zip(samples, formats):
        (data / "images" / f"{sample.name}.png").unlink()
        converted = {"gray": sample.image.mean(2).astype(np.uint8)}
        target = data / "images" / f"{sample.name}{Path(name).suffix}"
        if name.startswith("rgb16"):
            target.write_bytes(png_bytes(sample.image.astype(np.uint16) * 257, color_type=2))
        elif name.startswith("gray16"):
            Image.fromarray(converted["gray"].astype(np.uint16) * 257).save(target)
        elif name.startswith("float"):
            Image.fromarray(converted["gray"].astype(np.float32) / 255).save(target)
        elif name.startswith("palette"):
            Image.fromarray(sample.image).convert("P").save(target)
        elif name.startswith("rgba"):
            Image.fromarray(np.dstack([sample.image, converted["gray"]])).save(target)
        elif name.startswith("cmyk"):
            Image.fromarray(sample.image).convert("CMYK").save(target, quality=95)
        else:
            Image.fromarray(sample.image).convert("L" if name.startswith("gray.") else "LA").save(target)
    Image.fromarray(samples[1].mask).save(data / "masks" / f"{samples[1].name}.jpg", "PNG")  # 1-bit, .jpg name
    Image.fromarray(samples[2].mask.astype(np.uint16) * 65535).save(data / "masks" / "tmp.png")
    (data / "masks" / f"{samples[2].name}.jpg").unlink()
    (data / "masks" / "tmp.png").rename(data / "masks" / f"{samples[2].name}.png")  # 16-bit mask
    big = np.zeros((3000, 4000, 3), np.uint8)
    big[1000:2000, 1500:2600] = 255
    Image.fromarray(big).save(data / "images" / "huge.png")
    Image.fromarray(big[..., 0]).save(data / "masks" / "huge.png")

    code, out, err = run(capsys, "learn", store_copy, "--domain", "odd", "--data", data, *FAST)
    assert code == 0, err
    assert json.loads(out)["domains"] == ["red", "odd"]
    images = {path.stem: path for path in (data / "images").iterdir()}
    for stem in ("huge", "img001", "img004", "img005", "img006"):  # huge, gray+alpha, 16-bit gray/RGB, float
        image = images[stem]
        out_mask = tmp_path / f"{image.stem}-mask.png"
        code, out, err = run(capsys, "segment", store_copy, image, "--point", "10,10", "--out", out_mask, "--json")
        assert code == 0, err
        assert Image.open(out_mask).size == Image.open(image).size


def test_very_thin_image_segments(ws, store, tmp_path, capsys):
    thin = tmp_path / "thin.png"
    Image.fromarray(np.full((2, 900, 3), 90, np.uint8)).save(thin)
    code, _, err = run(capsys, "segment", store, thin, "--point", "450,1", "--out", tmp_path / "m.png")
    assert code == 0, err
    assert Image.open(tmp_path / "m.png").size == (900, 2)


# ---------------------------------------------------------------------------------------------------- masks and pairs
def test_mask_of_another_size_is_named(ws, store, tmp_path, capsys):
    data = split_copy(ws, tmp_path)
    mask = data / "masks" / "img005.jpg"
    Image.open(mask).resize((30, 20)).save(mask)
    line = learn_error(capsys, ws, store, data, names=[mask, "30x20"])
    assert "but its image is" in line


def test_image_without_mask_is_named(ws, store, tmp_path, capsys):
    data = split_copy(ws, tmp_path)
    shutil.copy(data / "images" / "img000.png", data / "images" / "lonely.png")
    learn_error(capsys, ws, store, data, names=[data / "images" / "lonely.png", "no mask"])


def test_mask_without_image_is_named(ws, store, tmp_path, capsys):
    data = split_copy(ws, tmp_path)
    shutil.copy(data / "masks" / "img000.jpg", data / "masks" / "orphan.jpg")
    learn_error(capsys, ws, store, data, names=[data / "masks" / "orphan.jpg", "no image"])


def test_two_images_with_one_name_are_refused(ws, store, tmp_path, capsys):
    data = split_copy(ws, tmp_path)
    Image.open(data / "images" / "img000.png").save(data / "images" / "img000.jpg")
    learn_error(capsys, ws, store, data, names=["img000", "one file per name"])


def test_hidden_files_are_not_data(ws, store_copy, tmp_path, capsys):
    data = split_copy(ws, tmp_path)
    (data / "images" / "._img000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (data / "images" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    code, _, err = run(capsys, "learn", store_copy, "--domain", "x", "--data", data, *FAST)
    assert code == 0, err


def test_empty_masks_are_skipped_in_training_with_a_warning(ws, store_copy, tmp_path, capsys):
    data = split_copy(ws, tmp_path)
    for stem in ("img001", "img006"):
        Image.fromarray(np.zeros((Image.open(data / "masks" / f"{stem}.jpg").size[::-1]), np.uint8)).save(
            data / "masks" / f"{stem}.jpg")
    points = json.loads((data / "masks" / "points.json").read_text())
    for stem in ("img001", "img006"):
        del points[f"{stem}.jpg"]
    (data / "masks" / "points.json").write_text(json.dumps(points))
    code, out, err = run(capsys, "learn", store_copy, "--domain", "x", "--data", data, *FAST)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("samcl: warning: ")]
    assert len(warnings) == 2 and all("empty mask" in line for line in warnings)
    assert str(data / "masks" / "img001.jpg") in warnings[0] and str(data / "masks" / "img006.jpg") in warnings[1]
    assert json.loads(out)["stats"]["samples"] == 6


def test_only_empty_masks_is_an_error_naming_the_folder(ws, store, tmp_path, capsys):
    data = split_copy(ws, tmp_path)
    for mask in (data / "masks").glob("*.jpg"):
        Image.fromarray(np.zeros(Image.open(mask).size[::-1], np.uint8)).save(mask)
    (data / "masks" / "points.json").unlink()
    line = learn_error(capsys, ws, store, data, names=[data, "non-empty mask"])
    assert "warning" not in line


def test_empty_mask_is_scored_in_eval(ws, store, tmp_path, capsys):
    """No foreground: IoU 1 and F1 1 if the prediction is empty too, else 0 (metrics.py)."""
    data = tmp_path / "test"
    sample = toy_samples(1, (200, 30, 30), seed=11)[0]
    sample.mask[:] = False
    write_split(data, [sample], with_points=False)
    code, out, err = run(capsys, "eval", store, "--data", f"red={data}", "--json")
    assert code == 0, err
    scores = json.loads(out)["domains"]["red"]
    predicted = SAMCL.open(store).segment([read_image(data / "images" / "img000.png")], [Prompt.of()])[0].masks[0]
    expected = 1.0 if not predicted.any() else 0.0
    assert scores["images"] == 1 and scores["iou"] == expected and scores["f1"] == expected
    assert scores["mae"] == pytest.approx(predicted.mean())
    assert mask_scores(np.zeros((4, 4), bool), np.zeros((4, 4), bool))["iou"] == 1.0
    assert mask_scores(np.eye(4, dtype=bool), np.zeros((4, 4), bool))["iou"] == 0.0


# ---------------------------------------------------------------------------------------------------- points
def test_points_outside_the_image_are_named(ws, store, tmp_path, capsys):
    data = split_copy(ws, tmp_path)
    points = json.loads((data / "masks" / "points.json").read_text())
    points["img002.jpg"] = [[10, 10], [5000, 12]]
    (data / "masks" / "points.json").write_text(json.dumps(points))
    line = learn_error(capsys, ws, store, data, names=[data / "masks" / "points.json", "img002.jpg", "outside"])
    assert "5000" in line


def test_segment_point_outside_the_image_is_named(ws, store, tmp_path, capsys):
    image = ws / "red" / "test" / "images" / "img000.png"
    cli_error(capsys, "segment", store, image, "--point", "9999,3", "--out", tmp_path / "m.png",
               names=[image, "9999,3", "outside"])
    cli_error(capsys, "segment", store, image, "--negative=-4,3", "--out", tmp_path / "m.png",
               names=[image, "-4,3", "outside"])
    cli_error(capsys, "segment", store, image, "--point", "-1,10", "--out", tmp_path / "m.png",
               names=[image, "-1,10", "outside"])  # a leading minus is a value, not a flag
    assert not (tmp_path / "m.png").exists()


def test_segment_box_outside_or_reversed_is_named(ws, store, tmp_path, capsys):
    """The CLI checks a box against the image as the server does (the one `Prompt.check`; a reversed box is the
    flag type's to refuse)."""
    image = ws / "red" / "test" / "images" / "img000.png"
    cli_error(capsys, "segment", store, image, "--box", "0,0,5000,5", "--out", tmp_path / "m.png",
               names=[image, "box 0,0,5000,5 reaches outside"])
    assert not (tmp_path / "m.png").exists()


def test_one_prompt_check_names_each_problem_with_the_servers_code():
    from samcl import Prompt, PromptError

    cases = [(Prompt.of(), "no_prompt"), (Prompt.of([[5, 50]]), "point_outside"),
             (Prompt.of([[-1, 5]]), "point_outside"), (Prompt.of(box=[10, 10, 5, 5]), "bad_box"),
             (Prompt.of(box=[0, 0, 41, 5]), "box_outside")]
    for prompt, code in cases:
        with pytest.raises(PromptError) as refused:
            prompt.check(40, 30)
        assert refused.value.code == code
    Prompt.of([[0, 0], [39.5, 29.5]], [1, 0], [0, 0, 40, 30]).check(40, 30)  # the image's own edges are inside
    Prompt.of([[5000, 5]]).check()  # without a size: only that there is a prompt
    with pytest.raises(PromptError, match="no prompt") as refused:
        Prompt.of().check()
    assert refused.value.field == "Prompt" and "(--point, --negative or --box)" in error_line(refused.value)


def test_segment_without_a_prompt_is_refused_as_the_server_does(ws, store, tmp_path, capsys):
    image = ws / "red" / "test" / "images" / "img000.png"
    cli_error(capsys, "segment", store, image, "--out", tmp_path / "m.png", names=["no prompt", "--point"])
    assert not (tmp_path / "m.png").exists()


@pytest.mark.parametrize("content, problem", [
    ("{not json", "malformed points.json"),
    (b"\xff\xfe\x00garbage", "malformed points.json"),
    ("[[1, 2]]", "expected an object"),
    ('{"img000.jpg": [[1, 2, 3]]}', "malformed points for 'img000.jpg'"),
    ('{"img000.jpg": []}', "malformed points for 'img000.jpg'"),
    ('{"img000.jpg": [["a", "b"]]}', "malformed points for 'img000.jpg'"),
    ('{"img000.jpg": [[NaN, 3]]}', "malformed points for 'img000.jpg'"),
    ('{"img000.jpg": 7}', "malformed points for 'img000.jpg'"),
    ('{"img000.jpg": {"points": [[1, 2]], "labels": [1, 0]}}', "malformed labels for 'img000.jpg'"),
    ('{"img000.jpg": {"points": [[1, 2]], "labels": [7]}}', "malformed labels for 'img000.jpg'"),
], ids=["not-json", "binary", "list", "three-coords", "empty", "strings", "nan", "number", "label-count",
        "label-value"])
def test_malformed_points_json_is_named(ws, store, tmp_path, capsys, content, problem):
    data = split_copy(ws, tmp_path)
    target = data / "masks" / "points.json"
    target.write_bytes(content if isinstance(content, bytes) else content.encode())
    learn_error(capsys, ws, store, data, names=[target, problem])


# ---------------------------------------------------------------------------------------------------- folders
def test_empty_data_folder_is_named(ws, store, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    learn_error(capsys, ws, store, empty, names=[empty, "expected images/ and masks/"])
    (empty / "images").mkdir()
    (empty / "masks").mkdir()
    learn_error(capsys, ws, store, empty, names=[empty / "images", "no images"])
    cli_error(capsys, "eval", store, "--data", f"red={empty}", names=[empty / "images", "no images"])


def test_missing_folders_are_named(ws, store, tmp_path, capsys):
    data = split_copy(ws, tmp_path)
    shutil.rmtree(data / "masks")
    learn_error(capsys, ws, store, data, names=[data, "no masks/ folder"])
    learn_error(capsys, ws, store, tmp_path / "nowhere", names=[tmp_path / "nowhere", "no such data folder"])


# ---------------------------------------------------------------------------------------------------- the base model
def base_error(capsys, ws, tmp_path, base, names=()) -> str:
    """--base for a new store: it fails before anything is written."""
    target = tmp_path / "new-store"
    line = cli_error(capsys, "learn", target, "--base", base, "--domain", "x", "--data", ws / "red", *FAST,
                      names=[base, *names])
    assert not target.exists()
    return line


def hf_copy(ws: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ws / "tiny-sam", tmp_path / "base"))


def test_missing_base_is_named(ws, tmp_path, capsys):
    base_error(capsys, ws, tmp_path, tmp_path / "sam_vit_b.pth", names=["no such file"])


def test_truncated_checkpoint_is_named(ws, tmp_path, capsys):
    path = tmp_path / "sam_vit_b.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1, 4, 4, 8)}, path)
    path.write_bytes(path.read_bytes()[:-200])
    base_error(capsys, ws, tmp_path, path, names=["not a readable PyTorch checkpoint"])


def test_non_sam_checkpoint_is_named(ws, tmp_path, capsys):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2, 3, 1, 1)}, path)
    base_error(capsys, ws, tmp_path, path, names=["not a Segment Anything checkpoint"])
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    base_error(capsys, ws, tmp_path, text, names=["not a readable PyTorch checkpoint"])


class _RunsCode:
    """A pickle that would run a command when unpickled without weights_only."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_pickled_objects_in_a_checkpoint_are_refused_without_running(ws, tmp_path, capsys):
    path = tmp_path / "sam_vit_b_01ec64.pth"
    marker = tmp_path / "code-ran"
    torch.save({"image_encoder.pos_embed": torch.zeros(1), "payload": _RunsCode(marker)}, path)
    base_error(capsys, ws, tmp_path, path, names=["pickled objects", "weights_only=True"])
    assert not marker.exists()


def test_hf_directory_problems_are_named(ws, tmp_path, capsys):
    base = hf_copy(ws, tmp_path)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    base_error(capsys, ws, tmp_path, base, names=["model_type is 'bert'"])
    (base / "config.json").write_text("{broken")
    base_error(capsys, ws, tmp_path, base, names=["config.json", "unreadable"])
    (base / "config.json").write_text(json.dumps(config))
    weights = (base / "model.safetensors").read_bytes()
    (base / "model.safetensors").write_bytes(weights[: len(weights) // 3])
    base_error(capsys, ws, tmp_path, base, names=["cannot load SAM weights"])


def test_weights_of_another_model_are_refused_not_randomly_filled(ws, tmp_path, capsys):
    base = hf_copy(ws, tmp_path)
    save_file({"bert.embeddings.weight": torch.zeros(4, 4)}, base / "model.safetensors")
    base_error(capsys, ws, tmp_path, base, names=["not a SAM checkpoint", "missing keys"])
    SamBackbone.from_config(tiny_sam_config(hidden=48)).model.save_pretrained(tmp_path / "wider")
    shutil.copy(tmp_path / "wider" / "model.safetensors", base / "model.safetensors")
    capsys.readouterr()  # save_pretrained's progress bar
    base_error(capsys, ws, tmp_path, base, names=["not a SAM checkpoint", "mismatched keys"])


def test_pickle_where_safetensors_is_expected_is_refused(ws, tmp_path, capsys):
    base = hf_copy(ws, tmp_path)
    state = load_safetensors((base / "model.safetensors").read_bytes())
    (base / "model.safetensors").unlink()
    torch.save(state, base / "pytorch_model.bin")
    base_error(capsys, ws, tmp_path, base, names=["no model.safetensors", "pytorch_model.bin is a pickle"])
    torch.save(state, base / "model.safetensors")  # a pickle under the safetensors name
    base_error(capsys, ws, tmp_path, base, names=["cannot load SAM weights"])


def test_store_built_on_another_base_is_refused(ws, store, tmp_path, capsys):
    other = ws / "other-sam"
    learn_error_line = cli_error(capsys, "learn", store, "--base", other, "--domain", "x", "--data", ws / "blue",
                                  *FAST, names=[store, "different base model"])
    assert "pass the base it was created with" in learn_error_line
    image = ws / "red" / "test" / "images" / "img000.png"
    cli_error(capsys, "segment", store, image, "--base", other, "--point", "5,5", "--out", tmp_path / "m.png",
               names=[store, "different base model"])
    cli_error(capsys, "eval", store, "--base", other, "--data", f"red={ws / 'red'}", names=["different base"])


# ---------------------------------------------------------------------------------------------------- the store's files
def module_file(store: Path) -> Path:
    manifest = json.loads((store / "manifest.json").read_text())
    return store / manifest["domains"][0]["file"]


def test_module_replaced_by_a_pickle_is_refused(ws, store_copy, tmp_path, capsys):
    victim = module_file(store_copy)
    torch.save(load_safetensors(victim.read_bytes()), victim)  # (read first: load_file maps the file)
    image = ws / "red" / "test" / "images" / "img000.png"
    for argv in (["info", store_copy], ["segment", store_copy, image, "--point", "5,5", "--out", tmp_path / "m.png"],
                 ["learn", store_copy, "--domain", "x", "--data", ws / "blue", *FAST]):
        cli_error(capsys, *argv, names=[victim, "checksum mismatch"])
    manifest = json.loads((store_copy / "manifest.json").read_text())  # someone "fixed" the checksum too
    manifest["domains"][0]["sha256"] = sha256_bytes(victim.read_bytes())
    (store_copy / "manifest.json").write_text(json.dumps(manifest))
    cli_error(capsys, "info", store_copy, names=[victim, "not a valid safetensors file"])


def test_tampered_truncated_or_missing_store_files_are_named(ws, store_copy, capsys):
    manifest = json.loads((store_copy / "manifest.json").read_text())
    module = module_file(store_copy)
    original = module.read_bytes()
    module.write_bytes(original[:-7])
    cli_error(capsys, "info", store_copy, names=[module, "checksum mismatch"])
    module.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    cli_error(capsys, "info", store_copy, names=[module, "checksum mismatch"])
    module.write_bytes(original)
    selector = store_copy / manifest["selector"]["file"]
    selector.write_bytes(selector.read_bytes()[:100])
    cli_error(capsys, "info", store_copy, names=[selector, "checksum mismatch"])
    if (manifest.get("buffer") or {}).get("file"):  # the mlp's buffer (the default fecam keeps none)
        (store_copy / manifest["buffer"]["file"]).unlink()
    selector.unlink()
    cli_error(capsys, "info", store_copy, names=["missing", "manifest.json"])


@pytest.mark.parametrize("change, problem", [
    (lambda m: m.update(format_version=99), "newer samcl"),
    (lambda m: m.pop("domains"), "malformed manifest"),
    (lambda m: m["domains"][0].update(file="../../elsewhere.safetensors"), "outside the store"),
    (lambda m: m.update(format="something-else"), "not a samcl store manifest"),
], ids=["newer-format", "no-domains", "path-escape", "foreign"])
def test_bad_manifest_is_explained(store_copy, capsys, change, problem):
    manifest = json.loads((store_copy / "manifest.json").read_text())
    change(manifest)
    (store_copy / "manifest.json").write_text(json.dumps(manifest))
    line = cli_error(capsys, "info", store_copy, names=[problem])
    if problem == "newer samcl":
        assert "version 99" in line and "Upgrade samcl" in line


def test_truncated_manifest_is_named(store_copy, capsys):
    text = (store_copy / "manifest.json").read_text()
    (store_copy / "manifest.json").write_text(text[: len(text) // 2])
    cli_error(capsys, "info", store_copy, names=[store_copy / "manifest.json", "unreadable manifest"])


def test_store_path_that_is_not_a_store(ws, tmp_path, capsys):
    cli_error(capsys, "info", tmp_path / "nowhere", names=[tmp_path / "nowhere", "not a samcl store"])
    afile = tmp_path / "afile"
    afile.write_text("mine")
    cli_error(capsys, "info", afile, names=[afile, "is a file"])
    cli_error(capsys, "learn", afile, "--base", ws / "tiny-sam", "--domain", "x", "--data", ws / "red", *FAST,
               names=[afile, "not a folder"])
    assert afile.read_text() == "mine"


def test_new_store_in_a_folder_with_other_files_is_refused(ws, tmp_path, capsys):
    """A store removes stale files of its own names, so it must not move into a folder holding anything else."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"user's own weights")
    before = snapshot(folder)
    cli_error(capsys, "learn", folder, "--base", ws / "tiny-sam", "--domain", "x", "--data", ws / "red", *FAST,
               names=[folder, "not a samcl store", "model.safetensors"])
    assert snapshot(folder) == before and not (folder / ".lock").exists()


def test_failed_first_learn_leaves_no_store_folder(ws, tmp_path, capsys):
    data = split_copy(ws, tmp_path)
    (data / "images" / "img003.png").write_bytes(b"broken")
    target = tmp_path / "new-store"
    cli_error(capsys, "learn", target, "--base", ws / "tiny-sam", "--domain", "x", "--data", data, *FAST,
               names=[data / "images" / "img003.png"])
    assert not target.exists()


@pytest.mark.parametrize("failing", ["selector", "manifest.json"])
def test_disk_full_while_saving_leaves_the_store_as_it_was(ws, store, capsys, monkeypatch, failing):
    """The write fails at the selector file or at the manifest itself: one line naming the file, the files of the
    half write removed, the store's bytes unchanged."""
    real_replace = samcl.io.files.os.replace

    def replace(source, target):
        if Path(target).name.startswith(failing):
            raise OSError(28, "No space left on device")
        return real_replace(source, target)

    monkeypatch.setattr(samcl.io.files.os, "replace", replace)
    cli_error(capsys, "learn", store, "--domain", "x", "--data", ws / "blue", *FAST,
               names=[store, failing, "cannot write (No space left on device)"])


def test_debug_shows_the_traceback(ws, tmp_path, capsys):
    with pytest.raises(SamclError, match="not a samcl store"):
        main(["--debug", "info", str(tmp_path / "nowhere")])
