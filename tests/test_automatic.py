"""Automatic masks (`SAMCL.generate`): the same masks as Meta's `SamAutomaticMaskGenerator` on the same weights
(base, no module), the routed module running without heat, Meta's record format and options.

Meta's generator imports torchvision, which has no wheel for this torch build. The parity test stands in the three
torchvision functions it calls with exact equivalents, installed only while Meta's generator module is imported
(under a private package name, as `tests/meta_sam.py` loads Meta's code):
- `torchvision.ops.boxes.batched_nms`: torchvision's CPU kernel written out in Python (scores sorted descending,
  stable; a box is dropped when its float32 IoU with a kept box exceeds the threshold; one category here, so the
  per-category loop of `_batched_nms_vanilla` is one call, its result re-sorted by score as torchvision does);
- `torchvision.ops.boxes.box_area`: (x1 - x0) * (y1 - y0);
- `torchvision.transforms.functional.to_pil_image` / `resize` on a PIL image, as Meta's `ResizeLongestSide` calls
  them: `Image.fromarray` and PIL's bilinear `Image.resize((w, h))`, which is what torchvision runs for a PIL image.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

import samcl
from meta_sam import build_meta_sam
from safetensors.torch import load_file

from samcl import SAMCL, AutoMaskConfig, load_backbone
from samcl.backbone.meta import convert_meta_state_dict
from samcl.data.synthetic import generate_general_instances
from samcl.io.masks import rle_to_mask
from samcl.method.augmodule import AugModule

#: pycocotools' Cython arrays predate numpy 2's copy keyword (a harmless warning when the tests decode with it)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
TINY = Path(samcl.__file__).parent / "assets" / "tiny-sam"
META_KEYS = {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"}


def _batched_nms(boxes, scores, idxs, iou_threshold):
    """torchvision's batched_nms (vanilla path), its nms kernel written out (see the module docstring)."""
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for category in torch.unique(idxs):
        members = torch.where(idxs == category)[0]
        b, s = boxes[members].float(), scores[members]
        order = torch.sort(s, descending=True, stable=True)[1].tolist()
        areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        suppressed = [False] * len(order)
        for a, i in enumerate(order):
            if suppressed[a]:
                continue
            keep_mask[members[i]] = True
            for c in range(a + 1, len(order)):
                j = order[c]
                w = torch.clamp(torch.minimum(b[i, 2], b[j, 2]) - torch.maximum(b[i, 0], b[j, 0]), min=0)
                h = torch.clamp(torch.minimum(b[i, 3], b[j, 3]) - torch.maximum(b[i, 1], b[j, 1]), min=0)
                inter = w * h
                if float(inter / (areas[i] + areas[j] - inter)) > iou_threshold:
                    suppressed[c] = True
    kept = torch.where(keep_mask)[0]
    return kept[scores[kept].sort(descending=True, stable=True)[1]]


def _fake_torchvision() -> dict[str, ModuleType]:
    modules = {name: ModuleType(name) for name in ("torchvision", "torchvision.ops", "torchvision.ops.boxes",
                                                   "torchvision.transforms", "torchvision.transforms.functional")}
    modules["torchvision.ops.boxes"].batched_nms = _batched_nms
    modules["torchvision.ops.boxes"].box_area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    functional = modules["torchvision.transforms.functional"]
    functional.to_pil_image = lambda array: Image.fromarray(array)
    functional.resize = lambda image, size: image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return modules


def meta_generator_class(monkeypatch):
    """Meta's SamAutomaticMaskGenerator, imported with the torchvision stand-ins in place."""
    name = "_meta_segment_anything_amg"
    if f"{name}.automatic_mask_generator" not in sys.modules:
        package = importlib.util.find_spec("segment_anything")
        if package is None or package.origin is None:
            pytest.skip("segment-anything is not installed")
        for module_name, module in _fake_torchvision().items():
            monkeypatch.setitem(sys.modules, module_name, module)
        root = ModuleType(name)
        root.__path__ = [str(Path(package.origin).parent)]
        sys.modules[name] = root
        importlib.import_module(f"{name}.automatic_mask_generator")
    return sys.modules[f"{name}.automatic_mask_generator"].SamAutomaticMaskGenerator


