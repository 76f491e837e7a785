"""Video frames, decoded one at a time: a video file through PyAV (FFmpeg), or a folder of frame images.

    frames = open_frames("clip.mp4")        # or a folder: 00000.jpg, 00001.jpg, ... (in name order)
    frames.count                            # the number of frames when the container says it (else None)
    frames.frame_size(12)                   # (width, height) of frame 12, before tracking reads it
    for frame in frames: ...                # H x W x 3 uint8 RGB, one decoded frame held at a time

Nothing is decoded ahead: a long video costs one frame of memory here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import SamclError
from .files import check_regular
from .images import MAX_IMAGE_PIXELS, read_image

#: Frame images in a folder (as samcl's dataset folders).
FRAME_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class VideoFrames:
    """The frames of `path` (see the module doc). Raises SamclError naming the path when it cannot be read."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise SamclError(f"{self.path}: no such file or directory")
        self.files: list[Path] | None = None
        if self.path.is_dir():
            self.files = sorted(p for p in self.path.iterdir()
                                if p.suffix.lower() in FRAME_SUFFIXES and not p.name.startswith(".") and p.is_file())
            if not self.files:
                raise SamclError(f"{self.path}: no frame images (expected .png or .jpg files)")
            self.count: int | None = len(self.files)
        else:
            check_regular(self.path, "video")
            with self._open() as container:
                stream = self._stream(container)
                self.count = int(stream.frames) or None  # 0: the container does not say

    def frame_size(self, index: int) -> tuple[int, int] | None:
        """(width, height) of frame `index` before tracking reads it: a folder's image is read (an unreadable one
        is the error it would be later), a video's stream says it (None where it does not, or past the end)."""
        if self.files is not None:
            if index >= len(self.files):
                return None
            height, width = read_image(self.files[index]).shape[:2]
            return width, height
        with self._open() as container:
            context = self._stream(container).codec_context
            return (context.width, context.height) if context.width and context.height else None

    def _open(self):
        try:
            import av
        except ImportError:
            raise SamclError("reading a video needs PyAV: pip install 'samcl[video]' (or give a folder of "
                             "frame images)") from None
        try:
            return av.open(str(self.path))
        except Exception as exc:  # PyAV raises FFmpeg's many error types
            raise SamclError(f"{self.path}: not a readable video ({' '.join(str(exc).split())[:120]})") from None

    def _stream(self, container):
        if not container.streams.video:
            raise SamclError(f"{self.path}: has no video stream")
        return container.streams.video[0]

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.files is not None:
            for file in self.files:
                yield read_image(file)
            return
        with self._open() as container:
            stream = self._stream(container)
            try:
                for frame in container.decode(stream):
                    if frame.width * frame.height > MAX_IMAGE_PIXELS:
                        raise SamclError(f"{self.path}: frames of {frame.width}x{frame.height} are too large")
                    yield frame.to_ndarray(format="rgb24")
            except SamclError:
                raise
            except Exception as exc:
                raise SamclError(f"{self.path}: cannot decode ({' '.join(str(exc).split())[:120]})") from None


def open_frames(path: str | Path) -> VideoFrames:
    """`VideoFrames` of a video file or a folder of frames."""
    return VideoFrames(path)
