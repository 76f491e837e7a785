"""Objects prompted on different frames: every object's conditioning (prompted) frames are in its memory before the
propagation, as Meta's offline SAM2VideoPredictor has them (add_new_points_or_box on each prompted frame, then
propagate_in_video), in every direction; samcl's masks equal Meta's (tests/test_video.py builds the random tiny
SAM 2 and Meta's predictor from the same weights)."""

from __future__ import annotations

import torch
from helpers import assert_together_equals_alone
from test_video import FRAMES, HEIGHT, TOLERANCE, WIDTH, _pixels, backbone, frames, learned, meta  # noqa: F401

from samcl import SAMCL, Prompt

#: object 1 clicked on frame 1 (SAM 2's multimask path), object 2 boxed on frame 5
LATER = {1: {1: Prompt.of(points=[[40, 30]])}, 5: {2: Prompt.of(box=[55, 30, 100, 85])}}


def _meta(meta, pixels, monkeypatch, passes, prompts=LATER, start=None) -> dict[int, dict[int, torch.Tensor]]:
    """Meta's predictor as a user runs it on a whole video: add_new_points_or_box for every prompt, then
    propagate_in_video once per pass (reverse flags in `passes`; `start`: its start_frame_idx, None: the earliest
    prompted frame) on the same state. Returns per frame what the user keeps: the last logits it yielded per object
    (its reverse pass yields the earliest prompted frame again, tracked backwards for objects not prompted there)."""
    import sam2.sam2_video_predictor as predictor

    monkeypatch.setattr(predictor, "load_video_frames", lambda **kwargs: (pixels, HEIGHT, WIDTH))
    # Meta stores memories in bfloat16 (its users run it under CUDA's autocast): on the CPU a memory with no object
    # pointer in it would reach float32 layers as bfloat16. Cast as torch.cat casts it when pointers are in it
    # (and as transformers casts every memory to the session's dtype).
    attention = meta.memory_attention.forward
    monkeypatch.setattr(meta.memory_attention, "forward", lambda memory, **kw: attention(memory=memory.float(), **kw))
    out: dict[int, dict[int, torch.Tensor]] = {}
    with torch.inference_mode():
        state = meta.init_state("frames stood in")
        for index, objects in prompts.items():
            for obj, prompt in objects.items():
                meta.add_new_points_or_box(state, index, obj, points=prompt.points, labels=prompt.labels,
                                           box=prompt.box)
        for reverse in passes:
            for index, ids, _ in meta.propagate_in_video(state, start_frame_idx=start, reverse=reverse):
                for obj in ids:
                    outputs = state["output_dict_per_obj"][state["obj_id_to_idx"][obj]]
                    kind = "cond_frame_outputs" if index in outputs["cond_frame_outputs"] else "non_cond_frame_outputs"
                    out.setdefault(index, {})[obj] = outputs[kind][index]["pred_masks"][0].float()
    return out


def _ours(samcl, frames, direction, prompts=LATER, source=iter, **options) -> list:
    return list(samcl.track(source(frames), prompts, num_frames=FRAMES, return_logits=True, direction=direction,
                            **options))


def _differences(ours, theirs) -> dict[tuple[int, int], float]:
    """(frame, object) -> max |logit difference|, after checking each frame comes once with Meta's objects."""
    assert len({frame.index for frame in ours}) == len(ours)
    assert sorted(frame.index for frame in ours if frame.objects) == sorted(theirs)
    by_index = {frame.index: frame for frame in ours}
    out = {}
    for index, expected in theirs.items():
        assert sorted(by_index[index].objects) == sorted(expected), index
        for obj, logits in expected.items():
            out[index, obj] = (by_index[index].objects[obj].logits - logits).abs().max().item()
    return out


def _assert_equal(ours, theirs):
    differences = _differences(ours, theirs)
    worst = max(differences, key=differences.get)
    assert differences[worst] <= TOLERANCE, (worst, differences[worst])


def test_both_ways_equal_metas_offline_predictor_for_objects_prompted_on_different_frames(
        backbone, meta, frames, monkeypatch):
    """The whole video, as Meta's user runs it: object 2 (prompted on frame 5) has Meta's masks on frames 0-4
    too, object 1 (prompted on frame 1) on frame 0, and each frame is yielded once with the final logits."""
    expected = _meta(meta, _pixels(backbone, frames), monkeypatch, [False, True])
    assert sorted(expected) == list(range(FRAMES)) and all(sorted(e) == [1, 2] for e in expected.values())
    ours = _ours(SAMCL.create(backbone, device="cpu"), frames, "both")
    assert [frame.index for frame in ours] == [*range(2, FRAMES), *range(1, -1, -1)]
    _assert_equal(ours, expected)
    assert ours[0].index == 2 and ours[0].objects[2].mask.any()  # object 2 before its prompt


