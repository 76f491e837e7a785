"""A CVAT-style interactor: the JSON body CVAT's serverless SAM functions take, answered as they answer.

    POST /v1/cvat/interactor {"image": BASE64, "pos_points": [[x, y], ...], "neg_points": [...],
                              "obj_bbox": [x0, y0, x1, y1]}     (obj_bbox optional; pixels of the image)
    -> {"mask": [[0 or 255, ...], ...], "points": [[x, y], ...], "domain", "score", "generation"}

The request and answer follow cvat-ai/cvat serverless/pytorch/facebookresearch/sam/nuclio (main.py: `image`,
`pos_points`, `neg_points`; the answer's `mask` is the H x W uint8 mask scaled to 0..255 and `points` the polygon
of its largest outer contour, [[x, y], ...] in integer pixels) and the interactors that take a box
(saic-vul/iog: `obj_bbox` [x0, y0, x1, y1]). `domain`, `score` and `generation` are samcl's additions. The
selector picks the module, or `domain` in the body forces one. The route takes the server's API token.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from .. import Prompt, PromptError
from . import codec
from .answers import HeldResponse, cvat_answer, cvat_answer_cost
from .context import Serving, checked
from .errors import ApiError
from .label_studio.labels import mask_polygons
from .limits import MAX_POINTS, check_count

Coordinate = Annotated[float, Field(allow_inf_nan=False)]
Point = tuple[Coordinate, Coordinate]


class InteractorRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # CVAT's functions take (and ignore) more, e.g. threshold

    image: str = Field(description="the image file, base64")
    pos_points: list[Point] = Field(default_factory=list, max_length=MAX_POINTS)
    neg_points: list[Point] = Field(default_factory=list, max_length=MAX_POINTS)
    obj_bbox: tuple[Coordinate, Coordinate, Coordinate, Coordinate] | None = None
    force: str | None = Field(None, description="run this domain's module ('base': none)")


def _prompt(body: InteractorRequest, width: int, height: int) -> Prompt:
    """The request's prompt (`Prompt.check`); CVAT's box may reach past the image and is clipped to it first."""
    points = list(body.pos_points) + list(body.neg_points)
    check_count("pos_points + neg_points", len(points), MAX_POINTS)
    box = None
    if body.obj_bbox is not None:
        try:
            x0, y0, x1, y1 = Prompt.check_box(body.obj_bbox, "obj_bbox")
        except PromptError as exc:
            raise ApiError(400, exc.code, str(exc)) from None
        box = [max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))]
    labels = [1] * len(body.pos_points) + [0] * len(body.neg_points)
    return checked(Prompt.of(points or None, labels if points else None, box), width, height)


def _answer(mask: np.ndarray, job) -> memoryview:
    """CVAT's answer as JSON bytes (in a worker thread): the mask, the polygon of its largest outline, samcl's
    additions."""
    outlines = mask_polygons(mask)
    polygon = [[int(round(x)), int(round(y))] for x, y in outlines[0]] if outlines else []
    del outlines
    return cvat_answer(mask, {"points": polygon, "domain": job.prediction.domain,
                              "score": float(job.prediction.scores[0]), "generation": job.generation})


def router(serving: Serving) -> APIRouter:
    routes = APIRouter(tags=["cvat"])

    @routes.post("/v1/cvat/interactor", openapi_extra={"requestBody": {"content": {"application/json": {
        "schema": InteractorRequest.model_json_schema()}}, "required": True}})
    async def interactor(request: Request):
        """Segment one object from CVAT's interactor points (and box): its mask and polygon. The token (if the
        server has one) is checked before the body is read."""
        ticket = serving.ticket()
        try:  # the answer is built and sent under the ticket (`answers`): its memory is charged first
            body = await serving.json(request, InteractorRequest, ticket)
            image = await serving.load(codec.decode_base64(body.image, "image"), ticket)
            serving.check_force(body.force)
            job = await serving.segment(image, _prompt(body, image.width, image.height), body.force)
            mask, body, image = job.prediction.masks[0], None, None  # the request's copies go; the charge stays
            ticket.take(cvat_answer_cost(mask))
            content = await run_in_threadpool(_answer, mask, job)
        except BaseException:
            ticket.__exit__(None, None, None)
            raise
        return HeldResponse(content, ticket)

    return routes
