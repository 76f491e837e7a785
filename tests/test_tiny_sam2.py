"""The tiny SAM 2 shipped with the package (`builtin:tiny-sam2`): one folder that loads as an image base and as a
video base, stays small, and segments and tracks its own (synthetic general) domain (its MODEL_CARD.md has the
scores)."""

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


def _general_scores(backbone, images: int, clips: int) -> tuple[float, float]:
    """(mean IoU of the first general test images from their 3 points, mean J&F of the first general test clips
    prompted on frame 0), through samcl's own paths with no module."""
    import numpy as np

    from samcl import SAMCL, Prompt
    from samcl.bench.davis import sequence_scores
    from samcl.data import synthetic
    from samcl.data.synthetic.video import generate_clips

    samcl = SAMCL.create(backbone, device="cpu")
    samples = synthetic.generate(synthetic.GENERAL, images, 0, "test")
    predictions = samcl.segment([s.image for s in samples], [Prompt.of(points=s.points) for s in samples],
                                force="base")
    ious = [(p.masks[0] & s.mask).sum() / max((p.masks[0] | s.mask).sum(), 1) for p, s in zip(predictions, samples)]
    jf = []
    for clip in generate_clips(synthetic.GENERAL, clips, 0, "test"):
        frames = samcl.track(iter(clip.frames), {0: {1: Prompt.of(points=clip.points)}}, force="base",
                             num_frames=len(clip.frames))
        jf.append(sequence_scores([f.objects[1].mask for f in frames], clip.masks)["J&F"])
    return float(np.mean(ious)), float(np.mean(jf))


def test_builtin_tiny_sam2_segments_and_tracks_the_general_domain_far_better_than_random_weights():
    import torch
    from transformers import Sam2VideoConfig, Sam2VideoModel

    torch.manual_seed(0)
    random = Sam2VideoBackbone(Sam2VideoModel(Sam2VideoConfig.from_pretrained(TINY_SAM2_DIR)))
    shipped_iou, shipped_jf = _general_scores(load_backbone(BUILTIN_TINY_SAM2, video=True), 16, 2)
    random_iou, random_jf = _general_scores(random, 16, 2)
    assert shipped_iou > random_iou + 0.3 and shipped_jf > random_jf + 0.3, (shipped_iou, random_iou, shipped_jf,
                                                                              random_jf)
