"""samcl's predictor is Meta's SamPredictor: the same calls, defaults and shapes, and on the base model (no
module) the same outputs as `segment_anything.SamPredictor` on the same random weights.

Meta's predictor imports torchvision (its `ResizeLongestSide.apply_image` calls `to_pil_image` and `resize`, and
the package's `__init__` imports the mask generator, which imports `torchvision.ops`). torchvision is not
installed here, so the test stands a small torchvision in for the duration of the test: `to_pil_image` is
`PIL.Image.fromarray` and `resize` is PIL's bilinear resize, which is what torchvision's functional `resize` calls
on a PIL image; `torchvision.ops` is never called by the predictor (its stand-ins raise).
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image
from test_meta_checkpoint import SMALL, _randomized_meta_sam, load_meta_checkpoint

from samcl import SAMCL
from samcl.backbone.sam import SamBackbone

TOLERANCE = 1e-4


def _fake_torchvision() -> dict[str, ModuleType]:
    def resize(image, size):  # torchvision.transforms.functional.resize on a PIL image: PIL's bilinear resize
        return image.resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR)

    def unused(*args, **kwargs):
        raise NotImplementedError("torchvision stand-in: not used by SamPredictor")

    modules = {name: ModuleType(name) for name in ("torchvision", "torchvision.transforms",
                                                   "torchvision.transforms.functional", "torchvision.ops",
                                                   "torchvision.ops.boxes")}
    modules["torchvision.transforms.functional"].resize = resize
    modules["torchvision.transforms.functional"].to_pil_image = Image.fromarray
    modules["torchvision.ops.boxes"].batched_nms = modules["torchvision.ops.boxes"].box_area = unused
    return modules


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(Meta's SamPredictor, samcl's predictor with no module) on the same random weights."""
    if importlib.util.find_spec("segment_anything") is None:
        pytest.skip("segment-anything is in the dev extras")
    saved = {name: module for name, module in sys.modules.items()
             if name.split(".")[0] in ("torchvision", "segment_anything")}
    for name in saved:
        del sys.modules[name]
    sys.modules.update(_fake_torchvision())
    try:
        from segment_anything import SamPredictor

        sam = _randomized_meta_sam(3, **SMALL)
        path = tmp_path_factory.mktemp("meta") / "sam.pth"
        torch.save(sam.state_dict(), path)
        backbone = SamBackbone(load_meta_checkpoint(path))
        samcl = SAMCL.create(backbone, None)
        yield SamPredictor(sam), samcl.predictor()
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] in ("torchvision", "segment_anything")]:
            del sys.modules[name]
        sys.modules.update(saved)


def _image(seed: int = 0, height: int = 150, width: int = 200) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _assert_same(theirs, ours, logits: bool = False) -> None:
    masks, iou, low = theirs
    our_masks, our_iou, our_low = ours
    assert our_masks.shape == masks.shape and our_iou.shape == iou.shape and our_low.shape == low.shape
    assert our_masks.dtype == masks.dtype
    np.testing.assert_allclose(our_low, low, atol=TOLERANCE)
    np.testing.assert_allclose(our_iou, iou, atol=TOLERANCE)
    if logits:
        np.testing.assert_allclose(our_masks, masks, atol=TOLERANCE)
    else:  # a pixel may flip only where the logit is within rounding of the threshold
        assert (our_masks != masks).mean() < 1e-3


CASES = {
    "points": dict(point_coords=np.array([[60.0, 50.0], [140.0, 100.0]]), point_labels=np.array([1, 0])),
    "box": dict(box=np.array([30.0, 20.0, 170.0, 130.0]), multimask_output=False),
    "points and box, logits": dict(point_coords=np.array([[90.0, 70.0]]), point_labels=np.array([1]),
                                   box=np.array([30.0, 20.0, 170.0, 130.0]), return_logits=True),
    "one mask": dict(point_coords=np.array([[100.0, 75.0]]), point_labels=np.array([1]), multimask_output=False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_predict_equals_meta_sam_predictor(pair, case):
    meta, ours = pair
    image = _image()
    meta.set_image(image)
    ours.set_image(image)
    assert ours.original_size == meta.original_size and ours.input_size == meta.input_size
    kwargs = CASES[case]
    _assert_same(meta.predict(**kwargs), ours.predict(**kwargs), logits=kwargs.get("return_logits", False))


def test_default_is_three_masks_and_mask_input_refines_as_meta(pair):
    meta, ours = pair
    image = _image(1)
    meta.set_image(image)
    ours.set_image(image)
    first = dict(point_coords=np.array([[50.0, 40.0]]), point_labels=np.array([1]))
    theirs, mine = meta.predict(**first), ours.predict(**first)
    assert mine[0].shape == (3, 150, 200) and mine[2].shape == (3, 64, 64)  # Meta's default multimask_output=True
    _assert_same(theirs, mine)
    best = theirs[2][[int(np.argmax(theirs[1]))]]  # 1 x 64 x 64, as SAM's notebook feeds it back
    again = dict(point_coords=np.array([[50.0, 40.0], [120.0, 110.0]]), point_labels=np.array([1, 0]),
                 mask_input=best, multimask_output=False)
    _assert_same(meta.predict(**again), ours.predict(**again))
    alone = ours.predict(**{**again, "mask_input": None})
    assert np.abs(alone[2] - ours.predict(**again)[2]).max() > 1e-3  # the mask input reached the decoder


def test_predict_torch_embedding_and_torch_image_equal_meta(pair):
    meta, ours = pair
    image = _image(2, 120, 90)
    meta.set_image(image)
    ours.set_image(image)
    np.testing.assert_allclose(ours.get_image_embedding(), meta.get_image_embedding(), atol=TOLERANCE)
    coords = meta.transform.apply_coords_torch(torch.tensor([[[20.0, 30.0]], [[60.0, 90.0]]]), image.shape[:2])
    boxes = meta.transform.apply_boxes_torch(torch.tensor([[5.0, 5.0, 80.0, 100.0], [10.0, 40.0, 70.0, 110.0]]),
                                             image.shape[:2])
    labels = torch.ones(2, 1, dtype=torch.long)
    theirs = meta.predict_torch(coords, labels, boxes, multimask_output=True)
    mine = ours.predict_torch(coords, labels, boxes, multimask_output=True)
    _assert_same([t.numpy() for t in theirs], [t.numpy() for t in mine])
    transformed = torch.as_tensor(meta.transform.apply_image(image)).permute(2, 0, 1)[None].float()
    meta.set_torch_image(transformed, image.shape[:2])
    ours.set_torch_image(transformed, image.shape[:2])
    kwargs = dict(point_coords=np.array([[40.0, 60.0]]), point_labels=np.array([1]))
    _assert_same(meta.predict(**kwargs), ours.predict(**kwargs))
    ours.reset_image()
    assert not ours.is_image_set
    with pytest.raises(RuntimeError, match="set_image"):
        ours.predict(**kwargs)


def test_bgr_input_is_flipped_as_meta(pair):
    meta, ours = pair
    image = _image(4)
    meta.set_image(image[..., ::-1].copy(), image_format="BGR")
    ours.set_image(image[..., ::-1].copy(), image_format="BGR")
    kwargs = dict(point_coords=np.array([[100.0, 75.0]]), point_labels=np.array([1]))
    _assert_same(meta.predict(**kwargs), ours.predict(**kwargs))
