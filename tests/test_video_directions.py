"""Backward and two-way tracking equal Meta's SAM2VideoPredictor.propagate_in_video(reverse=True) (alone, and after
the forward pass on the same state) and transformers' propagate_in_video_iterator(reverse=True), and several videos
stepped together equal each one tracked alone (tests/test_video.py builds the random tiny SAM 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import assert_together_equals_alone
from test_video import FRAMES, HEIGHT, PROMPTS, TOLERANCE, WIDTH, _pixels, backbone, frames, learned, meta  # noqa: F401
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

from samcl import SAMCL, Prompt, SamclError

PROMPTED = 5
AT_FIVE = {PROMPTED: PROMPTS[0]}


def _meta(meta, pixels, monkeypatch, passes) -> list[tuple[int, dict[int, torch.Tensor]]]:
    """Meta's predictor, prompts added on PROMPTED, then propagate_in_video once per pass (reverse flags in
    `passes`) on the same state: (frame, low-res logits per object) in the order it yields them."""
    import sam2.sam2_video_predictor as predictor

    monkeypatch.setattr(predictor, "load_video_frames", lambda **kwargs: (pixels, HEIGHT, WIDTH))
    out = []
    with torch.inference_mode():
        state = meta.init_state("frames stood in")
        for obj, prompt in AT_FIVE[PROMPTED].items():
            meta.add_new_points_or_box(state, PROMPTED, obj, points=prompt.points, labels=prompt.labels,
                                       box=prompt.box)
        for reverse in passes:
            for index, ids, _ in meta.propagate_in_video(state, reverse=reverse):
                per_obj = {}
                for obj in ids:
                    outputs = state["output_dict_per_obj"][state["obj_id_to_idx"][obj]]
                    kind = "cond_frame_outputs" if index in outputs["cond_frame_outputs"] else "non_cond_frame_outputs"
                    per_obj[obj] = outputs[kind][index]["pred_masks"][0]
                out.append((index, per_obj))
    return out


def _transformers(model, pixels) -> list[tuple[int, dict[int, torch.Tensor]]]:
    """transformers' offline session, the processor's inputs on PROMPTED, propagated with reverse=True."""
    session = Sam2VideoInferenceSession(video=pixels, video_height=HEIGHT, video_width=WIDTH, dtype=torch.float32)
    scale = torch.tensor([pixels.shape[-1] / WIDTH, pixels.shape[-2] / HEIGHT])
    for obj, prompt in AT_FIVE[PROMPTED].items():
        points = [] if prompt.box is None else [torch.from_numpy(prompt.box).view(2, 2)]
        labels = [] if prompt.box is None else [torch.tensor([2, 3])]
        points.append(torch.from_numpy(prompt.points))
        labels.append(torch.from_numpy(prompt.labels))
        session.add_point_inputs(session.obj_id_to_idx(obj), PROMPTED, {
            "point_coords": (torch.cat(points) * scale)[None, None],
            "point_labels": torch.cat(labels).to(torch.int32)[None, None]})
    session.obj_with_new_inputs = list(AT_FIVE[PROMPTED])
    model(session, frame_idx=PROMPTED)  # the prompted frame first, as the processor's users do
    return [(o.frame_idx, {obj: o.pred_masks[j] for j, obj in enumerate(o.object_ids)})
            for o in model.propagate_in_video_iterator(session, start_frame_idx=PROMPTED, reverse=True)]


def _assert_same(ours, theirs):
    assert [frame.index for frame in ours] == [index for index, _ in theirs]
    for frame, (_, expected) in zip(ours, theirs):
        assert sorted(frame.objects) == sorted(expected) == [1, 7]
        for obj, logits in expected.items():
            difference = (frame.objects[obj].logits - logits.float()).abs().max().item()
            assert difference <= TOLERANCE, (frame.index, obj, difference)


def _ours(backbone, frames, direction, source=iter):
    samcl = SAMCL.create(backbone, device="cpu")
    return list(samcl.track(source(frames), AT_FIVE, num_frames=FRAMES, return_logits=True, direction=direction))


def test_reverse_equals_metas_propagate_in_video_reverse(backbone, meta, frames, monkeypatch):
    expected = _meta(meta, _pixels(backbone, frames), monkeypatch, [True])
    assert [index for index, _ in expected] == list(range(PROMPTED, -1, -1))
    _assert_same(_ours(backbone, frames, "reverse"), expected)
    _assert_same(_ours(backbone, frames, "reverse", source=list), expected)  # a list is indexed, not read ahead


def test_reverse_equals_transformers_reverse_propagation(backbone, frames):
    _assert_same(_ours(backbone, frames, "reverse"), _transformers(backbone.video, _pixels(backbone, frames)))


def test_both_directions_equal_metas_forward_then_reverse_on_one_state(backbone, meta, frames, monkeypatch):
    """Meta's usual whole-video use: forward from the prompt, then reverse on the same state (its reverse pass
    reads the forward pass's memories just after the prompted frame, which samcl keeps for it). Meta yields the
    prompted frame again at the start of its reverse pass; samcl yields each frame once."""
    expected = _meta(meta, _pixels(backbone, frames), monkeypatch, [False, True])
    expected = [item for n, item in enumerate(expected) if n <= FRAMES - 1 - PROMPTED or item[0] != PROMPTED]
    ours = _ours(backbone, frames, "both")
    assert [f.index for f in ours] == [*range(PROMPTED, FRAMES), *range(PROMPTED - 1, -1, -1)]
    _assert_same(ours, expected)
    alone = _ours(backbone, frames, "reverse")  # without the forward memories, the reverse pass differs
    assert max((a.objects[1].logits - b.objects[1].logits).abs().max().item()
               for a, b in zip(alone[1:], ours[FRAMES - PROMPTED:])) > 1e-4


def test_reverse_holds_only_the_memory_window(backbone, frames, monkeypatch):
    from samcl.inference import video

    sessions = []
    init = video._Session.__init__
    monkeypatch.setattr(video._Session, "__init__", lambda self, *a, **k: init(self, *a, **k) or sessions.append(self))
    long = [frames[t % FRAMES] for t in range(40)]
    out = list(SAMCL.create(backbone, device="cpu").track(long, {39: PROMPTS[0]}, direction="reverse"))
    assert [f.index for f in out] == list(range(39, -1, -1)) and all(f.objects for f in out)
    for outputs in sessions[0].output_dict_per_obj.values():
        assert len(outputs["non_cond_frame_outputs"]) == backbone.memory_window + 1


def test_a_direction_past_the_stream_or_unknown_is_one_error(backbone, frames):
    samcl = SAMCL.create(backbone, device="cpu")
    with pytest.raises(SamclError, match="frame 9 is past the video's last frame 7"):
        list(samcl.track(iter(frames), {9: PROMPTS[0]}, direction="reverse"))
    with pytest.raises(SamclError, match="direction 'sideways'"):
        list(samcl.track(iter(frames), PROMPTS, direction="sideways"))


# ---------------------------------------------------------------------------------------------- several videos
def test_videos_stepped_together_equal_each_alone_with_mixed_domains(learned, frames):
    """Three videos of different lengths, sizes and first prompted frames, one on the learned module and two on the
    base, in one batch per step: each video's frames are its own track's."""
    small = [frame[:80, :90] for frame in frames[:6]]
    flipped = [np.ascontiguousarray(frame[:, ::-1]) for frame in frames]
    videos = [frames, small, flipped]
    prompts = [PROMPTS, {2: {3: Prompt.of(box=[10, 10, 60, 50])}}, {0: {1: Prompt.of(points=[[60, 40]])}}]
    force = ["red", "base", None]
    together: dict[int, list] = {0: [], 1: [], 2: []}
    calls = []
    step = learned.tracker().step
    tracker = learned.tracker()
    tracker.step = lambda videos, *a, **k: calls.append(len(videos)) or step.__func__(tracker, videos, *a, **k)
    learned.tracker = lambda: tracker
    try:
        for number, frame in learned.track_videos(videos, prompts, force=force, return_logits=True):
            together[number].append(frame)
    finally:
        del learned.tracker
    assert calls == [2, 2, 3, 3, 3, 3, 2, 2]  # video 1 starts at frame 2 and ends after frame 5
    assert_together_equals_alone(learned, videos, prompts, force, together)
    assert together[0][0].domain == "red" and together[1][2].domain == "base"


@pytest.mark.parametrize("direction", ["reverse", "both"])
def test_videos_stepped_together_backwards_equal_each_alone(direction, learned, frames):
    """Reverse and both ways for several videos at once: each video's frames, in their order, are its own
    `track(direction=...)`'s; the backward steps run every video that still has a frame in one batch."""
    small = [frame[:80, :90] for frame in frames[:6]]
    flipped = [np.ascontiguousarray(frame[:, ::-1]) for frame in frames]
    videos = [frames, small, flipped]
    prompts = [{5: PROMPTS[0]}, {2: {3: Prompt.of(box=[10, 10, 60, 50])}, 4: {3: Prompt.of(points=[[30, 20]])}},
               {0: {1: Prompt.of(points=[[60, 40]])}, 6: {2: Prompt.of(points=[[20, 70]])}}]
    force = ["red", "base", None]
    together: dict[int, list] = {0: [], 1: [], 2: []}
    calls = []
    tracker = learned.tracker()
    step = tracker.step
    tracker.step = lambda videos, indices, *a, **k: calls.append(list(indices)) or step(videos, indices, *a, **k)
    learned.tracker = lambda: tracker
    try:
        for number, frame in learned.track_videos([iter(v) for v in videos], prompts, force=force,
                                                  return_logits=True, direction=direction):
            together[number].append(frame)
    finally:
        del learned.tracker
    if direction == "reverse":  # from each video's last prompted frame (5, 4, 6) down
        assert calls == [[5, 4, 6], [4, 3, 5], [3, 2, 4], [2, 1, 3], [1, 0, 2], [0, 1], [0]]
    else:  # forward from the first prompted frames (5, 2, 0), then back from the frame before them
        assert calls[:6] == [[0], [1], [2, 2], [3, 3], [4, 4], [5, 5, 5]]
        assert calls[-5:] == [[4, 1], [3, 0], [2], [1], [0]]
    for number, video in enumerate(videos):
        alone = list(learned.track(iter(video), prompts[number], force=force[number], return_logits=True,
                                   direction=direction))
        assert [f.index for f in together[number]] == [f.index for f in alone]
        run = len(video) if direction == "both" else max(prompts[number]) + 1
        assert sorted(f.index for f in alone) == list(range(run))  # every frame once, each with its objects
        for ours, theirs in zip(together[number], alone):
            assert ours.domain == theirs.domain and sorted(ours.objects) == sorted(theirs.objects)
            assert theirs.objects
            for obj in theirs.objects:
                assert (ours.objects[obj].logits - theirs.objects[obj].logits).abs().max().item() <= 1e-5
    assert together[0][0].domain == "red" and together[1][0].domain == "base"


def test_a_prompt_past_the_end_of_a_stream_is_one_error_not_ignored(backbone, frames):
    """A stream of unknown length: a later prompted frame past its end is found when the stream ends."""
    samcl = SAMCL.create(backbone, device="cpu")
    with pytest.raises(SamclError, match="frame 12 is past the video's last frame 7"):
        list(samcl.track(iter(frames), {0: PROMPTS[0], 12: {1: Prompt.of(points=[[5, 5]])}}))


def test_a_prompt_outside_its_frame_names_the_frame_and_object(backbone, frames):
    samcl = SAMCL.create(backbone, device="cpu")
    with pytest.raises(SamclError, match=r"frame 3, object 2: point 500,1 lies outside the 112x96 image"):
        list(samcl.track(iter(frames), {0: PROMPTS[0], 3: {2: Prompt.of(points=[[500, 1]])}}))