def shapes_image(height=96, width=128, seed=0) -> np.ndarray:
    """A few flat-coloured discs and a rectangle on a textured background."""
    rng = np.random.default_rng(seed)
    image = (rng.random((height, width, 3)) * 40 + 100).astype(np.uint8)
    yy, xx = np.mgrid[:height, :width]
    for _ in range(4):
        cy, cx, r = rng.integers(15, height - 15), rng.integers(15, width - 15), rng.integers(6, 15)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 255, 3)
    image[10:30, 75:115] = rng.integers(0, 255, 3)
    return image


def meta_tiny_sam() -> torch.nn.Module:
    """Meta's `Sam` holding the shipped tiny SAM's weights: the key mapping of `convert_meta_state_dict` run
    backwards (it renames keys and shares the tensors, so each converted tensor names its Meta key)."""
    vision = json.loads((TINY / "config.json").read_text())["vision_config"]
    decoder = json.loads((TINY / "config.json").read_text())["mask_decoder_config"]
    sam = build_meta_sam(image_size=vision["image_size"], patch_size=vision["patch_size"],
                         encoder_embed_dim=vision["hidden_size"], encoder_depth=vision["num_hidden_layers"],
                         encoder_num_heads=vision["num_attention_heads"],
                         encoder_global_attn_indexes=tuple(vision["global_attn_indexes"]),
                         window_size=vision["window_size"], prompt_embed_dim=vision["output_channels"],
                         mask_in_chans=16, decoder_mlp_dim=decoder["mlp_dim"],
                         iou_head_hidden_dim=decoder["iou_head_hidden_dim"],
                         decoder_num_heads=decoder["num_attention_heads"]).eval()
    meta_state = sam.state_dict()
    meta_key = {id(tensor): key for key, tensor in meta_state.items()}
    _, converted = convert_meta_state_dict(meta_state)
    weights = load_file(TINY / "model.safetensors")
    loaded = {meta_key[id(tensor)]: weights[hf_key] for hf_key, tensor in converted.items() if hf_key in weights}
    assert loaded.keys() == meta_state.keys()
    sam.load_state_dict(loaded)
    return sam


@pytest.fixture(scope="module")
def shared_weights():
    """Meta's Sam and samcl on the very same weights: the shipped tiny SAM (trained on the synthetic general
    domain, so its masks have shape: random weights give masks spread over the whole image, which NMS reduces
    to one)."""
    return meta_tiny_sam(), SAMCL.create(load_backbone("builtin:tiny-sam"), device="cpu")


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """Meta's Sam at a small size with seeded random weights (tests/test_meta_checkpoint.py's), and samcl on the same
    weights through Meta's checkpoint format."""
    from test_meta_checkpoint import SMALL, _randomized_meta_sam

    sam = _randomized_meta_sam(3, **SMALL)
    path = tmp_path_factory.mktemp("random") / "sam_random.pth"
    torch.save(sam.state_dict(), path)
    return sam, SAMCL.create(load_backbone(str(path)), device="cpu")


def general_image(index: int = 0) -> np.ndarray:
    """A test image of the synthetic general domain (flat shapes, occluding): what the tiny SAM knows."""
    return generate_general_instances(index + 1, seed=0, split="test")[index][1]


# The tiny SAM's predicted IoU and stability are lower than ViT-H's, for which Meta chose the defaults (0.88, 0.95:
# no mask passes here); these thresholds keep several masks and still filter, so every step has work to do.
CASES = {
    "one-crop": dict(points_per_side=16, points_per_batch=50, pred_iou_thresh=0.5, stability_score_thresh=0.8),
    "crops+small-regions": dict(points_per_side=8, points_per_batch=64, pred_iou_thresh=0.5,
                                stability_score_thresh=0.8, crop_n_layers=1, min_mask_region_area=30),
}


