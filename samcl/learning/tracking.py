"""`SAMCL.track`: the video front end of a module set (kept apart so the learner stays one screenful per concern)."""

from __future__ import annotations


class Tracking:
    """Mixed into `SAMCL` (which has `engine` and `backbone`)."""

    def tracker(self):
        """The `samcl.inference.video.VideoTracker` on this set's engine (SAM 2 bases; their video memory loads on
        first use, and the set's backbone becomes the video backbone: the same image modules)."""
        from ..inference.video import VideoTracker

        tracker = VideoTracker(self.engine)
        self.backbone = tracker.backbone  # learn and precision use the video backbone from now on
        return tracker

    def track(self, frames, prompts_by_frame, *, force: str | None = None, direction: str = "forward", **options):
        """Per-frame masks of objects tracked through a video.

        Arguments:
          frames: H x W x 3 uint8 arrays or PIL images, consumed one at a time (`samcl.io.open_frames(path)`).
          prompts_by_frame: frame index -> object id -> `Prompt` (original pixels).
          force: run this domain's module ("base": none) instead of the selector's pick on the first prompted frame.
          direction: "forward" (from the first prompted frame on), "reverse" (from the last prompted frame back to
            frame 0, as Meta's ``propagate_in_video(reverse=True)``) or "both" (forward, then back from the first
            prompted frame: every frame gets masks).
          options: `fallback`, `num_frames`, `return_logits`, `route_frames`
            (`samcl.inference.video.VideoTracker.track`).

        Returns:
          (Iterator[TrackedFrame]): one per frame in the order they run, `.index`, `.objects[object_id].mask` /
          `.presence`, `.domain`.
        """
        return self.tracker().track(frames, prompts_by_frame, force=force, direction=direction, **options)

    def track_videos(self, videos, prompts, *, force=None, direction: str = "forward", **options):
        """Several videos tracked together: frame t of every video (t from its prompted frame in `direction`) in one
        encoder pass with each video's own module (mixed domains in one batch), each video's memory in its own
        inference session.

        Arguments:
          videos: one frame iterable per video. prompts: one `prompts_by_frame` per video.
          force: one domain for all videos, or one per video (None: the selector's pick for that video).
          direction: "forward", "reverse" or "both", as `track`'s, for every video.
          options: `fallback`, `num_frames` (one per video), `return_logits`, `route_frames`.

        Returns:
          (Iterator[tuple[int, TrackedFrame]]): (video number, frame), step by step; each video's frames are its
          own `track`'s with that direction.
        """
        return self.tracker().track_videos(videos, prompts, force=force, direction=direction, **options)
