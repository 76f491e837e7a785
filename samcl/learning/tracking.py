"""`SAMCL.track`: the video front end of a module set (kept apart so the learner stays one screenful per concern)."""

from __future__ import annotations


class Tracking:
    """Mixed into `SAMCL` (which has `engine` and `backbone`)."""

    def track(self, frames, prompts_by_frame, *, force: str | None = None, **options):
        """Per-frame masks of objects tracked through a video (SAM 2 bases; their video memory loads on first use).

        Arguments:
          frames: H x W x 3 uint8 arrays or PIL images, consumed one at a time (`samcl.io.open_frames(path)`).
          prompts_by_frame: frame index -> object id -> `Prompt` (original pixels).
          force: run this domain's module ("base": none) instead of the selector's pick on the first prompted frame.
          options: `fallback`, `num_frames`, `return_logits`, `route_frames`
            (`samcl.inference.video.VideoTracker.track`).

        Returns:
          (Iterator[TrackedFrame]): one per frame, `.objects[object_id].mask` / `.score`, `.domain`.
        """
        from ..inference.video import VideoTracker

        tracker = VideoTracker(self.engine)
        self.backbone = tracker.backbone  # the video backbone (the same image modules): learn and precision use it
        return tracker.track(frames, prompts_by_frame, force=force, **options)
