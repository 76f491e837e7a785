"""The tiny SAM 2 shipped with the package (`builtin:tiny-sam2`): one folder that loads as an image base and as a
video base, and stays small. (Its segmentation and tracking are not yet clearly better than random weights: see its
MODEL_CARD.md; a test of that belongs here once a longer pretraining gets there.)"""

from samcl.backbone import (BUILTIN_TINY_SAM2, TINY_SAM2_DIR, Sam2Backbone, Sam2VideoBackbone, load_backbone,
                            resolve_base, video_backbone_for)


def test_builtin_tiny_sam2_loads_as_image_and_video_base_and_is_at_most_10_mb():
    assert (TINY_SAM2_DIR / "model.safetensors").stat().st_size <= 10 * 2**20
    assert resolve_base(BUILTIN_TINY_SAM2) == BUILTIN_TINY_SAM2
    image = load_backbone(BUILTIN_TINY_SAM2)
    assert isinstance(image, Sam2Backbone) and image.family == "sam2" and image.image_size == 128
    assert image.source["base"] == BUILTIN_TINY_SAM2
    video = load_backbone(BUILTIN_TINY_SAM2, video=True)
    assert isinstance(video, Sam2VideoBackbone)
    assert video.identity() == image.identity()
    assert video_backbone_for(image).identity() == image.identity()  # a store made on images can track
