"""Video: a prompt propagated through the frames of a video with the domain's module, on SAM 2's memory.

    tracker = VideoTracker(engine)                       # the engine's backbone is a Sam2VideoBackbone
    for frame in tracker.track(frames, {0: {1: Prompt.of(points=[[120, 80]])}}):
        frame.objects[1].mask, frame.objects[1].score    # H x W bool, the object's presence probability

Per frame, in order (frames are consumed one at a time, as they come):
  prefix (blocks 0..s) -> pooled features -> [first prompted frame: the selector picks the video's module]
  -> suffix with the module's rows (heat from this frame's prompts; zero heat on frames without one)
  -> the three FPN levels into the transformers inference session's feature cache (`Sam2VideoBackbone.
     video_features`) -> ``Sam2VideoModel.forward(session, frame_idx)``: transformers' own memory attention,
     mask decoder, memory encoder and object pointers -> masks at the frame's size.

Routing: once per video, on the first prompted frame. The memory holds features the module produced; a module
switched mid-video would feed the memory attention features from a different encoder. With `route_frames` the
selector is asked about every frame too (`TrackedFrame.frame_domain`; the pooled features are there anyway), so a
caller can measure how often frames would route differently (benchmarks/video.py reports it).

Memory bound: one decoded frame at a time (the caller's iterator streams them), the current frame's features,
each object's conditioning (prompted) frames, and the outputs of the last `Sam2VideoBackbone.memory_window`
tracked frames per object (15 for the official configs: 6 memories, 16 object pointers); older tracked
outputs are dropped, as they are never read again, and full-resolution masks are dropped once encoded. So memory
does not grow with the video's length beyond the prompted frames.

Frames before the first prompted frame get no objects (SAM 2 propagates forward from its first prompt).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping

import numpy as np
import torch
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

from ..backbone import tokens as batch_ops
from ..errors import SamclError
from ..types import Prompt
from .engine import Engine, InputPrompt


@dataclass
class TrackedObject:
    """One object on one frame. mask: H x W bool at the frame's size; score: the object's presence probability
    (sigmoid of SAM 2's object score); logits: the 1 x h x w low-res mask logits when asked for."""

    mask: np.ndarray
    score: float
    logits: torch.Tensor | None = None


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


class VideoTracker:
    """Tracks objects through a video with an engine's modules (see the module doc)."""

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

    @torch.no_grad()
    def track(self, frames: Iterable, prompts_by_frame: Mapping[int, Mapping[int, Prompt]], *,
              force: str | None = None, fallback: bool | None = None, num_frames: int | None = None,
              return_logits: bool = False, route_frames: bool = False) -> Iterator[TrackedFrame]:
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

        Returns:
          (Iterator[TrackedFrame]): one per frame, as the frames come. Raises SamclError for no prompt, a prompt
          outside its frame, or a prompted frame past the last one.
        """
        if not prompts_by_frame or not any(prompts_by_frame.values()):
            raise SamclError("no prompt: give at least one object's prompt on one frame")
        if min(prompts_by_frame) < 0:
            raise SamclError(f"frame {min(prompts_by_frame)}: frames are numbered from 0")
        if num_frames is not None and max(prompts_by_frame) >= num_frames:
            raise SamclError(f"frame {max(prompts_by_frame)} is past the video's last frame {num_frames - 1}")
        first = min(k for k, v in prompts_by_frame.items() if v)
        engine, backbone = self.engine, self.backbone
        session = _Session(num_frames, engine.device, backbone.dtype)
        forced = engine.resolve(force, 1)[0]
        chosen = None
        index = -1
        for index, image in enumerate(frames):
            if index < first:  # nothing to track yet: the frame is not even encoded
                yield TrackedFrame(index)
                continue
            prepared = engine.prepare([image], keep=False)[0]
            frame_pick = None
            if forced is None and (chosen is None or route_frames):
                pick = engine.route(prepared.pooled[None], None, fallback)[0][0]
                frame_pick = engine.module_set.domain_name(pick) if route_frames else None
                chosen = pick if chosen is None else chosen
            chosen = forced if forced is not None else chosen
            prompts = {obj: p for obj, p in (prompts_by_frame.get(index) or {}).items()}
            inputs = {obj: self._input(p, prepared) for obj, p in prompts.items()}
            features = self._features(prepared, chosen, list(inputs.values()))
            session.cache.cache_vision_features(index, features)
            if prompts:
                self._add_prompts(session, index, inputs)
            output = backbone.video(session, frame_idx=index)
            self._forget_old(session, index)
            yield self._frame(index, output, prepared.geometry, engine.module_set.domain_name(chosen), frame_pick,
                              return_logits)
        if index < first:
            raise SamclError(f"frame {first} is past the video's last frame {index}")

    # ------------------------------------------------------------------ steps
    def _input(self, prompt: Prompt, prepared) -> InputPrompt:
        height, width = prepared.size
        prompt.check(width, height)
        return InputPrompt.of(prompt, prepared.geometry, self.engine.device)

    def _features(self, prepared, chosen: int, prompts: list[InputPrompt]) -> dict:
        """The frame's adapted features: heat of every object's prompt on this frame (their elementwise maximum:
        one object's heat is exactly the image path's), zero heat without a prompt."""
        engine = self.engine
        tokens = batch_ops.stack([prepared.tokens])
        if engine.module_set.module_for(chosen) is None:
            return self.backbone.video_features(tokens, engine.start_block, None)
        heat = torch.zeros(1, *self.backbone.site.grid, device=engine.device)
        if prompts:
            heat = engine.heat(prompts).amax(dim=0, keepdim=True)
        return self.backbone.video_features(tokens, engine.start_block, engine.injection([chosen], heat))

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

    def _forget_old(self, session: _Session, index: int) -> None:
        """Drop what the model never reads again (see the module doc's memory bound)."""
        oldest = index - self.backbone.memory_window
        for outputs in session.output_dict_per_obj.values():
            tracked = outputs["non_cond_frame_outputs"]
            for old in [t for t in tracked if t < oldest]:
                del tracked[old]
            for kind in ("cond_frame_outputs", "non_cond_frame_outputs"):
                if index in outputs[kind]:
                    outputs[kind][index].pop("high_res_masks", None)
        for per_obj in session.frames_tracked_per_obj.values():
            for old in [t for t in per_obj if t < oldest]:
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