def test_random_weight_generator_matches_meta(random_weights, monkeypatch):
    """Random weights: logits of about 0.4 around 0 (so a smaller stability offset), and masks spread over the
    whole image whose boxes all overlap (so no NMS, which would keep one): every mask kept, compared in order.
    Pixels whose logit lies within float rounding of 0 may fall either way (transformers' and Meta's modules sum
    in different orders; 1e-4 in the logits, tests/test_meta_checkpoint.py), so masks match to a few pixels here;
    the trained tiny SAM's above match bit for bit."""
    sam, samcl = random_weights
    options = dict(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.5, stability_score_offset=0.05,
                   box_nms_thresh=1.0)
    image = shapes_image(120, 100, seed=4)
    theirs = meta_generator_class(monkeypatch)(sam, **options, output_mode="coco_rle").generate(image)
    [ours] = samcl.generate([image], config=AutoMaskConfig(**options, output_mode="coco_rle"))
    assert len(theirs) >= 10 and len(ours.records) == len(theirs)
    for mine, meta in zip(ours.records, theirs):
        assert mine["point_coords"][0] == pytest.approx(meta["point_coords"][0])
        a, b = rle_to_mask(mine["segmentation"]), rle_to_mask(meta["segmentation"])
        assert (a != b).sum() <= 0.001 * a.size, (a != b).sum()
        assert mine["predicted_iou"] == pytest.approx(meta["predicted_iou"], abs=1e-3)
        assert mine["stability_score"] == pytest.approx(meta["stability_score"], abs=1e-2)


@pytest.mark.parametrize("case", sorted(CASES))
def test_base_generator_matches_meta(shared_weights, monkeypatch, case):
    options = CASES[case]
    if options.get("min_mask_region_area"):
        pytest.importorskip("cv2")  # Meta's small-region removal runs OpenCV
    sam, samcl = shared_weights
    image = general_image()
    theirs = meta_generator_class(monkeypatch)(sam, **options, output_mode="coco_rle").generate(image)
    [ours] = samcl.generate([image], config=AutoMaskConfig(**options, output_mode="coco_rle"))
    assert ours.domain == "base" and ours.domain_score is None
    assert len(theirs) >= 3, "thresholds must leave masks to compare"
    assert len(ours.records) == len(theirs)
    for mine, meta in zip(ours.records, theirs):
        assert set(mine) == META_KEYS == set(meta)
        assert mine["point_coords"][0] == pytest.approx(meta["point_coords"][0])
        assert mine["crop_box"] == meta["crop_box"] and mine["bbox"] == meta["bbox"]
        assert mine["area"] == meta["area"]
        assert mine["segmentation"] == meta["segmentation"]
        # the same masks bit for bit; the scores agree to float rounding (Meta keeps the points in float64 up to the
        # positional encoding, and transformers' decoder sums in another order): about 1e-4 here
        assert mine["predicted_iou"] == pytest.approx(meta["predicted_iou"], abs=1e-3)
        assert mine["stability_score"] == pytest.approx(meta["stability_score"], abs=1e-3)


def test_output_modes_are_one_mask_three_ways(shared_weights):
    _, samcl = shared_weights
    image = shapes_image(seed=1)
    options = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.5)
    records = {mode: samcl.generate([image], config=AutoMaskConfig(**options, output_mode=mode))[0].records
               for mode in ("binary_mask", "uncompressed_rle", "coco_rle")}
    assert len(records["coco_rle"]) > 0
    for binary, plain, coco in zip(records["binary_mask"], records["uncompressed_rle"], records["coco_rle"]):
        assert binary["segmentation"].shape == image.shape[:2] and binary["segmentation"].dtype == bool
        assert np.array_equal(binary["segmentation"], rle_to_mask(coco["segmentation"]))
        assert np.array_equal(binary["segmentation"], rle_to_mask(plain["segmentation"]))
        assert isinstance(coco["segmentation"]["counts"], str)
        assert binary["area"] == int(binary["segmentation"].sum())


