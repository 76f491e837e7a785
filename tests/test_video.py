"""Video on SAM 2: Meta's checkpoints keep their memory, samcl's propagation equals transformers' Sam2VideoModel
and Meta's SAM2VideoPredictor with no module, and the module runs in the loop (tests/video_meta.py builds
Meta's predictor)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession
from helpers import transformers_propagation
from video_meta import TINY_VIDEO, TINY_VIDEO_OVERRIDES, randomized_meta_video_predictor

from samcl import SAMCL, Prompt, SamclError
from samcl.backbone.sam2_video import Sam2VideoBackbone
from samcl.backbone.sam2_video_meta import convert_sam2_video_state_dict, sam2_video_model_from_state_dict
from samcl.inference.video import VideoTracker

TOLERANCE = 1e-4
OBJECT_BIAS = 4.0
FRAMES, HEIGHT, WIDTH = 8, 96, 112
#: two objects prompted on frame 0: one click (SAM 2's multimask path), a box with a negative click
PROMPTS = {0: {1: Prompt.of(points=[[40, 30]]), 7: Prompt.of(points=[[80, 70]], labels=[0], box=[60, 40, 104, 90])}}


@pytest.fixture(scope="module")
def meta():
    """Random weights, with the object-score head biased towards "present": an absent object's logits are a
    constant (-1024) on every side, which would make the parity trivial."""
    model = randomized_meta_video_predictor(0)
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[2].bias.fill_(OBJECT_BIAS)
    return model


@pytest.fixture(scope="module")
def backbone(meta) -> Sam2VideoBackbone:
    image_config, model = sam2_video_model_from_state_dict(meta.state_dict(), "random", **TINY_VIDEO_OVERRIDES)
    return Sam2VideoBackbone(model, image_config)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """A textured square moving over a textured background (random weights: any picture will do, as long as
    consecutive frames differ)."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    square = rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)
    out = []
    for t in range(FRAMES):
        frame = background.copy()
        frame[20 + 3 * t: 50 + 3 * t, 25 + 4 * t: 55 + 4 * t] = square
        out.append(frame)
    return out


def _pixels(backbone, frames) -> torch.Tensor:
    return torch.stack([backbone.preprocess(frame)[0] for frame in frames])


def _ours(backbone, frames, prompts=PROMPTS, **options):
    samcl = SAMCL.create(backbone, device="cpu")
    return list(VideoTracker(samcl.engine).track(iter(frames), prompts, return_logits=True, **options))


# ---------------------------------------------------------------------------------------------- loading
def test_every_meta_video_key_maps_onto_sam2videomodel_with_its_shape(meta):
    """Meta's SAM2VideoPredictor's whole state dict (image and memory parts) converts key for key (the check
    raises on any unknown, missing or mis-shaped key) and loads strictly, every tensor unchanged."""
    state_dict = meta.state_dict()
    _, config, converted = convert_sam2_video_state_dict(state_dict, **TINY_VIDEO_OVERRIDES)
    assert len(converted) == len(state_dict) - 3 + 1  # Meta's 4 point embeddings are stacked into one tensor
    assert config.num_maskmem == 7 and config.memory_encoder_output_channels == TINY_VIDEO["mem_dim"]
    _, model = sam2_video_model_from_state_dict(state_dict, "random", **TINY_VIDEO_OVERRIDES)
    loaded = model.state_dict()
    assert torch.equal(loaded["memory_attention.layers.3.cross_attn_image.o_proj.weight"],
                       state_dict["memory_attention.layers.3.cross_attn_image.out_proj.weight"])
    assert torch.equal(loaded["memory_encoder.mask_downsampler.final_conv.weight"],
                       state_dict["memory_encoder.mask_downsampler.encoder.12.weight"])


def test_load_backbone_keeps_metas_memory_weights_when_video_is_asked(meta, tmp_path, monkeypatch):
    from samcl import load_backbone
    from samcl.backbone.sam2 import Sam2Backbone
    from samcl.backbone.sam2_meta import HIERA_VARIANTS, HieraVariant

    monkeypatch.setitem(HIERA_VARIANTS, (16, (1, 2, 5, 1)), HieraVariant(1, (4, 7), (4, 4, 6, 3), image_size=128))
    path = tmp_path / "sam2.1_random.pt"
    torch.save({"model": meta.state_dict()}, path)
    video, image = load_backbone(path, video=True), load_backbone(path)
    assert isinstance(video, Sam2VideoBackbone) and type(image) is Sam2Backbone  # images: memory dropped as before
    assert torch.equal(video.video.memory_temporal_positional_encoding, meta.maskmem_tpos_enc)
    assert torch.equal(video.video.memory_encoder.projection.weight, meta.memory_encoder.out_proj.weight)
    assert video.identity() == image.identity()


