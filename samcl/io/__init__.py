"""Input and output that is not the model's: files (bounded reads of regular files, depth-limited JSON, atomic
writes), images (decoded upright, bounded), what the commands print (`--json`), progress (bars on a terminal, log
lines elsewhere).

    from samcl.io import read_image, atomic_write_png
    image = read_image("photo.jpg")                 # H x W x 3 uint8 RGB, upright by EXIF; a FIFO is refused
    image = read_image(data, max_pixels=40_000_000) # the same decoder on a file's bytes, at a stricter limit

`files`, `images`, `masks` (COCO RLE through pycocotools), `video` (frames decoded one at a time), `printing`,
`progress`: one concern each; every name is here too. No torch, no model code.
"""

from __future__ import annotations

from .files import (FAULT_DELAY_ENV, MAX_JSON_DEPTH, NoSuchFile, atomic_write_bytes, atomic_write_json, check_regular,
                    current_umask, fault_point, file_mode, fsync_dir, json_depth, name_max, open_regular, parse_json, quote,
                    read_json_file, read_limited)
from .images import (HIGH_DEPTH_MODES, MAX_IMAGE_PIXELS, ImageTooLarge, atomic_write_png, encode_image, high_depth_peak,
                     load_image, open_image, read_image, read_mask, to_rgb_array, upright)
from .masks import coco_rle, coco_rles, rle_area, rle_bbox, rle_to_mask, run_lengths, uncompressed_rle
from .printing import finite, print_json
from .progress import bar, log_to_stderr
from .video import FRAME_SUFFIXES, VideoFrames, open_frames

__all__ = ["FAULT_DELAY_ENV", "FRAME_SUFFIXES", "HIGH_DEPTH_MODES", "MAX_IMAGE_PIXELS", "MAX_JSON_DEPTH", "NoSuchFile",
           "ImageTooLarge", "atomic_write_bytes", "atomic_write_json", "atomic_write_png", "bar", "check_regular",
           "current_umask", "encode_image", "load_image", "open_image",
           "fault_point", "file_mode", "finite", "fsync_dir", "high_depth_peak", "json_depth", "log_to_stderr",
           "name_max", "open_regular", "parse_json", "print_json", "quote", "read_image", "read_json_file",
           "read_limited", "read_mask", "to_rgb_array", "upright", "coco_rle", "coco_rles", "rle_area", "rle_bbox",
           "rle_to_mask", "run_lengths", "uncompressed_rle", "VideoFrames", "open_frames"]