def test_module_runs_without_heat_and_changes_the_masks(tiny_backbone):
    """A module's embedding for automatic masks is the suffix with its rows and a zero heatmap (no prompt): the
    grid decoded on it gives other masks than the base, and the result names the module."""
    from samcl.method.augmodule import Injection
    from samcl.store.moduleset import DomainEntry

    samcl = SAMCL.create(tiny_backbone, device="cpu")
    module = AugModule(samcl.aug_config)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    samcl.module_set.modules["shapes"] = module
    samcl.module_set.domains.append(DomainEntry(name="shapes", kind="module"))
    samcl.engine.forget_bank()
    image = shapes_image(96, 128, seed=2)
    engine = samcl.engine
    prepared = engine.prepare([image], keep=False)
    [embedding] = engine.image_embeddings(prepared, [0])
    bank = engine.bank([0])
    zero_heat = torch.zeros(1, *tiny_backbone.grid)
    expected = tiny_backbone.suffix(prepared[0].tokens[None], engine.start_block,
                                    Injection(samcl.aug_config, bank.params([bank.row(0)]), zero_heat))
    assert torch.allclose(embedding, expected, atol=1e-6)
    options = AutoMaskConfig(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                             output_mode="coco_rle")
    [with_module] = samcl.generate([image], config=options, force="shapes")
    [without] = samcl.generate([image], config=options, force="base")
    assert with_module.domain == "shapes" and without.domain == "base"
    assert len(with_module.records) > 0 and len(without.records) > 0
    assert [r["segmentation"] for r in with_module.records] != [r["segmentation"] for r in without.records]


def test_bad_options_name_the_field():
    with pytest.raises(ValueError, match="AutoMaskConfig.points_per_side 0"):
        AutoMaskConfig(points_per_side=0)
    with pytest.raises(ValueError, match="AutoMaskConfig.output_mode 'png'"):
        AutoMaskConfig(output_mode="png")


def test_a_request_s_bad_option_is_named_once_by_its_request_field():
    pytest.importorskip("fastapi")
    from samcl.serve.automatic import generator_config
    from samcl.serve.errors import ApiError

    with pytest.raises(ApiError) as caught:
        generator_config({"points_per_side": 0}, field="extra_params.automatic")
    assert caught.value.message == "extra_params.automatic.points_per_side 0: expected an integer from 1 to 1,024"


# ---------------------------------------------------------------------------------------------- samcl segment --auto
@pytest.fixture(scope="module")
def nuclei_store(tmp_path_factory):
    """A store on the tiny SAM with one instance domain learned (briefly), and a test image of it on disk."""
    from samcl import TrainConfig
    from samcl.data.synthetic.instances import generate_instances, instance_samples
    from samcl.io import atomic_write_png

    root = tmp_path_factory.mktemp("auto")
    samcl = SAMCL.create("builtin:tiny-sam", root / "store", device="cpu")
    samcl.learn("nuclei", instance_samples("nuclei", 4, seed=0), TrainConfig(epochs=1, batch_size=2, progress=False))
    for index, (_, image, _) in enumerate(generate_instances("nuclei", 2, seed=0, split="test")):
        atomic_write_png(root / f"cells{index}.png", image)
    return root


AUTO = ["--auto", "--points-per-side", "8", "--pred-iou-thresh", "0.3", "--stability-score-thresh", "0.6"]