def test_video_backbone_shares_the_image_modules_and_identity(backbone, meta):
    """The image Sam2Model is made of the video model's own modules, and its identity is the image-only load's."""
    from samcl.backbone.sam2 import Sam2Backbone
    from samcl.backbone.sam2_meta import sam2_model_from_state_dict

    assert backbone.model.vision_encoder is backbone.video.vision_encoder
    image = Sam2Backbone(sam2_model_from_state_dict(meta.state_dict(), "random", **TINY_VIDEO_OVERRIDES))
    assert backbone.identity() == image.identity()


def test_image_only_checkpoint_cannot_track(meta, tmp_path):
    from samcl.backbone.sam2_meta import VIDEO_ONLY

    image_only = {k: v for k, v in meta.state_dict().items() if not k.startswith(VIDEO_ONLY)}
    with pytest.raises(ValueError, match="no video memory weights"):
        convert_sam2_video_state_dict(image_only, **TINY_VIDEO_OVERRIDES)


def test_hf_video_directory_loads_as_it_is(backbone, tmp_path):
    from samcl import load_backbone

    backbone.video.save_pretrained(tmp_path / "video")
    loaded = load_backbone(tmp_path / "video")
    assert isinstance(loaded, Sam2VideoBackbone) and loaded.identity()["weights_sha256"] == \
        backbone.identity()["weights_sha256"]


def test_sam_v1_base_cannot_track():
    from samcl import load_backbone

    with pytest.raises(SamclError, match="only SAM 2 and SAM 3 tracker bases can track"):
        load_backbone("builtin:tiny-sam", video=True)


# ---------------------------------------------------------------------------------------------- parity
def _transformers_reference(model, pixels, streaming: bool = False) -> list[dict[int, torch.Tensor]]:
    """transformers' own propagation of PROMPTS (`helpers.transformers_propagation`), offline or streaming."""
    return transformers_propagation(model, pixels, PROMPTS, HEIGHT, WIDTH, Sam2VideoInferenceSession, streaming)


def _meta_reference(meta, pixels, monkeypatch) -> list[dict[int, torch.Tensor]]:
    """Meta's SAM2VideoPredictor: init_state (its frame loader stood in by the same pixels), add_new_points_or_box
    per object, propagate_in_video; the low-res logits it stores per frame."""
    import sam2.sam2_video_predictor as predictor

    monkeypatch.setattr(predictor, "load_video_frames", lambda **kwargs: (pixels, HEIGHT, WIDTH))
    with torch.inference_mode():
        state = meta.init_state("frames stood in")
        for obj, prompt in PROMPTS[0].items():
            meta.add_new_points_or_box(state, 0, obj, points=prompt.points, labels=prompt.labels,
                                       box=None if prompt.box is None else prompt.box)
        out = []
        for index, ids, _ in meta.propagate_in_video(state):
            per_obj = {}
            for obj in ids:
                outputs = state["output_dict_per_obj"][state["obj_id_to_idx"][obj]]
                kind = "cond_frame_outputs" if index in outputs["cond_frame_outputs"] else "non_cond_frame_outputs"
                per_obj[obj] = outputs[kind][index]["pred_masks"][0]
            out.append(per_obj)
    return out


def _assert_close(ours, theirs):
    assert len(ours) == len(theirs) == FRAMES
    for frame, expected in zip(ours, theirs):
        assert sorted(frame.objects) == sorted(expected) == [1, 7]
        for obj, logits in expected.items():
            difference = (frame.objects[obj].logits - logits.float()).abs().max().item()
            assert difference <= TOLERANCE, (frame.index, obj, difference)


def test_base_propagation_equals_transformers_sam2videomodel(backbone, frames):
    expected = _transformers_reference(backbone.video, _pixels(backbone, frames))
    _assert_close(_ours(backbone, frames, num_frames=FRAMES), expected)


def test_streamed_propagation_equals_transformers_streaming(backbone, frames):
    """Length unknown (a stream): as transformers' streaming mode, frame by frame."""
    expected = _transformers_reference(backbone.video, _pixels(backbone, frames), streaming=True)
    _assert_close(_ours(backbone, frames), expected)


