"""What a Label Studio project's labeling config and results mean to samcl: which tags to answer in, the prompt
in an interactive request's context, and the mask and points of an annotation.

    tags = Tags.of(label_config)        # the Image tag (its data key), the BrushLabels / PolygonLabels tags
    prompt = ContextPrompt.of(context).prompt(width, height)   # keypoints (is_positive), rectangles
    mask, points, labels = annotation_target(results, tags, width, height)

Coordinates in Label Studio results are percent of `original_width` / `original_height`; a keypoint's x, y is
its position, a rectangle's x, y its top-left corner (rotation 0).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field

import numpy as np

from ... import Prompt, PromptError
from ..errors import ApiError
from ..limits import MAX_BOXES, MAX_POINTS, check_count
from . import rle as brush_rle

#: Largest labeling config read (Label Studio's are a few kilobytes).
MAX_CONFIG_CHARS = 200_000


@dataclass
class Tag:
    name: str
    to_name: str
    labels: list[str] = field(default_factory=list)


@dataclass
class Tags:
    image: str  # the Image tag's name
    data_key: str  # the task data field holding the image URL ($image -> "image")
    brush: Tag | None = None
    polygon: Tag | None = None

    @classmethod
    def of(cls, label_config: str | None) -> "Tags":
        if not label_config or len(label_config) > MAX_CONFIG_CHARS:
            raise ApiError(400, "bad_label_config", "the project's labeling config is missing or too long")
        try:
            root = ElementTree.fromstring(label_config)
        except ElementTree.ParseError as exc:
            raise ApiError(400, "bad_label_config", f"the labeling config is not valid XML ({exc})") from None
        images = [e for e in root.iter() if e.tag == "Image"]
        if not images or not images[0].get("name") or not (images[0].get("value") or "").startswith("$"):
            raise ApiError(400, "no_image_tag", "the labeling config has no <Image name=... value=\"$field\"> tag")
        image = images[0].get("name")

        def tag(kind: str) -> Tag | None:
            for element in root.iter(kind):
                if element.get("toName") == image and element.get("name"):
                    labels = [c.get("value") for c in element if c.tag == "Label" and c.get("value")]
                    return Tag(element.get("name"), image, labels)
            return None

        tags = cls(image, images[0].get("value")[1:], tag("BrushLabels"), tag("PolygonLabels"))
        if tags.brush is None and tags.polygon is None:
            raise ApiError(400, "no_mask_tag", f"the labeling config has no <BrushLabels> or <PolygonLabels> tag on "
                                               f"the image {image!r}: nothing to answer a mask in")
        return tags


def finite(number) -> float | None:
    """A JSON number as a finite float (None: not a number, or one no float holds, e.g. a 400-digit integer)."""
    if not isinstance(number, (int, float)) or isinstance(number, bool):
        return None
    try:
        number = float(number)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _percent(value: dict, key: str) -> float:
    number = finite(value.get(key))
    if number is None:
        raise ApiError(400, "bad_context", f"context: value.{key} must be a finite number (percent of the image)")
    return number


@dataclass
class ContextPrompt:
    """An interactive request's prompt in percent of the image: points (x, y, positive) and at most one box
    (x0, y0, x1, y1), and the label of its first keypoint or rectangle (the label the answer carries)."""

    points: list[tuple[float, float, bool]]
    box: tuple[float, float, float, float] | None
    label: str | None

    @classmethod
    def of(cls, context) -> "ContextPrompt":
        """Checked before the image is fetched: a context without a usable prompt costs no fetch."""
        results = context.get("result") if isinstance(context, dict) else None
        if not isinstance(results, list) or not results:
            raise ApiError(400, "bad_context", "context.result must be a non-empty list of keypoints or rectangles")
        check_count("context.result", len(results), 4 * (MAX_POINTS + MAX_BOXES))  # before any is read
        points, boxes, label = [], [], None
        for item in results:
            if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
                raise ApiError(400, "bad_context", "context.result: every item needs a value object")
            kind, value = str(item.get("type", "")).lower(), item["value"]
            if kind == "keypointlabels":
                points.append((_percent(value, "x"), _percent(value, "y"), item.get("is_positive") is not False))
            elif kind == "rectanglelabels":
                x0, y0 = _percent(value, "x"), _percent(value, "y")
                boxes.append((x0, y0, x0 + _percent(value, "width"), y0 + _percent(value, "height")))
            else:
                continue
            names = value.get(kind) or []
            if label is None and isinstance(names, list) and names and isinstance(names[0], str):
                label = names[0]
        if not points and not boxes:
            raise ApiError(400, "bad_context", "context.result holds no keypointlabels or rectanglelabels item to "
                                               "prompt with")
        check_count("context.result keypointlabels", len(points), MAX_POINTS)
        check_count("context.result rectanglelabels", len(boxes), MAX_BOXES)
        return cls(points, boxes[0] if boxes else None, label)

    def prompt(self, width: int, height: int) -> Prompt:
        """In pixels of the `width` x `height` image (points clamped into it, the box clipped to it)."""
        points = [[min(max(x / 100 * width, 0.0), width - 1e-3), min(max(y / 100 * height, 0.0), height - 1e-3)]
                  for x, y, _ in self.points]
        labels = [1 if positive else 0 for _, _, positive in self.points]
        box = None
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            box = [max(x0 / 100 * width, 0.0), max(y0 / 100 * height, 0.0), min(x1 / 100 * width, float(width)),
                   min(y1 / 100 * height, float(height))]
            try:
                Prompt.check_box(box, "context: the rectangle")
            except PromptError as exc:
                raise ApiError(400, "bad_context", str(exc)) from None
        return Prompt.of(points or None, labels if points else None, box)


def polygon_mask(points_percent: list, width: int, height: int) -> np.ndarray:
    """A polygon in percent coordinates as a H x W bool mask: the pixels whose centre lies inside it (pixel
    (row, col) spans [col, col + 1] x [row, row + 1]; matplotlib's point-in-path test)."""
    from matplotlib.path import Path as Outline

    mask = np.zeros((height, width), dtype=bool)
    vertices = np.asarray([(float(x) / 100 * width, float(y) / 100 * height) for x, y in points_percent])
    if len(vertices) < 3 or not np.isfinite(vertices).all():
        return mask
    x0, y0 = np.clip(np.floor(vertices.min(0)).astype(int), 0, [width, height])
    x1, y1 = np.clip(np.ceil(vertices.max(0)).astype(int), 0, [width, height])
    if x1 <= x0 or y1 <= y0:
        return mask
    ys, xs = np.mgrid[y0:y1, x0:x1]
    centres = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], axis=1)
    mask[y0:y1, x0:x1] = Outline(vertices).contains_points(centres).reshape(ys.shape)
    return mask


