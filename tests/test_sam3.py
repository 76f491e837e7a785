"""SAMCL on SAM 3's tracker (transformers' Sam3TrackerModel / Sam3TrackerVideoModel): parity with transformers'
classes on a tiny random config, the AugModule site on the ViT blocks, loading HF folders, and the method end to
end. No real SAM 3 weights are used anywhere."""

from __future__ import annotations

import ast
import base64
import copy
import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import transformers_propagation
from transformers import Sam3TrackerConfig, Sam3TrackerModel
from transformers.image_utils import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD
from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import (
    Sam3TrackerVideoInferenceSession,
)

from samcl import SAMCL, Prompt, SamclError, TrainConfig, load_backbone
from samcl.backbone import Sam3Backbone, Sam3VideoBackbone
from samcl.backbone.sam3 import PIXEL_MEAN, PIXEL_STD, resize_uint8, with_sub_types
from samcl.data import synthetic
from samcl.inference.video import VideoTracker
from samcl.method import AugModule, Injection, config_for

TOLERANCE = 1e-4
SIZE = 112  # 8 x 8 tokens of 14 px
FRAMES, HEIGHT, WIDTH = 5, 96, 120


def tiny_sam3_config(neck: int = 32) -> dict:
    """A Sam3TrackerConfig dict for CPU tests: 4 ViT blocks of width 32 (2 heads of 16, rotary), 3 x 3 windows that
    do not divide the 8 x 8 grid (padded windows) in blocks 0 and 2, global attention in 1 and 3; position
    embeddings of a 4 x 4 pretraining grid, tiled (as SAM 3's 24 x 24 to 72 x 72); SAM 3's four-level neck, `neck`
    channels wide (as the prompt encoder and mask decoder)."""
    return {
        "vision_config": {
            "backbone_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
                                "num_attention_heads": 2, "image_size": SIZE, "patch_size": 14, "window_size": 3,
                                "global_attn_indexes": [1, 3], "pretrain_image_size": 56},
            "backbone_feature_sizes": [[32, 32], [16, 16], [8, 8]], "fpn_hidden_size": neck,
        },
        "prompt_encoder_config": {"hidden_size": neck, "image_size": SIZE, "patch_size": 14},
        "mask_decoder_config": {"hidden_size": neck, "mlp_dim": 64, "num_attention_heads": 2,
                                "iou_head_hidden_dim": 32},
    }


def tiny_sam3_video_config() -> dict:
    """The same ViT with a video memory (Sam3TrackerVideoConfig). The memory is 64 wide (the memory attention's
    cross-attention reads 64 channels whatever the config says), and transformers splits the object pointers into
    memory-wide tokens only for a wider neck (as SAM 3's 256): 128."""
    return {**tiny_sam3_config(neck=128), "image_size": SIZE, "memory_attention_hidden_size": 128,
            "memory_attention_num_layers": 2, "memory_attention_feed_forward_hidden_size": 64,
            "memory_attention_rope_feat_sizes": [8, 8], "memory_encoder_hidden_size": 128,
            "memory_encoder_output_channels": 64, "mask_downsampler_embed_dim": 128, "memory_fuser_embed_dim": 128,
            "memory_fuser_intermediate_dim": 64, "num_maskmem": 3, "max_object_pointers_in_encoder": 4}


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Noise on every weight (transformers initialises many to zero or near it, which would make the parity and
    the module's effect trivial); the object-score head made to say "present" (an absent object's logits are a
    constant)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.2)
        model.mask_decoder.pred_obj_score_head.proj_out.weight.mul_(0.01)
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(4.0)


@pytest.fixture(scope="module")
def backbone() -> Sam3Backbone:
    backbone = Sam3Backbone.from_config(tiny_sam3_config(), seed=0)
    randomize(backbone.model, 0)
    return backbone


@pytest.fixture(scope="module")
def video_backbone() -> Sam3VideoBackbone:
    backbone = Sam3VideoBackbone.from_config(tiny_sam3_video_config(), seed=0)
    randomize(backbone.video, 1)
    return backbone


def _image(seed: int = 0, height: int = 90, width: int = 130) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def _pixels(backbone, images) -> torch.Tensor:
    return torch.stack([backbone.preprocess(image)[0] for image in images])


def _trained_like(config, seed: int) -> AugModule:
    module = AugModule(config, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(seed)) * 0.2)
    return module


def _ours(backbone, pixels, adapter=None, **prompt):
    embeddings = backbone.suffix(backbone.prefix(pixels, backbone.site.selector_block),
                                 backbone.site.selector_block + 1, adapter)
    return backbone.decode(embeddings, **prompt)