def test_base_propagation_equals_metas_sam2videopredictor(backbone, meta, frames, monkeypatch):
    expected = _meta_reference(meta, _pixels(backbone, frames), monkeypatch)
    ours = _ours(backbone, frames, num_frames=FRAMES)
    _assert_close(ours, expected)
    assert any(obj.mask.any() for frame in ours for obj in frame.objects.values())


# ---------------------------------------------------------------------------------------------- the module in the loop
@pytest.fixture(scope="module")
def learned(backbone):
    """A set with one learned domain on the video backbone (one quick epoch), its module's up-projections scaled
    up so that it visibly changes the features."""
    from helpers import toy_samples

    from samcl import TrainConfig

    samcl = SAMCL.create(backbone, device="cpu")
    samcl.learn("red", toy_samples(4, (200, 30, 30), 0), TrainConfig(epochs=1, batch_size=2, progress=False))
    with torch.no_grad():
        module = samcl.module_set.module_for(0)
        for name, parameter in module.named_parameters():
            if name.startswith("b."):
                parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(0)) * 0.3)
    samcl.engine.forget_bank()
    return samcl


def test_forcing_base_on_a_learned_set_equals_base_propagation(backbone, learned, frames):
    base = _ours(backbone, frames, num_frames=FRAMES)
    forced = list(learned.track(iter(frames), PROMPTS, force="base", num_frames=FRAMES, return_logits=True))
    for ours, theirs in zip(forced, base):
        assert ours.domain == "base" and ours.frame_domain is None
        for obj in theirs.objects:
            assert torch.equal(ours.objects[obj].logits, theirs.objects[obj].logits)


def test_module_adapts_every_frame_and_heat_enters_only_on_prompted_frames(learned, frames, monkeypatch):
    """Each frame's encoder runs with the module's rows; the heat is the image path's on the prompted frames
    (frame 0 and 4 here) and zero on every other frame. Frame 4 also runs once before the propagation (its
    conditioning outputs: `VideoTracker._condition`)."""
    heats = []
    engine = learned.engine
    injection = engine.injection
    monkeypatch.setattr(engine, "injection", lambda chosen, heat: heats.append(heat.clone()) or injection(chosen, heat))
    prompts = {**PROMPTS, 4: {1: Prompt.of(points=[[60, 50]])}}
    out = list(learned.track(iter(frames), prompts, force="red", num_frames=FRAMES, return_logits=True))
    assert len(heats) == 1 + FRAMES and all(frame.domain == "red" for frame in out)
    assert [bool(heat.abs().sum() > 0) for heat in heats] == [True] + [t in prompts for t in range(FRAMES)]
    from samcl.inference import InputPrompt

    prepared = engine.prepare([frames[4]], keep=False)[0]
    expected = engine.heat([InputPrompt.of(prompts[4][1], prepared.geometry, engine.device)])
    assert torch.equal(heats[0], expected) and torch.equal(heats[1 + 4], expected)
    base = _ours(learned.backbone, frames, prompts, num_frames=FRAMES)
    assert max((a.objects[1].logits - b.objects[1].logits).abs().max().item() for a, b in zip(out, base)) > 1e-3


def test_prompted_frame_features_are_the_image_paths(learned, frames):
    """What the video model receives on a prompted frame is exactly the image path's embedding (minus the
    no-memory embedding, which the video model adds itself on conditioning frames)."""
    from samcl.inference import InputPrompt

    engine, backbone = learned.engine, learned.backbone
    prepared = engine.prepare([frames[0]], keep=False)
    prompt = InputPrompt.of(PROMPTS[0][1], prepared[0].geometry, engine.device)
    with torch.no_grad():
        image = engine.suffix(_batched(prepared[0].tokens), [0], [prompt])
        video = backbone.video_features(_batched(prepared[0].tokens), engine.start_block,
                                        engine.injection([0], engine.heat([prompt])))
    grid = image.image.shape[-2:]
    stride16 = video["vision_feats"][2].permute(1, 2, 0).view(1, -1, *grid)
    assert torch.allclose(stride16 + backbone.video.no_memory_embedding.view(1, -1, 1, 1), image.image, atol=1e-6)
    for mine, theirs in zip(video["vision_feats"][:2], image.high_res):
        assert torch.equal(mine.permute(1, 2, 0).view(theirs.shape), theirs)


def _batched(tokens):
    from samcl.backbone import tokens as batch_ops

    return batch_ops.stack([tokens])


def test_selector_routes_once_on_the_first_prompted_frame(learned, frames):
    out = list(learned.track(iter(frames), PROMPTS, route_frames=True))
    assert {frame.domain for frame in out} == {out[0].frame_domain}
    assert all(frame.frame_domain in ("red", "base") for frame in out)


