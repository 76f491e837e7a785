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
from ..io import quote
from .errors import ApiError
from .model import ModelTask
from .schemas import (DomainsResponse, ErrorBody, GenerateRequest, GenerateResponse, ImageResponse, SegmentRequest,
                      SegmentResponse)

ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422, 503)}
IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
        "image": {"type": "string", "format": "binary"}}}}}}}
SEGMENT_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": SegmentRequest.model_json_schema()}}}}
GENERATE_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": GenerateRequest.model_json_schema()}}}}
#: What one /v1/generate may ask of this server, beyond AutoMaskConfig's own ranges: the grid and the crops set the
#: decoder work (points_per_side^2 prompts, times the crops).
GENERATE_LIMITS = {"points_per_side": 64, "crop_n_layers": 2}
#: The memory one batch of grid points may take while it is decoded (three float32 logits and a mask per point at the
#: image's size, about 6 bytes a pixel a mask): the server decodes fewer points at once where a batch would take more
#: (the result does not depend on the batch), and charges it to the in-flight budget.
GENERATE_WORK_BYTES = 256 << 20
#: Bytes of the answer per mask besides its RLE counts (numbers, keys), and copies of it held while it is sent.
ANSWER_BYTES_PER_MASK, ANSWER_COPIES = 400, 3


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
            job = await serving.run(ModelTask("upload", loaded.key, image=loaded.image, entry=loaded.entry))
        height, width = job.entry.size
        return {"image_id": loaded.key, "width": width, "height": height, "domain": job.chosen,
                "domain_score": job.domain_score, "generation": job.generation, "timings": timings(job, start)}

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
            job = await serving.run(ModelTask("segment", key, image=image, entry=entry, prompt=prompt,
                                        domain=body.force))
            mask = job.prediction.masks[0]
            # the answer: charged and encoded under the ticket, off the event loop
            ticket.take(await run_in_threadpool(codec.encode_cost, mask, body.mask_format))
            encoded = await run_in_threadpool(codec.encoded_mask, mask, body.mask_format)
        return {"image_id": key, "domain": job.prediction.domain, "domain_score": job.domain_score,
                "score": float(job.prediction.scores[0]), "foreground": float(mask.mean()),
                "mask": {**encoded, "width": width, "height": height}, "generation": job.generation,
                "timings": timings(job, start)}

    @api.post("/v1/generate", response_model=GenerateResponse, responses=ERRORS, openapi_extra=GENERATE_BODY)
    async def generate(request: Request):
        """Automatic masks of an image (by id, or inline): Meta's automatic mask generator on the routed module (or
        `force`), no prompt; the masks as COCO RLE records with Meta's keys."""
        start = time.perf_counter()
        with serving.ticket() as ticket:
            body = await serving.json(request, GenerateRequest, ticket)
            config = auto_config(body)
            key, entry, image = await _image_of(serving, body, ticket, pixels=config.crop_n_layers > 0)
            height, width = entry.size if entry is not None else image.shape[:2]
            serving.check_force(body.force)
            config = fit_batch(config, height, width, ticket)
            job = await serving.run(ModelTask("generate", key, image=image, entry=entry, domain=body.force,
                                              config=config))
            generated = job.prediction
            records = generated.records[:body.max_masks]
            ticket.take(ANSWER_COPIES * sum(len(r["segmentation"]["counts"]) + ANSWER_BYTES_PER_MASK for r in records))
            masks = [{k: r[k] for k in ("segmentation", "area", "bbox", "predicted_iou", "stability_score",
                                        "point_coords", "crop_box")} for r in records]
            return {"image_id": key, "domain": generated.domain, "domain_score": generated.domain_score, "width": width,
                    "height": height, "count": len(generated.records), "masks": masks,
                    "generation": job.generation, "timings": timings(job, start)}

    return api


def auto_config(body: GenerateRequest):
    """The request's generator options as an `AutoMaskConfig` (left out: Meta's defaults), within this server's
    `GENERATE_LIMITS`: a 422 naming the field otherwise."""
    from ..inference import AutoMaskConfig

    options = {name: getattr(body, name) for name in AutoMaskConfig.__dataclass_fields__
               if name != "output_mode" and getattr(body, name, None) is not None}
    for name, most in GENERATE_LIMITS.items():
        if options.get(name, 0) > most:
            raise ApiError(422, "invalid_request", f"{name}: {options[name]} is more than this server's limit of "
                                                   f"{most}")
    try:
        return AutoMaskConfig(**options, output_mode="coco_rle")
    except ValueError as exc:  # "AutoMaskConfig.points_per_side 0: expected an integer from 1 to 1,024"
        raise ApiError(422, "invalid_request", str(exc).removeprefix("AutoMaskConfig.")) from None


def fit_batch(config, height: int, width: int, ticket):
    """`config` with points_per_batch lowered where a batch would take more than GENERATE_WORK_BYTES to decode (the
    masks do not depend on it); the batch's memory charged to the request's budget."""
    from dataclasses import replace

    per_point = 3 * 6 * height * width
    batch = max(1, min(config.points_per_batch, GENERATE_WORK_BYTES // per_point))
    ticket.take(batch * per_point)
    return replace(config, points_per_batch=batch) if batch != config.points_per_batch else config


async def _image_of(serving: Serving, body: SegmentRequest | GenerateRequest, ticket, pixels: bool = False):
    """(id, cached entry or None, decoded image or None) of the request's image; `pixels`: the decoded image is
    needed even when its entry is cached (crops of automatic masks), so it must come inline."""
    cache = serving.host.cache
    if body.image_id is None and body.image is None:
        raise ApiError(400, "no_image", "give image_id (from POST /v1/images) or image (base64)")
    if pixels and body.image is None:
        raise ApiError(400, "image_needed", "crop_n_layers > 0 encodes crops of the image anew: send the image "
                                            "inline (image, base64)")
    if body.image_id is not None and not pixels:
        entry = cache.get(body.image_id)
        if entry is not None:
            return body.image_id, entry, None
        if body.image is None:
            raise ApiError(404, "unknown_image", f"image_id {quote(body.image_id)} is not known here (never "
                                                 "uploaded, evicted from the cache, or uploaded to another server "
                                                 "process): upload it again")
    data = codec.decode_base64(body.image, "image")
    key = codec.image_id(data)
    if body.image_id is not None and body.image_id != key:
        raise ApiError(400, "image_mismatch", f"image_id {quote(body.image_id)} is not the id of the inline image")
    if pixels:  # decoded even when cached: the crops need the pixels
        return key, serving.host.cache.get(key), await serving.decode(data, ticket)
    loaded = await serving.load(data, ticket, key)
    return loaded.key, loaded.entry, loaded.image


def _prompt(body: SegmentRequest, width: int, height: int) -> Prompt:
    """The request's prompt, checked against the image (`Prompt.check`): one label per point, points inside it,
    a sane box."""
    if body.labels is not None and len(body.labels) != len(body.points):
        raise ApiError(400, "bad_labels", f"{len(body.points)} points but {len(body.labels)} labels")
    return checked(Prompt.of(body.points or None, body.labels if body.points else None, body.box), width, height)