POINTS = torch.tensor([[[30.0, 40.0], [80.0, 20.0]], [[10.0, 95.0], [56.0, 56.0]]])
LABELS = torch.tensor([[1, 0], [1, 1]])
BOXES = torch.tensor([[10.0, 20.0, 60.0, 80.0], [5.0, 5.0, 100.0, 90.0]])


# ---------------------------------------------------------------------------------------------- choices
def test_sam3_site_is_the_vits_blocks_with_the_middle_block_as_selector():
    """transformers' Sam3TrackerConfig defaults (SAM 3): 32 blocks of width 1024, a 72 x 72 grid of 14 px at 1008 px;
    selector block 16, blocks 17..31 adapted by default, 1..31 adaptable, heat around the 256-channel neck."""
    with torch.device("meta"):
        sam3 = Sam3Backbone(Sam3TrackerModel(Sam3TrackerConfig()))
    site = sam3.site
    assert (sam3.image_size, site.grid, site.stride, site.dim) == (1008, (72, 72), 14, 1024)
    assert site.selector_block == 16 and site.default_blocks == tuple(range(17, 32))
    assert site.blocks == tuple(range(1, 32))
    assert (site.neck_dim, site.neck_channels, site.qkv_lora) == (1024, 256, True)
    assert config_for(site).adapted_blocks == tuple(range(17, 32))


def test_preprocessing_follows_sam3s_image_processor(monkeypatch):
    """Sam3ImageProcessor needs torchvision (not installed here), so its constants are read from its source: 1008 x
    1008, bilinear, ImageNet-standard mean and std (0.5). An image at the input size is only normalised; another
    size is stretched (no padding, resized as uint8 as torchvision does) and its coordinates scale per axis."""
    import transformers.models.sam3 as package

    source = (Path(inspect.getfile(package)).parent / "image_processing_sam3.py").read_text()
    processor = next(node for node in ast.walk(ast.parse(source))
                     if isinstance(node, ast.ClassDef) and node.name == "Sam3ImageProcessor")
    fields = {target.id: ast.unparse(node.value) for node in processor.body if isinstance(node, ast.Assign)
              for target in node.targets}
    assert fields["size"] == "{'height': 1008, 'width': 1008}" and fields["resample"] == "PILImageResampling.BILINEAR"
    assert fields["image_mean"] == "IMAGENET_STANDARD_MEAN" and fields["image_std"] == "IMAGENET_STANDARD_STD"
    assert PIXEL_MEAN == tuple(IMAGENET_STANDARD_MEAN) and PIXEL_STD == tuple(IMAGENET_STANDARD_STD)
    with torch.device("meta"):
        assert Sam3Backbone(Sam3TrackerModel(Sam3TrackerConfig())).image_size == 1008

    with torch.device("meta"):
        small = Sam3Backbone(Sam3TrackerModel(Sam3TrackerConfig(**with_sub_types(tiny_sam3_config()))))
    same = _image(1, SIZE, SIZE)
    tensor, _ = small.preprocess(same)
    expected = (torch.from_numpy(same).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    assert torch.allclose(tensor, expected, atol=1e-6)
    tensor, geometry = small.preprocess(_image(2, 56, 224))
    assert tensor.shape == (3, SIZE, SIZE) and geometry.resized == (SIZE, SIZE)
    assert -1.0 <= tensor.min() and tensor.max() <= 1.0
    assert geometry.coords_to_input([[224.0, 56.0]]).tolist() == [[SIZE, SIZE]]
    resized = []  # torchvision's two CPU paths: PyTorch's uint8 kernel (AVX2), float32 rounded back (other CPUs)
    for capability in ("AVX2", "DEFAULT"):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda name=capability: name)
        resized.append(resize_uint8(_image(2, 56, 224), (SIZE, SIZE)))
    assert all(r.dtype == torch.uint8 and r.shape == (3, SIZE, SIZE) for r in resized)
    assert (resized[0].int() - resized[1].int()).abs().max() <= 1


# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("multimask", [False, True])
def test_base_equals_transformers_sam3trackermodel_for_points_and_a_box(backbone, multimask):
    pixels = _pixels(backbone, [_image(0), _image(1)])
    model = backbone.model
    with torch.no_grad():
        theirs = model(pixel_values=pixels, input_points=POINTS[:, None], input_labels=LABELS[:, None],
                       multimask_output=multimask)
        logits, iou = _ours(backbone, pixels, points=POINTS, labels=LABELS, multimask_output=multimask)
        assert logits.std() > 0.1  # not a trivial parity
        assert (logits - theirs.pred_masks[:, 0]).abs().max() <= TOLERANCE
        assert (iou - theirs.iou_scores[:, 0]).abs().max() <= TOLERANCE
        theirs = model(pixel_values=pixels, input_boxes=BOXES[:, None], multimask_output=multimask)
        logits, iou = _ours(backbone, pixels, boxes=BOXES, multimask_output=multimask)
        assert (logits - theirs.pred_masks[:, 0]).abs().max() <= TOLERANCE
        assert (iou - theirs.iou_scores[:, 0]).abs().max() <= TOLERANCE