def test_forward_equals_metas_propagate_in_video_from_the_earliest_prompt(backbone, meta, frames, monkeypatch):
    """Forward over a known video: Meta fills every object from the earliest prompted frame on; the object
    prompted on frame 5 then also carries its tracked frames 1-4 in memory on frames 6 and 7."""
    expected = _meta(meta, _pixels(backbone, frames), monkeypatch, [False])
    assert sorted(expected) == list(range(1, FRAMES))
    samcl = SAMCL.create(backbone, device="cpu")
    _assert_equal(_ours(samcl, frames, "forward"), expected)
    _assert_equal(_ours(samcl, frames, "forward", source=list), expected)  # a sequence is indexed, not read ahead


def test_reverse_equals_metas_reverse_propagation_from_the_last_prompt(backbone, meta, frames, monkeypatch):
    """Back from frame 5 (Meta's start_frame_idx=5, reverse=True): object 1, prompted on frame 1, is tracked on
    frames 5-2 from its prompted frame's memory, which is ahead of it in time."""
    expected = _meta(meta, _pixels(backbone, frames), monkeypatch, [True], start=5)
    assert sorted(expected) == list(range(6)) and all(sorted(e) == [1, 2] for e in expected.values())
    _assert_equal(_ours(SAMCL.create(backbone, device="cpu"), frames, "reverse"), expected)


# ------------------------------------------------------------------------------ frames held, videos batched, routing
def test_frames_are_read_ahead_to_the_last_prompted_one_then_streamed_and_let_go(backbone, frames):
    """A 40-frame stream prompted on frames 1 and 5: frames 0-5 are read before the first frame is yielded, then one
    more frame per frame; a frame read ahead is let go once the propagation has passed it."""
    import weakref

    read, alive = [], []

    def stream():
        for t in range(40):
            image = frames[t % FRAMES].copy()
            read.append(t)
            alive.append(weakref.ref(image))
            yield image

    seen = []
    for frame in SAMCL.create(backbone, device="cpu").track(stream(), LATER):
        seen.append((frame.index, len(read)))
        assert not any(ref() is not None for ref in alive[:max(frame.index - 1, 0)]), frame.index
    assert seen == [(t, max(6, t + 1)) for t in range(40)]


def test_videos_with_frames_run_ahead_stepped_together_equal_each_alone(learned, frames):
    """Two videos, each with a frame run ahead (one on the learned module, one on the base): their prompted frames
    run ahead in one batch, and each video's frames equal its own `track`'s."""
    videos = [frames, [frame[:80, :90] for frame in frames[:6]]]
    prompts = [LATER, {0: {1: Prompt.of(points=[[30, 20]])}, 3: {2: Prompt.of(box=[10, 10, 60, 50])}}]
    force = ["red", "base"]
    tracker = learned.tracker()
    batches = []
    condition = tracker._conditioning_outputs
    tracker._conditioning_outputs = lambda videos, *a: batches.append(len(videos)) or condition(videos, *a)
    learned.tracker = lambda: tracker
    try:
        together = {0: [], 1: []}
        for number, frame in learned.track_videos([iter(v) for v in videos], prompts, force=force,
                                                  return_logits=True):
            together[number].append(frame)
    finally:
        del learned.tracker
    assert batches == [2]
    assert_together_equals_alone(learned, videos, prompts, force, together)
    for number in range(len(videos)):
        assert {frame.domain for frame in together[number] if frame.objects} == {force[number]}
    assert sorted(together[1][0].objects) == [1, 2]  # object 2, prompted on frame 3, from frame 0 on


def test_a_video_with_frames_run_ahead_is_routed_once_on_its_start_frame(learned, frames, monkeypatch):
    """The module that encodes the frames run ahead is the one the selector picks on the frame the run starts from
    (the first prompted one; the last going in reverse), asked once per video."""
    engine = learned.engine
    asked = []
    route = engine.route
    monkeypatch.setattr(engine, "route", lambda pooled, *a: asked.append(pooled.clone()) or route(pooled, *a))
    for direction, start in (("both", 1), ("forward", 1), ("reverse", 5)):
        asked.clear()
        out = list(learned.track(iter(frames), LATER, direction=direction))
        expected = engine.prepare([frames[start]], keep=False)[0].pooled
        assert len(asked) == 1 and torch.allclose(asked[0][0], expected), direction
        assert len({frame.domain for frame in out if frame.objects}) == 1
