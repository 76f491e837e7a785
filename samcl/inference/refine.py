"""Refinement strategies: which part of a prompt heats the encoder, so that a further click can cost only the
decoder, as SAM's clicks do.

An AugModule's heat enters the encoder after the selector block, so the image embedding depends on the prompt
points rendered into the heat. A strategy picks, for a prompt (every click so far, in click order, and the box),
its *heat prompt*: the part rendered into the heat; the decoder always gets the whole prompt. The engine keeps
each image's embeddings by (domain, heat prompt) (`PreparedImage.heated`), so a click that keeps the heat prompt
runs the decoder alone.

    "all"      every point and the box heat the encoder: the suffix runs again on every click (the method as
               trained, and as the committed benchmark scores a prompt)
    "first"    the first prompt heats the encoder: a prompt that extends a kept heat prompt of the same image and
               domain (the same box, its points first, in order) reuses that embedding, so further clicks are
               decoder-only, SAM's cost; any other prompt heats with all its points (and is kept)
    "outside"  as "first", but a further click that falls outside the heated region (farther than the heat
               kernel's reach from every heated point and from the box) heats the encoder again, with every click

What a request is answered with depends on the prompt and on what the image keeps (a front end that receives every
click so far with each request, as Label Studio's smart keypoints and the page do, finds its first prompt kept).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np

if TYPE_CHECKING:  # this file is read by the CLI's flags and the server's config: no torch at import
    from ..types import Prompt

REFINE = ("all", "first", "outside")
#: What the front ends use (the predictor, `samcl segment`, the server's routes); chosen by
#: benchmarks/clicks.py (README: "Interactive clicks").
DEFAULT_REFINE = "first"


def check_refine(refine: str) -> str:
    if refine not in REFINE:
        raise ValueError(f"refine {refine!r}: expected one of {', '.join(REFINE)}")
    return refine


def heat_prompt(prompt: Prompt, refine: str, kept: Iterable[Prompt] = (), reach: float | None = None) -> Prompt:
    """The part of `prompt` that heats the encoder under strategy `refine`.

    Arguments:
      prompt: every click so far (in click order) and the box, in original pixels.
      refine: one of `REFINE`.
      kept: the heat prompts whose embeddings the image keeps for the domain that runs.
      reach: for "outside", how far (original pixels, per axis) the heat of a point reaches.

    Returns:
      (Prompt): the longest kept heat prompt that `prompt` extends (for "outside": when its further points lie
      in the heated region), else `prompt` itself.
    """
    check_refine(refine)
    if refine == "all":
        return prompt
    if refine == "outside" and reach is None:
        raise ValueError("refine 'outside' needs the heat's reach")
    best = None
    for heated in kept:
        count = 0 if heated.points is None else len(heated.points)
        if best is not None and count <= len(best.points if best.points is not None else ()):
            continue
        if not _extends(prompt, heated):
            continue
        further = prompt.points[count:] if prompt.points is not None else ()
        if refine == "outside" and not all(_heated(heated, point, reach) for point in further):
            continue
        best = heated
    return prompt if best is None else best


def _extends(prompt: Prompt, heated: Prompt) -> bool:
    """`prompt` has `heated`'s box and starts with its points and labels."""
    if (prompt.box is None) != (heated.box is None) or (prompt.box is not None
                                                        and not np.array_equal(prompt.box, heated.box)):
        return False
    if heated.points is None:
        return True
    count = len(heated.points)
    return (prompt.points is not None and len(prompt.points) >= count
            and np.array_equal(prompt.points[:count], heated.points)
            and np.array_equal(prompt.labels[:count], heated.labels))


def _heated(heated: Prompt, point: np.ndarray, reach: float) -> bool:
    """Whether `point` lies within `reach` (per axis, as the square heat kernel) of a heated point or the box."""
    if heated.points is not None and (np.abs(heated.points - point).max(axis=1) <= reach).any():
        return True
    if heated.box is not None:
        x0, y0, x1, y1 = heated.box
        return bool(x0 - reach <= point[0] <= x1 + reach and y0 - reach <= point[1] <= y1 + reach)
    return False


def prompt_key(prompt: Prompt) -> tuple:
    """A hashable key of a prompt's exact values (what an embedding is kept under)."""
    parts = (prompt.points, prompt.labels, prompt.box)
    return tuple(None if p is None else (p.dtype.str, p.shape, p.tobytes()) for p in parts)


def prompt_of_key(key: tuple) -> Prompt:
    """The prompt `prompt_key` made `key` from."""
    from ..types import Prompt

    points, labels, box = (None if part is None else np.frombuffer(part[2], part[0]).reshape(part[1])
                           for part in key)
    return Prompt(points, labels, box)