def test_with_a_three_level_neck_the_no_memory_embedding_reaches_the_decoder_as_in_transformers():
    """SAM 3's neck has four levels and Sam3TrackerModel adds the "no memory" embedding to the last, which it then
    drops; with three (scale factors 4, 2, 1) it lands on the decoder's map: samcl follows the model either way."""
    config = tiny_sam3_config()
    config["vision_config"]["scale_factors"] = [4.0, 2.0, 1.0]
    sam3 = Sam3Backbone.from_config(config, seed=0)
    randomize(sam3.model, 0)
    pixels = _pixels(sam3, [_image(0)])
    with torch.no_grad():
        theirs = sam3.model(pixel_values=pixels, input_boxes=BOXES[:1, None], multimask_output=False)
        logits, _ = _ours(sam3, pixels, boxes=BOXES[:1])
        assert (logits - theirs.pred_masks[:, 0]).abs().max() <= TOLERANCE
        sam3.model.no_memory_embedding.zero_()
        assert (_ours(sam3, pixels, boxes=BOXES[:1])[0] - logits).abs().max() > 1e-3


def test_base_equals_transformers_at_sam3s_own_geometry():
    """SAM 3's input geometry with the tiny widths: 1008 px, 72 x 72 tokens, 24 x 24 windows (3 x 3 of them),
    position embeddings of a 336 px pretraining grid tiled 3 x 3, a 288 x 288 stride-4 level."""
    config = tiny_sam3_config()
    config["vision_config"]["backbone_config"].update(image_size=1008, window_size=24, pretrain_image_size=336)
    config["vision_config"]["backbone_feature_sizes"] = [[288, 288], [144, 144], [72, 72]]
    config["prompt_encoder_config"]["image_size"] = 1008
    sam3 = Sam3Backbone.from_config(config, seed=0)
    randomize(sam3.model, 0)
    assert sam3.site.grid == (72, 72) and sam3.site.stride == 14
    pixels = sam3.preprocess(_image(0, 300, 400))[0][None]
    points, labels = torch.tensor([[[300.0, 400.0], [700.0, 100.0]]]), torch.tensor([[1, 0]])
    with torch.no_grad():
        theirs = sam3.model(pixel_values=pixels, input_points=points[:, None], input_labels=labels[:, None],
                            multimask_output=False)
        logits, iou = _ours(sam3, pixels, points=points, labels=labels)
    assert logits.std() > 0.1 and (logits - theirs.pred_masks[:, 0]).abs().max() <= TOLERANCE
    assert (iou - theirs.iou_scores[:, 0]).abs().max() <= TOLERANCE


def test_a_zero_module_equals_the_base_and_a_trained_one_changes_it(backbone):
    """A fresh AugModule (B, U_D, U_out zero) and a fresh qkv LoRA (B zero) add nothing; trained ones change the
    masks, through the attention, the qkv projections and the neck."""
    pixels = _pixels(backbone, [_image(3)])
    heat = backbone.heat(POINTS[:1], LABELS[:1], None)
    with torch.no_grad():
        base, _ = _ours(backbone, pixels, points=POINTS[:1], labels=LABELS[:1])
        for variant in ({}, {"target": "qkv", "shared_down": False, "prompt_augmentation": False}):
            config = config_for(backbone.site, rank=4, **variant)
            fresh = AugModule(config, generator=torch.Generator().manual_seed(0))
            logits, _ = _ours(backbone, pixels, Injection(config, fresh.params(), heat), points=POINTS[:1],
                              labels=LABELS[:1])
            assert (logits - base).abs().max() <= TOLERANCE
            trained = _trained_like(config, 1)
            logits, _ = _ours(backbone, pixels, Injection(config, trained.params(), heat), points=POINTS[:1],
                              labels=LABELS[:1])
            assert (logits - base).abs().max() > 0.05, variant