def annotation_target(results: list, tags: Tags, width: int, height: int):
    """An annotation's mask (the union of its brush strokes and polygons on the image), and its keypoints as the
    image's prompt points (N x 2 pixels, N labels; None when it has none). Raises ValueError on a bad result."""
    mask = np.zeros((height, width), dtype=bool)
    points, labels, found = [], [], False
    for item in results:
        if not isinstance(item, dict) or item.get("to_name") != tags.image or not isinstance(item.get("value"), dict):
            continue
        kind, value = str(item.get("type", "")).lower(), item["value"]
        if kind == "brushlabels" and value.get("format", "rle") == "rle" and "rle" in value:
            mask |= brush_rle.decode(value["rle"], height, width)
            found = True
        elif kind == "polygonlabels" and isinstance(value.get("points"), list):
            mask |= polygon_mask(value["points"], width, height)
            found = True
        elif kind == "keypointlabels":
            x, y = finite(value.get("x")), finite(value.get("y"))
            if x is None or y is None:
                raise ValueError("a keypoint's x and y must be finite numbers (percent of the image)")
            x, y = x / 100 * width, y / 100 * height
            points.append([min(max(x, 0.0), width - 1e-3), min(max(y, 0.0), height - 1e-3)])
            labels.append(0 if item.get("is_positive") is False else 1)
    if not found:
        return None, None, None
    if not points:
        return mask, None, None
    return mask, np.asarray(points, dtype=np.float32), np.asarray(labels, dtype=np.int64)


def mask_polygons(mask: np.ndarray, min_area: float = 4.0) -> list[list[list[float]]]:
    """The outlines of the mask's parts, largest first, each [[x, y], ...] in pixel-edge coordinates (corners
    only); holes are not outlined. Traced by contourpy (matplotlib's contouring) at the 0.5 level, on the mask's
    bounding box only (about 29 bytes a pixel of it: `outline_box`)."""
    import contourpy

    box = outline_box(mask)
    if box is None:
        return []
    (y0, y1), (x0, x1) = box
    padded = np.pad(mask[y0:y1, x0:x1], 1).astype(np.float64)  # padded as bool first: one float64 copy, not two
    lines = [line + (x0, y0) for line in
             contourpy.contour_generator(z=padded, line_type=contourpy.LineType.Separate).lines(0.5)]
    del padded
    signed = [_signed_area(line) for line in lines]
    outer = np.sign(signed[int(np.argmax(np.abs(signed)))])  # the largest outline is an outer one
    parts = sorted((k for k in range(len(lines)) if np.sign(signed[k]) == outer and abs(signed[k]) >= min_area),
                   key=lambda k: -abs(signed[k]))
    return [_corners(lines[k]) for k in parts]


def outline_box(mask: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """((row0, row1), (col0, col1)) bounding the mask's foreground (None: empty): what `mask_polygons` traces."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return None
    return (int(rows[0]), int(rows[-1]) + 1), (int(cols[0]), int(cols[-1]) + 1)


def _corners(outline: np.ndarray) -> list[list[float]]:
    if len(outline) > 1 and np.allclose(outline[0], outline[-1]):
        outline = outline[:-1]
    turns = np.ones(len(outline), dtype=bool)
    if len(outline) > 3:  # keep the corners: drop points on a straight run
        before, after = np.roll(outline, 1, axis=0), np.roll(outline, -1, axis=0)
        cross = (outline - before)[:, 0] * (after - outline)[:, 1] - (outline - before)[:, 1] * (after - outline)[:, 0]
        turns = np.abs(cross) > 1e-9
    return (outline[turns] - 0.5).round(2).tolist()  # padding off (-1), pixel centres to pixel edges (+0.5)


def _signed_area(line: np.ndarray) -> float:
    x, y = line[:, 0], line[:, 1]
    return float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2
