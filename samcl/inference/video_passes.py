"""How a tracker runs a video's frames in a direction (the `Passes` half of `samcl.inference.video.VideoTracker`):
which frames each step runs, the prompted frames run before the propagation, and which frames are held for it."""

from __future__ import annotations

from typing import Iterable, Iterator, Mapping, Sequence

from ..errors import SamclError
from ..types import Prompt
from .video_state import TrackedFrame, Video, one_frame

DIRECTIONS = ("forward", "reverse", "both")


class Passes:
    """Mixed into `VideoTracker` (which has `step`, `backbone` and the frame machinery: `_prepare`, `_route`,
    `_input`, `_features`, `_prompted_alone`)."""

    def _propagate(self, videos: Sequence[Iterable], prompts: Sequence[Mapping], states: list[Video],
                   ranges: list[tuple[int, int]], names: list[str],
                   direction: str) -> Iterator[tuple[int, TrackedFrame]]:
        """`VideoTracker.track_videos` once its arguments are checked and each video opened (`states`): the
        prompted frames other than each video's start first (`_condition`), then the propagation."""
        starts = [last if direction == "reverse" else first for first, last in ranges]
        ahead = [sorted(k for k, on in p.items() if on and k != start) for p, start in zip(prompts, starts)]
        held: list = [None] * len(videos)  # frames up to the last prompted one, indexable, where they are needed
        streams = {}
        for j, (video, (_, last)) in enumerate(zip(videos, ranges)):
            if direction == "reverse" or ahead[j]:
                held[j], streams[j] = _read_ahead(video, last + 1, names[j])  # "reverse" never runs the stream
            else:
                streams[j] = iter(video)
        ready = self._condition(states, starts, held, prompts, ahead)
        if direction == "reverse":
            yield from self._backwards(states, held, starts, prompts, ready)
        else:
            yield from self._forward(states, streams, prompts, ranges, names, ready, both=direction == "both")

    def _forward(self, videos: list[Video], streams: dict[int, Iterator], prompts: Sequence[Mapping],
                 ranges: list[tuple[int, int]], names: list[str], ready: dict, *,
                 both: bool) -> Iterator[tuple[int, TrackedFrame]]:
        """Step t runs frame t of each video from its first prompted frame on (before it: an empty frame, or with
        `both` held for the backward pass that follows)."""
        before: list[list] = [[] for _ in videos]  # both: the frames the backward pass runs, up to back_from
        back_from = [first - 1 for first, _ in ranges]
        for j, (video, (first, _)) in enumerate(zip(videos, ranges)):
            if both:
                video.keep = range(first + 1, first + 1 + self.backbone.memory_window)
                if first > 0 and any(obj not in prompts[j][first] for p in prompts[j].values() for obj in p):
                    back_from[j] = first  # an object is tracked there going forward: Meta's reverse pass again
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
                if both and index <= back_from[j]:
                    before[j].append(image)
                if index >= first:
                    running.append((j, ready.pop(j) if index == first and j in ready else image))
                elif not both:
                    yield j, TrackedFrame(index)
            if running:
                frames = self.step([videos[j] for j, _ in running], [index] * len(running),
                                   [image for _, image in running], [prompts[j].get(index) for j, _ in running])
                yield from ((j, frame) for (j, _), frame in zip(running, frames) if index != back_from[j])
            index += 1
        if both:
            for video in videos:
                video.keep = range(0)
            yield from self._backwards(videos, before, back_from, prompts, {}, release=True)

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
            self._prompted_alone(video, index, one_frame(features, j), inputs[j])


def prompted_range(prompts_by_frame: Mapping[int, Mapping], num_frames: int | None, direction: str):
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


def _read_ahead(frames: Iterable, count: int, name: str) -> tuple[Sequence, Iterator]:
    """(the first `count` frames, indexable; every frame from the first on): a sequence is indexed; an iterator's
    first frames are held until the second runs over them (each let go as it passes)."""
    if isinstance(frames, Sequence):
        return _first_frames(frames, count, name), iter(frames)
    stream = iter(frames)
    held = _first_frames(stream, count, name)

    def passing():
        for n in range(len(held)):
            yield _let_go(held, n)  # (no local of this generator keeps the frame)
        yield from stream

    return held, passing()


def _let_go(frames: list, n: int):
    """frames[n], no longer held there."""
    image, frames[n] = frames[n], None
    return image


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