def test_memory_stays_bounded_on_a_long_stream(backbone, frames, monkeypatch):
    """Tracked outputs older than the model's memory window are dropped; nothing grows with the length."""
    sessions = []
    from samcl.inference import video

    monkeypatch.setattr(video._Session, "__init__", _recording(video._Session.__init__, sessions))
    long = (frames[t % FRAMES] for t in range(40))
    for _ in SAMCL.create(backbone, device="cpu").track(long, PROMPTS):
        pass
    (session,) = sessions
    for outputs in session.output_dict_per_obj.values():  # the window, and the last frame's own outputs
        assert len(outputs["non_cond_frame_outputs"]) == backbone.memory_window + 1
        assert all("high_res_masks" not in out for out in outputs["non_cond_frame_outputs"].values())


def _recording(init, sessions):
    def wrapped(self, *args, **kwargs):
        init(self, *args, **kwargs)
        sessions.append(self)
    return wrapped


# ---------------------------------------------------------------------------------------------- bad input
def test_prompt_frame_past_the_end_is_one_error(backbone, frames):
    with pytest.raises(SamclError, match="frame 9 is past the video's last frame 7"):
        list(SAMCL.create(backbone, device="cpu").track(iter(frames), {9: PROMPTS[0]}))
    with pytest.raises(SamclError, match="no prompt"):
        list(SAMCL.create(backbone, device="cpu").track(iter(frames), {}))


# ---------------------------------------------------------------------------------------------- samcl track
@pytest.fixture
def store_on_checkpoint(meta, tmp_path, monkeypatch):
    """A store created on Meta's .pt as a user's image store is (the image model), one domain learned."""
    from helpers import toy_samples

    from samcl import TrainConfig, load_backbone
    from samcl.backbone.sam2_meta import HIERA_VARIANTS, HieraVariant

    monkeypatch.setitem(HIERA_VARIANTS, (16, (1, 2, 5, 1)), HieraVariant(1, (4, 7), (4, 4, 6, 3), image_size=128))
    checkpoint = tmp_path / "sam2.1_random.pt"
    torch.save({"model": meta.state_dict()}, checkpoint)
    samcl = SAMCL.create(load_backbone(checkpoint), tmp_path / "store", device="cpu")
    samcl.learn("red", toy_samples(4, (200, 30, 30), 0), TrainConfig(epochs=1, batch_size=2, progress=False))
    return tmp_path / "store"


def _write_frames(folder, frames):
    from PIL import Image

    folder.mkdir()
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{t:03d}.png")
    return folder