def test_segment_auto_writes_coco_results_and_label_png(nuclei_store, capsys):
    from pycocotools import mask as coco

    from samcl.cli import main

    root = nuclei_store
    out = root / "auto.json"
    assert main(["segment", str(root / "store"), str(root / "cells0.png"), *AUTO, "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    results = json.loads(out.read_text())
    assert summary["images"][0]["domain"] == "nuclei" and summary["images"][0]["masks"] == len(results) > 0
    labels = np.asarray(Image.open(root / "auto.png"))
    assert labels.shape == np.asarray(Image.open(root / "cells0.png")).shape[:2]
    for k, result in enumerate(results):
        assert {"image_id", "category_id", "segmentation", "score", "bbox", "area", "predicted_iou",
                "stability_score", "point_coords", "crop_box", "domain"} <= set(result)
        assert result["image_id"] == 1 and result["domain"] == "nuclei"
        rle = {"size": result["segmentation"]["size"], "counts": result["segmentation"]["counts"].encode()}
        mask = coco.decode(rle).astype(bool)  # pycocotools itself decodes what was written
        assert mask.sum() == result["area"] == coco.area(rle)
        assert result["bbox"] == pytest.approx(coco.toBbox(rle).tolist())
        # larger masks lie under smaller ones: the smallest mask's pixels all carry its id
    smallest = min(range(len(results)), key=lambda k: results[k]["area"])
    rle = results[smallest]["segmentation"]
    assert (labels[coco.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)]
            == smallest + 1).all()
    assert set(np.unique(labels)) <= set(range(len(results) + 1))


def test_segment_auto_folder_numbers_images_in_order(nuclei_store, capsys):
    from samcl.cli import main

    root = nuclei_store
    images = [str(root / "cells0.png"), str(root / "cells1.png")]
    assert main(["segment", str(root / "store"), *images, *AUTO, "--out", str(root / "many")]) == 0
    assert "COCO results" in capsys.readouterr().out
    results = json.loads((root / "many" / "auto.json").read_text())
    assert {r["image_id"] for r in results} == {1, 2}
    assert (root / "many" / "cells0.png").is_file() and (root / "many" / "cells1.png").is_file()


@pytest.mark.parametrize("argv,flag", [
    (["--points-per-side", "8", "--out", "a.json"], "--points-per-side"),
    (["--auto", "--point", "3,3", "--out", "a.json"], "--point"),
    (["--auto", "--out", "a.png"], "a.png"),
    (["--auto", "--points-per-side", "0", "--out", "a.json"], "--points-per-side"),
    (["--auto", "--output-mode", "binary_mask", "--out", "a.json"], "--output-mode"),
])
def test_segment_auto_bad_flags_are_one_line(tmp_path, capsys, argv, flag):
    from samcl.cli import main

    code = main(["segment", str(tmp_path / "S"), str(tmp_path / "i.png"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and flag in err[0], err


def test_readme_auto_commands_run_on_the_data_the_readme_makes(tmp_path, monkeypatch, capsys):
    """The README's `segment --auto` lines, run as written (globs expanded as a shell does) on what its Python
    example makes (data/shadows and a set my-set holding shadows; smaller here)."""
    import glob
    import re
    import shlex

    from samcl import TrainConfig
    from samcl.cli import main
    from samcl.data.synthetic import write_domain
    from samcl.data.folders import FolderDataset

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    lines = [line.strip() for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
             for line in block.splitlines() if "--auto" in line and line.strip().startswith("samcl segment")]
    assert len(lines) >= 2
    monkeypatch.chdir(tmp_path)
    write_domain("data", "shadows", n_train=4, n_test=2, seed=0)
    samcl = SAMCL.create("builtin:tiny-sam", "my-set", device="cpu")
    samcl.learn("shadows", FolderDataset("data/shadows/train"), TrainConfig(epochs=1, batch_size=4, progress=False))
    for line in lines:
        argv = [part for word in shlex.split(line.split("#")[0])[1:]
                for part in (sorted(glob.glob(word)) if "*" in word else [word])]
        assert main(argv) == 0, (line, capsys.readouterr().err)
    assert json.loads(Path("auto.json").read_text()) and Path("auto.png").is_file()
    assert Path("auto/auto.json").is_file() and Path("auto/shadows_test_00001.png").is_file()


def test_sam2_base_generates_masks_with_metas_keys():
    """SAM 2's embeddings are a tuple (the image embedding and the high-resolution features): broadcast over the
    grid points alike."""
    from test_sam2 import tiny_sam2_config

    from samcl.backbone import Sam2Backbone

    samcl = SAMCL.create(Sam2Backbone.from_config(tiny_sam2_config(), seed=0), device="cpu")
    [result] = samcl.generate([shapes_image(80, 100)], config=AutoMaskConfig(
        points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0))
    assert result.domain == "base" and len(result.records) > 0
    assert all(set(r) == META_KEYS and r["segmentation"].shape == (80, 100) for r in result.records)