def test_adapted_suffix_with_a_bfloat16_encoder_is_close_to_float32(backbone):
    """A module's float32 deltas (attention and neck) on a bfloat16 encoder: the decoder's inputs come out float32
    and close to the float32 encoder's."""
    half = copy.deepcopy(backbone)
    half.set_precision("bfloat16")
    config = config_for(backbone.site)
    module = _trained_like(config, 1)
    pixels = _pixels(backbone, [_image(6)])
    outs = []
    with torch.no_grad():
        for each in (backbone, half):
            injection = Injection(config, module.params(), each.heat(POINTS[:1], LABELS[:1], None))
            embeddings = each.suffix(each.prefix(pixels, config.adapted_blocks[0] - 1), config.adapted_blocks[0],
                                     injection)
            outs.append(torch.cat([embeddings.image.flatten(), *(h.flatten() for h in embeddings.high_res)]))
    assert outs[0].dtype == outs[1].dtype == torch.float32
    assert (outs[1] - outs[0]).abs().max() < 0.05 * outs[0].abs().max()


def test_every_split_point_gives_the_same_embeddings(backbone):
    pixels = _pixels(backbone, [_image(4)])
    with torch.no_grad():
        whole = backbone.encode(pixels)
        for stop in range(backbone.num_blocks):
            split = backbone.suffix(backbone.prefix(pixels, stop), stop + 1)
            assert torch.equal(split.image, whole.image)
            assert all(torch.equal(a, b) for a, b in zip(split.high_res, whole.high_res))


# ---------------------------------------------------------------------------------------------- loading
def test_load_backbone_recognises_hf_sam3_tracker_folders(backbone, video_backbone, tmp_path):
    backbone.model.save_pretrained(tmp_path / "image")
    video_backbone.video.save_pretrained(tmp_path / "video")
    assert json.loads((tmp_path / "image" / "config.json").read_text())["model_type"] == "sam3_tracker"
    loaded = load_backbone(tmp_path / "image")
    weights = "weights_sha256"  # (a saved config spells out its sub-configs' dtype: the config hash differs)
    assert type(loaded) is Sam3Backbone and loaded.identity()[weights] == backbone.identity()[weights]
    video = load_backbone(tmp_path / "video", video=True)
    assert type(video) is Sam3VideoBackbone and video.identity()[weights] == video_backbone.identity()[weights]
    assert video.identity()["architecture"] == "Sam3TrackerModel"
    assert type(load_backbone(tmp_path / "video")) is Sam3VideoBackbone
    with pytest.raises(SamclError, match="SAM 3 tracker image model has no video memory"):
        load_backbone(tmp_path / "image", video=True)


def test_video_backbone_shares_the_video_models_image_modules(video_backbone):
    model, video = video_backbone.model, video_backbone.video
    assert model.vision_encoder is video.vision_encoder and model.mask_decoder is video.mask_decoder
    assert model.no_memory_embedding is video.no_memory_embedding
    assert video_backbone.memory_window == 3  # 4 object pointers
    pixels = _pixels(video_backbone, [_image(5)])  # images: the video model's image embeddings (its own levels)
    with torch.no_grad():
        ours, theirs = video_backbone.encode(pixels), video.get_image_embeddings(pixels)
    assert all(torch.equal(a, b) for a, b in zip((*ours.high_res, ours.image), theirs))


