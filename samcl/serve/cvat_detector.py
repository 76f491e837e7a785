"""A CVAT-style detector: automatic masks of a whole image in the JSON shape CVAT's serverless detector functions
answer, so CVAT's "Automatic annotation" can run samcl over every frame of a task.

    POST /v1/cvat/detector {"image": BASE64, "threshold": 0.5}        (threshold optional: least confidence)
    -> [{"confidence": "0.93", "label": "object", "points": [x0, y0, x1, y1, ...], "type": "mask",
         "mask": [0, 1, 1, ..., xtl, ytl, xbr, ybr]}, ...]

The request is what CVAT's lambda manager sends a detector (cvat/apps/lambda_manager/views.py, `invoke`: the
frame as base64 `image`, and `threshold` when one is set). Each answer item is what CVAT's own mask-answering
detectors return (serverless/openvino/omz/public/mask_rcnn_inception_resnet_v2_atrous_coco/nuclio/
model_handler.py): `confidence` as a string, `type` "mask", `points` the polygon of the mask's largest outline as
a flat [x, y, ...] list (what CVAT keeps when the user asks to convert masks to polygons), and `mask` the mask's
bounding box cut out of it, flattened row by row, followed by the box's inclusive corners [xtl, ytl, xbr, ybr]
(serverless/openvino/base/shared.py `to_cvat_mask`). CVAT run-length encodes that crop into its mask shape
(`DetectionResultConverter`: datumaro's `mask_to_rle` of the crop, then the corners), the encoding
cvat-sdk's `cvat_sdk.masks.encode_mask` writes; the tests decode the answer that way with cvat-sdk's `decode_mask`.
Crop values are 0 and 1. Masks come from `SAMCL.generate` (Meta's generator defaults) with the module the
selector routes the image to (or `force`); `confidence` is the mask's predicted IoU; at most `max_masks`, highest
first. samcl's additions: `label` (default "object": map it to a task label in CVAT's function settings),
`max_masks`, `force`, `options` (the generator's, `AutoMaskConfig`'s names); the headers X-Samcl-Domain and
X-Samcl-Generation say which module and generation ran. The route takes the server's API token, and each item of
the answer is charged to the in-flight budget before it is written (2 bytes a crop pixel).
"""

from __future__ import annotations

import json

import numpy as np
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from . import codec
from .automatic import best_masks, generate, generator_config
from .budget import Ticket
from .context import Serving
from .label_studio.labels import mask_polygons


class DetectorRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # CVAT may send more (a function's own options)

    image: str = Field(description="the image file, base64")
    threshold: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False,
                             description="least confidence (predicted IoU) of a mask answered")
    label: str = Field("object", min_length=1, max_length=128, description="the label every mask carries")
    max_masks: int = Field(100, ge=1, le=1000, description="most masks answered, highest confidence first")
    force: str | None = Field(None, description="run this domain's module ('base': none)")
    options: dict | None = Field(None, description="the generator's options (AutoMaskConfig's names, Meta's "
                                                    "defaults), e.g. {\"pred_iou_thresh\": 0.7}")


def cvat_item(mask: np.ndarray, confidence: float, label: str, ticket: Ticket) -> bytes | None:
    """One mask as CVAT's detector answer item (JSON bytes), or None when it has no outline to give as a polygon
    (CVAT's functions skip those too). The crop's text is charged to `ticket` before it is made."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return None
    outlines = mask_polygons(mask)
    if not outlines or len(outlines[0]) < 3:
        return None
    ytl, ybr, xtl, xbr = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    crop = mask[ytl:ybr + 1, xtl:xbr + 1]
    ticket.take(2 * crop.size + 24 * len(outlines[0]) + 256)
    text = np.full(2 * crop.size, ord(","), dtype=np.uint8)
    text[0::2] = crop.ravel().view(np.uint8) + ord("0")  # "v," for every crop pixel, row by row
    head = json.dumps({"confidence": str(round(float(confidence), 6)), "label": label,
                       "points": [v for point in outlines[0] for v in point], "type": "mask"})
    return (head[:-1] + ', "mask": [').encode() + text.tobytes() + f"{xtl}, {ytl}, {xbr}, {ybr}]}}".encode()


def answer(records: list[dict], body: DetectorRequest, ticket: Ticket) -> bytes:
    """The JSON list of CVAT items for `records` (the generator's): the best `max_masks` at or above the
    threshold."""
    items = [cvat_item(mask, float(record["predicted_iou"]), body.label, ticket)
             for record, mask in best_masks(records, body.max_masks, body.threshold)]
    return b"[" + b", ".join(item for item in items if item is not None) + b"]"


def router(serving: Serving) -> APIRouter:
    routes = APIRouter(tags=["cvat"])

    @routes.post("/v1/cvat/detector", openapi_extra={"requestBody": {"content": {"application/json": {
        "schema": DetectorRequest.model_json_schema()}}, "required": True}})
    async def detector(request: Request) -> Response:
        """Automatic masks of one image, as CVAT's serverless detector functions answer them. The token (if the
        server has one) is checked before the body is read."""
        with serving.ticket() as ticket:
            body = await serving.json(request, DetectorRequest, ticket)
            serving.check_force(body.force)
            config = generator_config(body.options)
            job, width, height = await generate(serving, codec.decode_base64(body.image, "image"), config,
                                                body.force, ticket)
            ticket.take(height * width)  # one decoded mask at a time
            content = await run_in_threadpool(answer, job.prediction.records, body, ticket)
        return Response(content, media_type="application/json", headers={
            "X-Samcl-Domain": str(job.prediction.domain), "X-Samcl-Generation": str(job.generation)})

    return routes