def test_samcl_track_writes_a_mask_per_frame_and_the_scores(store_on_checkpoint, frames, tmp_path, capsys):
    from samcl.cli import main

    folder = _write_frames(tmp_path / "frames", frames)
    code = main(["track", str(store_on_checkpoint), str(folder), "--point", "40,30", "--frame", "2",
                 "--object", "3", "--out", str(tmp_path / "out"), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((tmp_path / "out" / "scores.json").read_text())
    assert [row["frame"] for row in report["frames"]] == list(range(FRAMES))
    assert [sorted(row["objects"]) for row in report["frames"]] == [[]] * 2 + [["3"]] * (FRAMES - 2)
    written = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert written == [f"{t:05d}_3.png" for t in range(2, FRAMES)]
    from samcl.io import read_mask

    assert read_mask(tmp_path / "out" / "00002_3.png").shape == (HEIGHT, WIDTH)
    assert report["domain"] in ("red", "base")


def test_samcl_track_reads_a_video_file_with_pyav(store_on_checkpoint, frames, tmp_path, capsys):
    av = pytest.importorskip("av")
    from samcl.cli import main

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    assert main(["track", str(store_on_checkpoint), str(path), "--box", "20,10,60,50", "--out",
                 str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out").glob("*_1.png"))) == FRAMES
    assert "through 8 frames" in capsys.readouterr().out
    from samcl.io import open_frames

    assert open_frames(path).frame_size(3) == (WIDTH, HEIGHT)  # from the stream, before any frame is decoded
    assert main(["track", str(store_on_checkpoint), str(path), "--box", "20,10,200,50@3", "--out",
                 str(tmp_path / "out2")]) == 2
    assert "frame 3, object 1: box 20,10,200,50 reaches outside the 112x96 image" in capsys.readouterr().err


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file or directory"),
    ("frame", r"--frame 8: frame 8 is past the last frame of .* \(8 frames: 0..7\)"),
    ("empty", "no frame images"),
])
def test_samcl_track_bad_input_is_one_line_exit_2(case, message, frames, tmp_path, capsys):
    from samcl.cli import main

    folder = _write_frames(tmp_path / "frames", frames)
    video = {"missing": tmp_path / "nope.mp4", "frame": folder, "empty": tmp_path}[case]
    code = main(["track", str(tmp_path / "store"), str(video), "--point", "1,1", "--frame",
                 "8" if case == "frame" else "0", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and re.search(message, err[0]), err


def test_samcl_track_on_a_sam_store_is_one_line_exit_2(frames, tmp_path, capsys):
    from helpers import toy_samples

    from samcl import TrainConfig
    from samcl.cli import main

    sam = SAMCL.create("builtin:tiny-sam", tmp_path / "store", device="cpu")
    sam.learn("red", toy_samples(2, (200, 30, 30), 0), TrainConfig(epochs=1, batch_size=2, progress=False))
    folder = _write_frames(tmp_path / "frames", frames)
    code = main(["track", str(tmp_path / "store"), str(folder), "--point", "1,1", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "only SAM 2 and SAM 3 tracker bases can track" in err[0]


# ---------------------------------------------------------------------------------------------- J&F and the clips
def test_boundary_f_equals_davis_with_opencv_dilation():
    """davis2017-evaluation's f_measure dilates the boundary maps with cv2.dilate by skimage's disk: the same
    computation through OpenCV gives the same F on random masks."""
    cv2 = pytest.importorskip("cv2")
    from samcl.bench.davis import boundary_f, boundary_map

    rng = np.random.default_rng(0)
    for _ in range(30):
        h, w = (int(v) for v in rng.integers(20, 200, 2))
        a, b = (rng.random((h, w)) < 0.01 for _ in range(2))
        a, b = (cv2.dilate(m.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0 for m in (a, b))
        radius = int(np.ceil(0.008 * np.hypot(h, w)))
        y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
        disk = (x * x + y * y <= radius * radius).astype(np.uint8)
        pa, pb = boundary_map(a), boundary_map(b)
        dilated_a, dilated_b = (cv2.dilate(m.astype(np.uint8), disk) > 0 for m in (pa, pb))
        precision, recall = (pa & dilated_b).sum() / max(pa.sum(), 1), (pb & dilated_a).sum() / max(pb.sum(), 1)
        expected = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
        if pa.sum() and pb.sum():
            assert boundary_f(a, b) == pytest.approx(expected, abs=1e-12)


def test_j_and_f_on_known_cases():
    from samcl.bench.davis import boundary_f, jaccard, sequence_scores

    square = np.zeros((100, 100), bool)
    square[20:60, 20:60] = True
    moved = np.roll(square, 1, axis=1)  # a 1-pixel shift: within the 2-pixel bound (ceil(0.008 * 141.4))
    assert jaccard(square, square) == 1 and boundary_f(square, square) == 1
    assert jaccard(moved, square) == pytest.approx(39 * 40 / (41 * 40)) and boundary_f(moved, square) == 1
    far = np.roll(square, 30, axis=0)
    assert boundary_f(far, square) < 0.3 and jaccard(np.zeros_like(square), np.zeros_like(square)) == 1
    scores = sequence_scores([np.zeros_like(square), square, moved, far], [square] * 4)
    assert scores["J"] == pytest.approx((1 + 39 / 41) / 2)  # first and last frames left out, as DAVIS


def test_synthetic_clips_move_deform_and_are_deterministic():
    from samcl.data.synthetic.video import clip_samples, generate_clips

    first, again = generate_clips("polyps", 2, 0), generate_clips("polyps", 1, 0)
    assert all(np.array_equal(a, b) for a, b in zip(first[0].frames, again[0].frames))
    clip = first[0]
    assert len(clip.frames) == len(clip.masks) == 10 and all(m.any() for m in clip.masks)
    assert not np.array_equal(clip.masks[0], clip.masks[-1])
    assert all(clip.masks[0][int(y), int(x)] for x, y in clip.points)
    assert len(clip_samples(first)) == 20


def test_an_object_prompted_later_is_tracked_from_the_first_prompted_frame(backbone, frames):
    """Its prompted frame runs before the propagation (tests/test_video_offline.py: as Meta's offline predictor)."""
    prompts = {0: {1: Prompt.of(points=[[40, 30]])}, 3: {2: Prompt.of(box=[10, 10, 50, 50])}}
    out = list(SAMCL.create(backbone, device="cpu").track(iter(frames), prompts))
    assert [sorted(frame.objects) for frame in out] == [[1, 2]] * FRAMES