# ---------------------------------------------------------------------------------------------- video
VIDEO_PROMPTS = {0: {1: Prompt.of(points=[[40, 30]]),
                     7: Prompt.of(points=[[80, 70]], labels=[0], box=[60, 40, 110, 90])}}


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """A textured square moving over a textured background."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    square = rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)
    out = []
    for t in range(FRAMES):
        frame = background.copy()
        frame[20 + 4 * t: 50 + 4 * t, 25 + 5 * t: 55 + 5 * t] = square
        out.append(frame)
    return out


def test_base_propagation_equals_transformers_sam3trackervideomodel(video_backbone, frames):
    expected = transformers_propagation(video_backbone.video, _pixels(video_backbone, frames), VIDEO_PROMPTS, HEIGHT,
                                        WIDTH, Sam3TrackerVideoInferenceSession)
    samcl = SAMCL.create(video_backbone, device="cpu")
    ours = list(VideoTracker(samcl.engine).track(iter(frames), VIDEO_PROMPTS, return_logits=True, num_frames=FRAMES))
    assert len(ours) == len(expected) == FRAMES
    for frame, theirs in zip(ours, expected):
        assert sorted(frame.objects) == sorted(theirs) == [1, 7]
        for obj, logits in theirs.items():
            assert logits.std() > 0.1  # not a trivial parity
            difference = (frame.objects[obj].logits - logits.float()).abs().max().item()
            assert difference <= TOLERANCE, (frame.index, obj, difference)


def test_a_module_learned_on_a_sam3_video_folder_tracks_and_samcl_track_runs(video_backbone, frames, tmp_path,
                                                                               capsys):
    """A store on an HF sam3_tracker_video folder: its module changes the tracked masks on every frame, `samcl
    track` writes a mask per frame from the prompted one on, the CVAT tracker route answers SAMCL.track's boxes; an
    image-only folder cannot track (one clear line)."""
    from PIL import Image

    from samcl.backbone import video_backbone_for
    from samcl.cli import main

    video_backbone.video.save_pretrained(tmp_path / "sam3-video")
    samcl = SAMCL.create(load_backbone(tmp_path / "sam3-video"), tmp_path / "set", device="cpu")
    samcl.learn("polyps", synthetic.generate("polyps", 4, seed=0), TrainConfig(epochs=1, batch_size=2, progress=False))
    tracker = VideoTracker(samcl.engine)
    learned = list(tracker.track(iter(frames), VIDEO_PROMPTS, force="polyps", return_logits=True))
    base = list(tracker.track(iter(frames), VIDEO_PROMPTS, force="base", return_logits=True))
    for ours, theirs in zip(learned, base):
        assert ours.domain == "polyps"
        assert (ours.objects[1].logits - theirs.objects[1].logits).abs().max() > 1e-3

    (tmp_path / "frames").mkdir()
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / "frames" / f"{index:03d}.png")
    code = main(["track", str(tmp_path / "set"), str(tmp_path / "frames"), "--point", "40,30", "--frame", "1",
                 "--out", str(tmp_path / "out"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and [row["frame"] for row in report["frames"]] == list(range(FRAMES))
    assert len(list((tmp_path / "out").glob("*.png"))) == FRAMES - 1

    serve = pytest.importorskip("samcl.serve")  # the CVAT tracker route tracks on a SAM 3 tracker store too
    from fastapi.testclient import TestClient
    from serve_helpers import png

    from samcl.serve.cvat_tracker import rectangle

    box = [20, 15, 60, 55]
    expected = list(SAMCL.open(tmp_path / "set", device="cpu").track(iter(frames[:3]), {0: {1: Prompt.of(box=box)}}))
    with TestClient(serve.create_app(serve.ServeConfig(store=tmp_path / "set"))) as client:
        answers = []
        for frame in frames[:3]:
            states = {} if not answers else {"states": answers[-1]["states"]}
            shape = answers[-1]["shapes"][0] if answers else box
            body = {"image": base64.b64encode(png(frame)).decode(), "shapes": [shape], **states}
            answer = client.post("/v1/cvat/tracker", json=body)
            assert answer.status_code == 200, answer.text
            answers.append(answer.json())
    assert [a["shapes"][0] for a in answers[1:]] == [rectangle(f.objects[1].mask) for f in expected[1:]]
    assert [a["domains"] for a in answers] == [[f.domain] for f in expected]

    backbone_on_images = Sam3Backbone.from_config(tiny_sam3_config())
    backbone_on_images.model.save_pretrained(tmp_path / "sam3")
    with pytest.raises(SamclError, match="SAM 3 tracker image model has no video memory"):
        video_backbone_for(load_backbone(tmp_path / "sam3"))


# ---------------------------------------------------------------------------------------------- end to end
def test_samcl_learns_a_domain_on_a_sam3_folder_and_segments(backbone, tmp_path):
    """load_backbone(<an HF sam3_tracker folder>) -> SAMCL.create -> learn one synthetic domain (1 epoch, 4 images)
    -> segment: the learned module runs and its masks differ from the base's; the store opens again."""
    backbone.model.save_pretrained(tmp_path / "sam3")
    samcl = SAMCL.create(load_backbone(tmp_path / "sam3"), tmp_path / "set", device="cpu")
    samples = synthetic.generate("polyps", 4, seed=0)
    report = samcl.learn("polyps", samples, TrainConfig(epochs=1, batch_size=2, progress=False))
    assert report["stats"]["loss_first"] > 0
    images = [s.image for s in samples[:2]]
    prompts = [Prompt.of(s.points) for s in samples[:2]]
    learned = samcl.segment(images, prompts, return_logits=True)
    base = samcl.segment(images, prompts, force="base", return_logits=True)
    for sample, ours, theirs in zip(samples, learned, base):
        assert ours.domain == "polyps" and ours.masks.shape == (1, *sample.mask.shape)
        assert np.abs(ours.low_res_logits - theirs.low_res_logits).max() > 1e-3
    reopened = SAMCL.open(tmp_path / "set", base=load_backbone(tmp_path / "sam3"))
    assert reopened.domains == ["polyps"]
