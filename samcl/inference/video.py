"""Video: a prompt propagated through the frames of a video with the domain's module, on SAM 2's memory.

    tracker = VideoTracker(engine)                       # the engine's backbone is a Sam2VideoBackbone
    for frame in tracker.track(frames, {0: {1: Prompt.of(points=[[120, 80]])}}):
        frame.objects[1].mask, frame.objects[1].presence  # H x W bool, the object's presence probability
    for number, frame in tracker.track_videos([clip_a, clip_b], [prompts_a, prompts_b]): ...   # several at once

Per frame, in order (frames are consumed one at a time, as they come):
  prefix (blocks 0..s) -> pooled features -> [first prompted frame: the selector picks the video's module]
  -> suffix with the module's rows (heat from this frame's prompts; zero heat on frames without one)
  -> the three FPN levels into the transformers inference session's feature cache (`Sam2VideoBackbone.
     video_features`) -> ``Sam2VideoModel.forward(session, frame_idx)``: transformers' own memory attention,
     mask decoder, memory encoder and object pointers -> masks at the frame's size.
`VideoTracker.step` is that sequence for one frame of each of several videos (`Video`: one inference session
each): their prefix and suffix run as one batch with per-sample module rows (the image engine's mixed-domain
batch), then each video's memory part runs on its own session. `track`, `track_videos` and the server's CVAT
tracker route (`samcl.serve.cvat_tracker`) are loops over it.

Routing: once per video, on the first prompted frame it runs (the last prompted one going in reverse). The memory
holds features the module produced; a module switched mid-video would feed the memory attention features from a
different encoder. With `route_frames` the selector is asked about every frame too (`TrackedFrame.frame_domain`;
the pooled features are there anyway), so a caller can measure how often frames would route differently
(benchmarks/video.py reports it).

Directions (Meta's ``propagate_in_video``): "forward" from the first prompted frame to the end (earlier frames get
no objects); "reverse" from the last prompted frame back to frame 0 (``reverse=True``: memories and object
pointers are read from the frames after the current one); "both": forward, then reverse from the first prompted
frame on the same session, as Meta's predictor is used for a whole video (the reverse pass reads the forward
pass's outputs just after the prompted frame, which are kept for it). Tracking is causal in the direction of
travel: an object first prompted on a later frame has no mask before that frame going forward, so with "both" it
has none between the first prompted frame and its own (Meta's offline predictor, which sees every prompt before
it propagates, would fill them from the later prompt).

Memory bound: one decoded frame at a time (the caller's iterator streams them), the current frame's features,
each object's conditioning (prompted) frames, and the outputs of the last `Sam2VideoBackbone.memory_window`
tracked frames per object (15 for the official configs: 6 memories, 16 object pointers); older tracked
outputs are dropped, as they are never read again, and full-resolution masks are dropped once encoded. So memory
does not grow with the video's length beyond the prompted frames. "reverse" and "both" also hold the frames they
run backwards over (up to the last prompted frame, resp. before the first one) unless `frames` is a sequence
(a list is indexed, not copied).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

from .._renamed import renamed_attribute
from ..backbone import tokens as batch_ops
from ..errors import SamclError
from ..types import Prompt, PromptError
from .engine import Engine, InputPrompt

DIRECTIONS = ("forward", "reverse", "both")


@dataclass
class TrackedObject:
    """One object on one frame. mask: H x W bool at the frame's size; presence: the object's presence probability
    (sigmoid of SAM 2's object score); logits: the 1 x h x w low-res mask logits when asked for."""

    mask: np.ndarray
    presence: float
    logits: torch.Tensor | None = None
    score = renamed_attribute("score", "presence")  # the old spelling (deprecated): "score" is a predicted IoU


@dataclass
class TrackedFrame:
    """One frame's result. index: its 0-based number; objects: object id -> TrackedObject (empty before the first
    prompt); domain: the module the video runs ("base": none); frame_domain: what the selector would pick for
    this frame alone (None where nothing is routed: a forced domain, or before the first prompt)."""

    index: int
    objects: dict[int, TrackedObject] = field(default_factory=dict)
    domain: str | None = None
    frame_domain: str | None = None


class _Session(Sam2VideoInferenceSession):
    """transformers' inference session fed with features rather than frames: `num_frames` is the video's length
    when known (as Meta's and transformers' offline propagation see it), else unbounded (their streaming
    behaviour: 16 object pointers)."""

    def __init__(self, num_frames: int | None, device, dtype):
        super().__init__(inference_device=device, inference_state_device=device, video_storage_device=device,
                         dtype=dtype, max_vision_features_cache_size=1)
        self._frames = num_frames if num_frames else sys.maxsize

    @property
    def num_frames(self) -> int:
        return self._frames


@dataclass(eq=False)
class Video:
    """One video being tracked: its inference session, its module and its options (`VideoTracker.open`).
    chosen: the module index once routed (-1: base); keep: frames whose tracked outputs are kept for a reverse pass
    after the forward one ("both")."""

    session: _Session
    forced: int | None
    fallback: bool | None = None
    route_frames: bool = False
    return_logits: bool = False
    chosen: int | None = None
    keep: range = range(0)


class VideoTracker:
    """Tracks objects through videos with an engine's modules (see the module doc)."""

    def __init__(self, engine: Engine):
        """The engine's backbone becomes its video backbone when it is not one yet (`video_backbone_for`: a SAM 2
        base loaded again with its memory weights; a SAM base is an error)."""
        from ..backbone import video_backbone_for

        if engine.runtime != "torch":
            raise SamclError(f"tracking runs on the torch runtime, not {engine.runtime}")
        video = video_backbone_for(engine.backbone)
        if video is not engine.backbone:
            engine.use_backbone(video, "torch")
        self.engine = engine
        self.backbone = video

    def open(self, *, force: str | None = None, fallback: bool | None = None, num_frames: int | None = None,
             return_logits: bool = False, route_frames: bool = False) -> Video:
        """A new video's state (its own inference session); the arguments are `track`'s."""
        return Video(_Session(num_frames, self.engine.device, self.backbone.dtype),
                     self.engine.resolve(force, 1)[0], fallback, route_frames, return_logits)

    @torch.no_grad()
    def track(self, frames: Iterable, prompts_by_frame: Mapping[int, Mapping[int, Prompt]], *,
              force: str | None = None, fallback: bool | None = None, num_frames: int | None = None,
              return_logits: bool = False, route_frames: bool = False,
              direction: str = "forward") -> Iterator[TrackedFrame]:
        """Yield one `TrackedFrame` per frame of `frames` (H x W x 3 uint8 arrays or PIL images, consumed one by one).

        Arguments:
          prompts_by_frame: frame index -> object id -> Prompt (original pixels); at least one.
          force: run this domain's module ("base": none) instead of the selector's choice.
          fallback: as `Engine.route`.
          num_frames: the video's length when known (as offline propagation: equal to transformers' and Meta's
            over a whole video); None: a stream of unknown length (as transformers' streaming mode).
          return_logits: fill `TrackedObject.logits`.
          route_frames: also ask the selector about every frame (`TrackedFrame.frame_domain`; a measurement: the
            video keeps the module of its first prompted frame).
          direction: "forward", "reverse" or "both" (the module doc).

        Returns:
          (Iterator[TrackedFrame]): one per frame, in the order they run: "forward" every frame, those before the
          first prompted one empty; "reverse" the last prompted frame down to 0 (later frames are not read);
          "both" the forward frames, then the earlier ones from the first prompted frame down. Raises SamclError
          for no prompt, a prompt outside its frame, or a prompted frame past the last one.
        """
        runs = self.track_videos([frames], [prompts_by_frame], force=force, fallback=fallback,
                                 num_frames=[num_frames], return_logits=return_logits, route_frames=route_frames,
                                 direction=direction)
        yield from (frame for _, frame in runs)

    @torch.no_grad()
    def track_videos(self, videos: Sequence[Iterable], prompts: Sequence[Mapping[int, Mapping[int, Prompt]]], *,
                     force: str | Sequence[str | None] | None = None, fallback: bool | None = None,
                     num_frames: Sequence[int | None] | None = None, return_logits: bool = False,
                     route_frames: bool = False, direction: str = "forward") -> Iterator[tuple[int, TrackedFrame]]:
        """Several videos tracked together in `direction`, one `step` per frame position: one prefix and one suffix
        pass with each video's own module rows; each video's memory in its own session.

        Arguments:
          videos: one frame iterable each (of any lengths and frame sizes).
          prompts: one `prompts_by_frame` each.
          force: one domain for all, or one per video (None: the selector's pick for that video).
          num_frames: one length (or None) per video.
          fallback, return_logits, route_frames, direction: as `track`, for every video.

        Returns:
          (Iterator[tuple[int, TrackedFrame]]): (video number, frame) as they run. Forward: step t runs frame t of
          each video that has one. Reverse: step t runs frame (last prompted - t) of each video. Both: the forward
          steps, then step t runs frame (first prompted - 1 - t) of each. Each video's frames are its own
          `track`'s (up to float rounding).
        """
        if len(prompts) != len(videos):
            raise SamclError(f"{len(videos)} videos but {len(prompts)} prompt sets")
        forced = [force] * len(videos) if force is None or isinstance(force, str) else list(force)
        lengths = [None] * len(videos) if num_frames is None else list(num_frames)
        if len(forced) != len(videos) or len(lengths) != len(videos):
            raise SamclError(f"{len(videos)} videos: give force and num_frames per video")
        ranges = [_prompted_range(p, n, direction) for p, n in zip(prompts, lengths)]
        names = [f"video {j}: " if len(videos) > 1 else "" for j in range(len(videos))]
        states = [self.open(force=f, fallback=fallback, num_frames=n, return_logits=return_logits,
                            route_frames=route_frames) for f, n in zip(forced, lengths)]
        starts = [last if direction == "reverse" else first for first, last in ranges]
        ahead = [sorted(k for k, on in p.items() if on and k != start) for p, start in zip(prompts, starts)]
        held: list = [None] * len(videos)  # frames up to the last prompted one, indexable, where they are needed
        streams = {}
        for j, (video, (_, last)) in enumerate(zip(videos, ranges)):
            if direction == "reverse":
                held[j] = _first_frames(video, last + 1, names[j])
            elif ahead[j]:
                held[j], streams[j] = _read_ahead(video, last + 1, names[j])
            else:
                streams[j] = iter(video)
        ready = self._condition(states, starts, held, prompts, ahead)
        if direction == "reverse":
            yield from self._backwards(states, held, starts, prompts, ready)
            return
        before: list[list] = [[] for _ in videos]  # "both": the frames the backward pass runs, up to back_from
        back_from = [first - 1 for first, _ in ranges]
        if direction == "both":
            for j, (state, (first, _)) in enumerate(zip(states, ranges)):
                state.keep = range(first + 1, first + 1 + self.backbone.memory_window)
                if first > 0 and any(obj not in prompts[j][first] for p in prompts[j].values() for obj in p):
                    back_from[j] = first  # tracked there going forward: Meta's reverse pass tracks it again
        index = 0
        while streams:
            running = []
            for j in list(streams):
                image = next(streams[j], None)
                first, last = ranges[j]
                if image is None:
                    del streams[j]
                    if index <= last:
                        raise SamclError(f"{names[j]}frame {last} is past the video's last frame {index - 1}")
                    continue
                if direction == "both" and index <= back_from[j]:
                    before[j].append(image)  # before the first prompted frame: not even encoded yet
                if index >= first:
                    running.append((j, ready.pop(j) if index == first and j in ready else image))
                elif direction == "forward":
                    yield j, TrackedFrame(index)
            if running:
                frames = self.step([states[j] for j, _ in running], [index] * len(running),
                                   [image for _, image in running], [prompts[j].get(index) for j, _ in running])
                yield from ((j, frame) for (j, _), frame in zip(running, frames) if index != back_from[j])
            index += 1
        if direction == "both":
            for state in states:
                state.keep = range(0)
            yield from self._backwards(states, before, back_from, prompts, {}, release=True)

    def _backwards(self, videos: list[Video], frames: list[Sequence], starts: list[int], prompts: Sequence[Mapping],
                   ready: dict, *, release: bool = False) -> Iterator[tuple[int, TrackedFrame]]:
        """Step t runs frame starts[j] - t of each video that has one, in reverse (`ready`: a video's start frame,
        already prepared). release: each frame is let go once run (the held frames of "both" are our own list)."""
        for t in range(max(starts, default=-1) + 1):
            running = [j for j, start in enumerate(starts) if start - t >= 0]
            indices = [starts[j] - t for j in running]
            images = [ready.pop(j) if t == 0 and j in ready else frames[j][index] for j, index in zip(running, indices)]
            if release:
                for j, index in zip(running, indices):
                    frames[j][index] = None
            out = self.step([videos[j] for j in running], indices, images,
                            [prompts[j].get(index) for j, index in zip(running, indices)], reverse=True)
            yield from zip(running, out)

    def _condition(self, videos: list[Video], starts: list[int], frames: list, prompts: Sequence[Mapping],
                   ahead: list[list[int]]) -> dict:
        """Before the propagation, each video's prompted frames other than its start (`ahead`), as Meta's
        add_new_points_or_box before propagate_in_video: every object's conditioning frames are in its memory from
        the first frame tracked. A video is routed on its start frame first (its module encodes them);
        -> {video number: its start frame, prepared} for the step that runs it."""
        needing = [j for j, frames_ahead in enumerate(ahead) if frames_ahead]
        if not needing:
            return {}
        prepared = self._prepare([frames[j][starts[j]] for j in needing])
        self._route([videos[j] for j in needing], prepared)
        for j in needing:  # object indices in the order of their first prompt, as without frames run ahead
            for index in sorted(prompts[j]):
                for obj in prompts[j][index]:
                    videos[j].session.obj_id_to_idx(obj)
        for n in range(max(len(ahead[j]) for j in needing)):
            group = [j for j in needing if n < len(ahead[j])]
            indices = [ahead[j][n] for j in group]
            self._conditioning_outputs([videos[j] for j in group], indices,
                                       [frames[j][index] for j, index in zip(group, indices)],
                                       [prompts[j][index] for j, index in zip(group, indices)])
        return dict(zip(needing, prepared))

    def _conditioning_outputs(self, videos: Sequence[Video], indices: Sequence[int], images: Sequence,
                              prompts: Sequence[Mapping[int, Prompt]]) -> None:
        """Frame `indices[j]` of each video: the conditioning outputs of the objects prompted there
        (`_prompted_alone`), their features in one batch through each video's module."""
        prepared = self._prepare(images)
        inputs = [{obj: self._input(p, item, index, obj) for obj, p in prompt.items()}
                  for prompt, item, index in zip(prompts, prepared, indices)]
        features = self._features(prepared, [v.chosen for v in videos], inputs)
        for j, (video, index) in enumerate(zip(videos, indices)):
            self._prompted_alone(video, index, _one(features, j), inputs[j])

    def _prompted_alone(self, video: Video, index: int, features: dict, inputs: Mapping[int, InputPrompt]) -> None:
        """The objects prompted on frame `index` as Meta's add_new_points_or_box runs each: its conditioning output
        and memory made without the video's other objects, in a session of their own, then put into the video's.
        (transformers' forward would track the other objects on the frame too, and encode all the frame's memories
        as masks from points once one object is prompted; Meta encodes a tracked object's as a tracked one.)"""
        alone = _Session(None, self.engine.device, self.backbone.dtype)
        alone.cache.cache_vision_features(index, features)
        self._add_prompts(alone, index, inputs)
        self.backbone.video(alone, frame_idx=index)
        for obj in inputs:
            source, target = alone.obj_id_to_idx(obj), video.session.obj_id_to_idx(obj)
            out = alone.output_dict_per_obj[source]["cond_frame_outputs"][index]
            out.pop("high_res_masks", None)  # its memory is encoded
            video.session.output_dict_per_obj[target]["cond_frame_outputs"][index] = out
            video.session.point_inputs_per_obj[target][index] = alone.point_inputs_per_obj[source][index]

    # ------------------------------------------------------------------ one frame of each video
    def step(self, videos: Sequence[Video], indices: Sequence[int], images: Sequence,
             prompts: Sequence[Mapping[int, Prompt] | None], *, reverse: bool = False) -> list[TrackedFrame]:
        """Frame `indices[j]` of each video `videos[j]` (its image, or an already `PreparedImage`, and the
        prompts on it by object id, or None), run as one batch: the module each video routed to on its first
        prompted frame. Returns one `TrackedFrame` each."""
        engine = self.engine
        prepared = self._prepare(images)
        frame_picks = self._route(videos, prepared)
        inputs = [{obj: self._input(p, item, index, obj) for obj, p in (prompt or {}).items()}
                  for prompt, item, index in zip(prompts, prepared, indices)]
        features = self._features(prepared, [v.chosen for v in videos], inputs)
        frames = []
        for j, (video, index, item) in enumerate(zip(videos, indices, prepared)):
            mine = _one(features, j)
            video.session.cache.cache_vision_features(index, mine)
            fresh = {obj: p for obj, p in inputs[j].items() if not _conditioned(video.session, obj, index)}
            if fresh and any(obj not in fresh for obj in video.session.obj_ids):  # others are tracked on this frame
                self._prompted_alone(video, index, mine, fresh)
            elif fresh:
                self._add_prompts(video.session, index, fresh)
            output = self.backbone.video(video.session, frame_idx=index, reverse=reverse)
            self._forget_old(video, index, reverse)
            frames.append(self._frame(index, output, item.geometry, engine.module_set.domain_name(video.chosen),
                                      frame_picks[j], video.return_logits))
        return frames

    def _prepare(self, images: Sequence) -> list:
        from .prefix_cache import PreparedImage

        fresh = [image for image in images if not isinstance(image, PreparedImage)]
        computed = iter(self.engine.prepare(fresh, keep=False) if fresh else [])
        return [image if isinstance(image, PreparedImage) else next(computed) for image in images]

    def _route(self, videos: Sequence[Video], prepared: Sequence) -> list[str | None]:
        """Each video's module, picked once (on its first routed frame), in one selector call per fallback
        setting; -> what the selector picks for this frame alone where `route_frames` (else None)."""
        engine = self.engine
        picks: list[str | None] = [None] * len(videos)
        asked = [j for j, v in enumerate(videos) if v.forced is None and (v.chosen is None or v.route_frames)]
        for fallback in {videos[j].fallback for j in asked}:
            group = [j for j in asked if videos[j].fallback == fallback]
            chosen, _ = engine.route(torch.stack([prepared[j].pooled for j in group]), None, fallback)
            for j, pick in zip(group, chosen):
                picks[j] = engine.module_set.domain_name(pick) if videos[j].route_frames else None
                videos[j].chosen = pick if videos[j].chosen is None else videos[j].chosen
        for video in videos:
            video.chosen = video.forced if video.forced is not None else video.chosen
        return picks

    def _input(self, prompt: Prompt, prepared, index: int, obj: int) -> InputPrompt:
        height, width = prepared.size
        try:
            prompt.check(width, height)
        except PromptError as exc:  # its frame's size is known once the frame is read: say which
            raise PromptError(exc.code, f"frame {index}, object {obj}: {exc}", field=exc.field) from None
        return InputPrompt.of(prompt, prepared.geometry, self.engine.device)

    def _features(self, prepared: Sequence, chosen: list[int], inputs: list[dict]) -> dict:
        """The frames' adapted features, each through its video's module: heat of every object's prompt on its
        frame (their elementwise maximum: one object's heat is exactly the image path's), zero heat without one."""
        engine = self.engine
        tokens = batch_ops.stack([item.tokens for item in prepared])
        if all(engine.module_set.module_for(k) is None for k in chosen):
            return self.backbone.video_features(tokens, engine.start_block, None)
        heat = torch.zeros(len(prepared), *self.backbone.site.grid, device=engine.device)
        for j, objects in enumerate(inputs):
            if objects:
                heat[j] = engine.heat(list(objects.values())).amax(dim=0)
        return self.backbone.video_features(tokens, engine.start_block, engine.injection(chosen, heat))

    @staticmethod
    def _add_prompts(session: _Session, index: int, inputs: Mapping[int, InputPrompt]) -> None:
        """As Sam2VideoProcessor.add_inputs_to_inference_session (and Meta's add_new_points_or_box): a box becomes
        two points labelled 2 and 3 before the clicks; coordinates are model-input pixels."""
        for obj, prompt in inputs.items():
            points, labels = [], []
            if prompt.box is not None:
                points.append(prompt.box.reshape(1, 2, 2))
                labels.append(torch.tensor([[2, 3]], dtype=torch.int32, device=prompt.box.device))
            if prompt.points is not None:
                points.append(prompt.points)
                labels.append(prompt.labels.to(torch.int32))
            obj_idx = session.obj_id_to_idx(obj)
            session.add_point_inputs(obj_idx, index, {"point_coords": torch.cat(points, dim=1)[None].float(),
                                                      "point_labels": torch.cat(labels, dim=1)[None]})
            session.remove_mask_inputs(obj_idx, index)
        session.obj_with_new_inputs = list(inputs)

    def _forget_old(self, video: Video, index: int, reverse: bool) -> None:
        """Drop what the model never reads again (see the module doc's memory bound): tracked outputs more than
        the memory window behind the current frame in the direction of travel (except `video.keep`)."""
        window = self.backbone.memory_window
        session = video.session

        def stale(t: int) -> bool:
            return (t > index + window if reverse else t < index - window) and t not in video.keep

        for outputs in session.output_dict_per_obj.values():
            tracked = outputs["non_cond_frame_outputs"]
            for old in [t for t in tracked if stale(t)]:
                del tracked[old]
            for kind in ("cond_frame_outputs", "non_cond_frame_outputs"):
                if index in outputs[kind]:
                    outputs[kind][index].pop("high_res_masks", None)
        for per_obj in session.frames_tracked_per_obj.values():
            for old in [t for t in per_obj if stale(t)]:
                del per_obj[old]

    @staticmethod
    def _frame(index, output, geometry, domain, frame_domain, return_logits) -> TrackedFrame:
        logits = output.pred_masks.float()  # objects x 1 x h x w
        full = geometry.logits_to_original(logits)[:, 0] > 0
        scores = torch.sigmoid(output.object_score_logits.float().reshape(-1)).tolist()
        objects = {int(obj): TrackedObject(full[j].cpu().numpy(), float(scores[j]),
                                           logits[j].cpu() if return_logits else None)
                   for j, obj in enumerate(output.object_ids)}
        return TrackedFrame(index, objects, domain, frame_domain)


def _prompted_range(prompts_by_frame: Mapping[int, Mapping], num_frames: int | None, direction: str):
    """(first, last) prompted frame, after the checks every call makes."""
    if direction not in DIRECTIONS:
        raise SamclError(f"direction {direction!r}: expected one of {', '.join(DIRECTIONS)}")
    if not prompts_by_frame or not any(prompts_by_frame.values()):
        raise SamclError("no prompt: give at least one object's prompt on one frame")
    if min(prompts_by_frame) < 0:
        raise SamclError(f"frame {min(prompts_by_frame)}: frames are numbered from 0")
    if num_frames is not None and max(prompts_by_frame) >= num_frames:
        raise SamclError(f"frame {max(prompts_by_frame)} is past the video's last frame {num_frames - 1}")
    prompted = [k for k, v in prompts_by_frame.items() if v]
    return min(prompted), max(prompted)


def _one(features: dict, j: int) -> dict:
    """The j-th frame's FPN levels of a batch's `video_features`."""
    return {name: [level[:, j:j + 1] for level in levels] for name, levels in features.items()}


def _conditioned(session: _Session, obj: int, index: int) -> bool:
    """Whether `obj`'s prompts on frame `index` already ran (`VideoTracker._condition`)."""
    return obj in session.obj_ids and index in session.output_dict_per_obj[session.obj_id_to_idx(obj)][
        "cond_frame_outputs"]


def _read_ahead(frames: Iterable, count: int, name: str) -> tuple[Sequence, Iterator]:
    """(the first `count` frames, indexable; every frame from the first on): a sequence is indexed; an iterator's
    first frames are held until the second runs over them (each let go as it passes)."""
    if isinstance(frames, Sequence):
        return _first_frames(frames, count, name), iter(frames)
    stream = iter(frames)
    held = _first_frames(stream, count, name)

    def passing():
        for n in range(len(held)):
            image, held[n] = held[n], None
            yield image
        yield from stream

    return held, passing()


def _first_frames(frames: Iterable, count: int, name: str = "") -> Sequence:
    """The first `count` frames, indexable: a sequence as it is, else read (and held) from the iterator (a list
    the caller's frames can be let go from). name: the video's, for the error."""
    if isinstance(frames, Sequence):
        held = frames
    else:
        held = []
        for image in frames:
            held.append(image)
            if len(held) == count:
                break
    if len(held) < count:
        raise SamclError(f"{name}frame {count - 1} is past the video's last frame {len(held) - 1}")
    return held
