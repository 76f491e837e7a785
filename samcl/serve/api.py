"""The server's own API, `/v1`: upload an image, segment it, list the domains.

    app.include_router(api.router(serving))

Handlers read their bodies through `Serving` (token first, bounded, budgeted, JSON parsed in a thread) instead
of typed body parameters; the schemas still document each body in the OpenAPI document.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from .. import Prompt
from . import codec
from .context import Serving, checked, timings
from .errors import ApiError, quoted
from .model import Job
from .schemas import DomainsResponse, ErrorBody, ImageResponse, SegmentRequest, SegmentResponse

ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422, 503)}
IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
        "image": {"type": "string", "format": "binary"}}}}}}}
SEGMENT_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": SegmentRequest.model_json_schema()}}}}


def router(serving: Serving) -> APIRouter:
    host = serving.host
    api = APIRouter()

    @api.get("/v1/domains", response_model=DomainsResponse, responses=ERRORS)
    async def domains(request: Request):
        """The learned domains (modules and their bytes), the base model's identity, the store generation."""
        serving.authorise(request)
        return {"domains": host.domains(), "base": host.base_identity(), "generation": host.generation}

    @api.post("/v1/images", response_model=ImageResponse, responses=ERRORS, openapi_extra=IMAGE_BODY)
    async def upload(request: Request):
        """Upload an image file: the request body itself (PNG, JPEG, ... bytes; any Content-Type), or a multipart
        form's `image` field. Its encoder prefix and pooled features are cached, so each segment request on
        it costs only the prompt-dependent part."""
        start = time.perf_counter()
        with serving.ticket() as ticket:
            loaded = await serving.load(await serving.image_body(request, ticket), ticket)
            job = await serving.run(Job("upload", loaded.key, image=loaded.image, entry=loaded.entry))
        height, width = job.entry.size
        return {"image_id": loaded.key, "width": width, "height": height, "domain": job.chosen,
                "score": job.score, "generation": job.generation, "timings": timings(job, start)}

    @api.post("/v1/segment", response_model=SegmentResponse, responses=ERRORS, openapi_extra=SEGMENT_BODY)
    async def segment(request: Request):
        """Segment an image (by id, or inline) with points, labels and/or a box; the mask as PNG or COCO RLE."""
        start = time.perf_counter()
        with serving.ticket() as ticket:
            body = await serving.json(request, SegmentRequest, ticket)
            key, entry, image = await _image_of(serving, body, ticket)
            height, width = entry.size if entry is not None else image.shape[:2]
            prompt = _prompt(body, width, height)
            serving.check_force(body.force)
            job = await serving.run(Job("segment", key, image=image, entry=entry, prompt=prompt,
                                        domain=body.force))
            mask = job.prediction.masks[0]
            # the answer: charged and encoded under the ticket, off the event loop
            ticket.take(await run_in_threadpool(codec.encode_cost, mask, body.mask_format))
            encoded = await run_in_threadpool(codec.encoded_mask, mask, body.mask_format)
        return {"image_id": key, "domain": job.prediction.domain, "score": job.score,
                "predicted_iou": float(job.prediction.scores[0]), "foreground": float(mask.mean()),
                "mask": {**encoded, "width": width, "height": height}, "generation": job.generation,
                "timings": timings(job, start)}

    return api


async def _image_of(serving: Serving, body: SegmentRequest, ticket):
    """(id, cached entry or None, decoded image or None) of the request's image."""
    cache = serving.host.cache
    if body.image_id is None and body.image is None:
        raise ApiError(400, "no_image", "give image_id (from POST /v1/images) or image (base64)")
    if body.image_id is not None:
        entry = cache.get(body.image_id)
        if entry is not None:
            return body.image_id, entry, None
        if body.image is None:
            raise ApiError(404, "unknown_image", f"image_id {quoted(body.image_id)} is not known here (never "
                                                 "uploaded, evicted from the cache, or uploaded to another server "
                                                 "process): upload it again")
    data = codec.decode_base64(body.image, "image")
    key = codec.image_id(data)
    if body.image_id is not None and body.image_id != key:
        raise ApiError(400, "image_mismatch", f"image_id {quoted(body.image_id)} is not the id of the inline image")
    loaded = await serving.load(data, ticket, key)
    return loaded.key, loaded.entry, loaded.image


def _prompt(body: SegmentRequest, width: int, height: int) -> Prompt:
    """The request's prompt, checked against the image (`Prompt.check`): one label per point, points inside it,
    a sane box."""
    if body.labels is not None and len(body.labels) != len(body.points):
        raise ApiError(400, "bad_labels", f"{len(body.points)} points but {len(body.labels)} labels")
    return checked(Prompt.of(body.points or None, body.labels if body.points else None, body.box), width, height)
