"""One video's state while it is tracked (`samcl.inference.video`): transformers' inference session fed with
features, the `Video` record a tracker steps, and the per-frame results it yields."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

from .._renamed import renamed_attribute


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


def one_frame(features: dict, j: int) -> dict:
    """The j-th frame's FPN levels of a batch's `video_features`."""
    return {name: [level[:, j:j + 1] for level in levels] for name, levels in features.items()}


def conditioned(session: _Session, obj: int, index: int) -> bool:
    """Whether `obj`'s prompts on frame `index` already ran (`VideoTracker._condition`)."""
    return obj in session.obj_ids and index in session.output_dict_per_obj[session.obj_id_to_idx(obj)][
        "cond_frame_outputs"]
