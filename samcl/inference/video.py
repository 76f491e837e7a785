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

Prompted frames first (Meta's offline ``SAM2VideoPredictor``: ``add_new_points_or_box`` on every prompted frame,
then ``propagate_in_video``): before the propagation, every prompted frame other than the one the run starts
from is run for the objects prompted there alone (`VideoTracker._prompted_alone`: their conditioning outputs and
memories; the video is routed on its start frame first), so from the first frame tracked every object's memory
holds all its conditioning frames, which the memory attention reads whatever their time direction (object
pointers: only those on the side already travelled, as Meta's and transformers' evaluation). An object first
prompted on a later frame is thus tracked from the start frame on, and its later frames carry those tracked
frames in memory. A start frame that mixes prompted and tracked objects runs the prompted ones alone too
(transformers' forward would encode every memory of such a frame as a mask from points; Meta encodes each object's
as its own). A frame run ahead is encoded twice (ahead, and when the propagation reaches it).

Directions (Meta's ``propagate_in_video``): "forward" from the first prompted frame to the end (earlier frames get
no objects); "reverse" from the last prompted frame back to frame 0 (``reverse=True``: memories of tracked frames
and object pointers are read from the frames after the current one); "both": forward, then reverse from the first
prompted frame on the same session, as Meta's predictor is used for a whole video (the reverse pass reads the
forward pass's outputs just after the first prompted frame, which are kept for it). Where an object is tracked on
the first prompted frame (prompted later only), the reverse pass tracks that frame again, as Meta's does, and the
frame is yielded then, with those final masks; each frame is yielded once. Parity: tests/test_video_offline.py.

Memory bound: the current frame's features, each object's conditioning (prompted) frames, and the outputs of the
last `Sam2VideoBackbone.memory_window` tracked frames per object (15 for the official configs: 6 memories, 16
object pointers); older tracked outputs are dropped, as they are never read again, and full-resolution masks are
dropped once encoded. Frames: with every prompt on one frame, one decoded frame at a time (the caller's iterator
streams them); with prompts on several frames, the frames up to the last prompted one are read ahead and held
(each let go once the propagation passes it), and the later ones stream one at a time. "reverse" holds the frames
up to the last prompted one, "both" those it runs backwards over (up to the first prompted one). A sequence of
frames (a list) is indexed, never copied. So memory does not grow with the video's length beyond the prompted
frames.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Mapping, Sequence

import torch

from ..backbone import tokens as batch_ops
from ..errors import SamclError
from ..types import Prompt, PromptError
from .engine import Engine, InputPrompt
from .video_passes import DIRECTIONS, Passes, prompted_range
from .video_state import TrackedFrame, TrackedObject, Video, _Session, conditioned, one_frame

__all__ = ["DIRECTIONS", "TrackedFrame", "TrackedObject", "Video", "VideoTracker"]


class VideoTracker(Passes):
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
          "both" the forward frames, then the earlier ones from the first prompted frame down (the first prompted
          frame comes there rather than forward when an object prompted only later is tracked on it: the module
          doc). Raises SamclError for no prompt, a prompt outside its frame, or a prompted frame past the last one
          (with prompts on several frames, before any frame is yielded).
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
          steps, then step t runs frame (first prompted - 1 - t) of each, or (first prompted - t) where `track`
          yields the first prompted frame backwards. Each video's frames are its own `track`'s (up to float
          rounding); the prompted frames run ahead are batched the same way.
        """
        if len(prompts) != len(videos):
            raise SamclError(f"{len(videos)} videos but {len(prompts)} prompt sets")
        forced = [force] * len(videos) if force is None or isinstance(force, str) else list(force)
        lengths = [None] * len(videos) if num_frames is None else list(num_frames)
        if len(forced) != len(videos) or len(lengths) != len(videos):
            raise SamclError(f"{len(videos)} videos: give force and num_frames per video")
        ranges = [prompted_range(p, n, direction) for p, n in zip(prompts, lengths)]
        names = [f"video {j}: " if len(videos) > 1 else "" for j in range(len(videos))]
        states = [self.open(force=f, fallback=fallback, num_frames=n, return_logits=return_logits,
                            route_frames=route_frames) for f, n in zip(forced, lengths)]
        yield from self._propagate(videos, prompts, states, ranges, names, direction)

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
            mine = one_frame(features, j)
            video.session.cache.cache_vision_features(index, mine)
            fresh = {obj: p for obj, p in inputs[j].items() if not conditioned(video.session, obj, index)}
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
