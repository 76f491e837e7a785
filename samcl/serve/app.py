"""The HTTP API and the page, on FastAPI (Starlette underneath) served by uvicorn.

    app = create_app(ServeConfig(store="my-set"))    # opens the store now: a bad store fails before binding
    uvicorn.run(app, host="127.0.0.1", port=8000)

Why FastAPI: the request bodies are typed models (`schemas`), which give field-naming 4xx errors and the OpenAPI
document for free; Starlette's test client drives the whole app in tests without a socket; uvicorn is the
common ASGI server (workers, graceful shutdown). One event loop per process is what lets concurrent requests
meet in the batcher; the model itself runs in one thread beside it.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._version import __version__
from ..types import Prompt
from . import codec, cvat, label_studio
from .batching import Batcher
from .config import ServeConfig
from .errors import ApiError
from .limits import BodyLimit, BodyTooLarge
from .model import Job, ModelHost
from .schemas import DomainsResponse, ErrorBody, ImageResponse, SegmentRequest, SegmentResponse

log = logging.getLogger("samcl.serve")
PAGE = Path(__file__).resolve().parent / "page"
ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 415, 422)}


def create_app(config: ServeConfig, host: ModelHost | None = None) -> FastAPI:
    host = host or ModelHost(config)
    batcher = Batcher(host.run, None, config.batch_window_s, config.max_batch)

    async def watch_store() -> None:
        while True:
            await asyncio.sleep(config.reload_seconds)
            try:
                await batcher.call(host.reload_if_changed)
            except Exception:  # keep watching: the next commit may well be readable
                log.exception("checking the store for a new generation failed")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # the model's one thread: batches and reloads never overlap (made here, so an app can start again)
        batcher.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="samcl-model")
        batcher.start()
        watcher = asyncio.get_running_loop().create_task(watch_store())
        yield
        watcher.cancel()
        await batcher.stop()
        batcher.executor.shutdown(wait=True)

    app = FastAPI(title="samcl", version=__version__, lifespan=lifespan,
                  description="Segment Anything with one AugModule per learned domain; the Module Selector picks "
                              "the module per image. Send `Authorization: Bearer TOKEN` when the server has one.")
    app.state.host, app.state.batcher, app.state.config = host, batcher, config
    app.add_middleware(BodyLimit, limits={"/v1/images": config.max_upload_bytes,
                                          "/v1/segment": config.max_upload_bytes * 4 // 3 + (64 << 10),
                                          "/v1/cvat/interactor": config.max_upload_bytes * 4 // 3 + (64 << 10)})
    _error_handlers(app)

    def authorised(request: Request) -> None:
        if not config.token:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), config.token.encode()):
            raise ApiError(401, "unauthorized", "missing or wrong token: send 'Authorization: Bearer TOKEN'")

    auth = [Depends(authorised)]
    studio = label_studio.router(host, batcher, config)
    app.include_router(studio)  # /label-studio, with basic auth (what Label Studio sends)
    app.state.label_studio = studio.backend
    app.include_router(cvat.router(host, batcher, config), dependencies=auth)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(PAGE / "index.html", media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():
        return Response(status_code=204)

    app.mount("/page", StaticFiles(directory=PAGE), name="page")

    @app.get("/healthz")
    async def healthz() -> dict:
        """Liveness and what is being served (no token needed: load balancers call it)."""
        return {"status": "ok", "pid": os.getpid(), "generation": host.generation, "domains": len(host.samcl.domains),
                "cache": host.cache.stats(), "batches": host.batches, "reload_error": host.reload_error,
                "auth": bool(config.token)}

    @app.get("/v1/domains", response_model=DomainsResponse, dependencies=auth, responses=ERRORS)
    async def domains():
        """The learned domains (modules and their bytes), the base model's identity, the store generation."""
        return {"domains": host.domains(), "base": host.base_identity(), "generation": host.generation}

    @app.post("/v1/images", response_model=ImageResponse, dependencies=auth, responses=ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {
                  "schema": {"type": "string", "format": "binary"}}}}})
    async def upload(request: Request):
        """Upload an image file (the request body: PNG, JPEG, ... bytes). Its encoder prefix and the selector's
        pick are cached, so each segment request on it costs only the prompt-dependent part."""
        start = time.perf_counter()
        kind = request.headers.get("content-type", "")
        if kind.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            raise ApiError(415, "not_raw_image", f"send the image file itself as the request body (curl "
                                                 f"--data-binary @photo.jpg), not as a form ({kind.split(';')[0]})")
        data = await request.body()
        key = codec.image_id(data)
        entry = host.cache.get(key)
        image = None if entry is not None else await run_in_threadpool(codec.decode_image, data, config.max_pixels)
        job = Job("upload", key, image=image, entry=entry)
        await _run(batcher, job)
        height, width = job.entry.size
        return {"image_id": key, "width": width, "height": height, "domain": job.chosen,
                "score": job.score, "generation": job.generation, "timings": _timings(job, start)}

    @app.post("/v1/segment", response_model=SegmentResponse, dependencies=auth, responses=ERRORS)
    async def segment(body: SegmentRequest):
        """Segment an image (by id, or inline) with points, labels and/or a box; the mask as PNG or COCO RLE."""
        start = time.perf_counter()
        key, entry, image = await _image_of(host, config, body)
        height, width = entry.size if entry is not None else image.shape[:2]
        prompt = _prompt(body, width, height)
        if body.domain is not None and body.domain != "base" and body.domain not in host.samcl.domains:
            raise ApiError(400, "unknown_domain", f"unknown domain {body.domain!r}; learned: "
                                                  f"{', '.join(host.samcl.domains) or 'none'} (or 'base')")
        job = Job("segment", key, image=image, entry=entry, prompt=prompt, domain=body.domain)
        await _run(batcher, job)
        mask = job.prediction.masks[0]
        if body.mask_format == "png":
            encoded = {"format": "png", "data": codec.png_base64(mask)}
        else:
            encoded = {"format": "rle", **codec.coco_rle(mask)}
        return {"image_id": key, "domain": job.prediction.domain, "score": job.score,
                "predicted_iou": float(job.prediction.scores[0]), "foreground": float(mask.mean()),
                "mask": {**encoded, "width": width, "height": height}, "generation": job.generation,
                "timings": _timings(job, start)}

    return app


async def _run(batcher: Batcher, job: Job) -> None:
    await batcher.submit(job)
    if job.error is not None:
        raise job.error


def _timings(job: Job, start: float) -> dict:
    return {**{k: round(v, 3) for k, v in job.timings.items()}, "batch_size": job.batch_size,
            "total_ms": round((time.perf_counter() - start) * 1e3, 3)}


async def _image_of(host: ModelHost, config: ServeConfig, body: SegmentRequest):
    """(id, cached entry or None, decoded image or None) of the request's image."""
    if body.image_id is None and body.image is None:
        raise ApiError(400, "no_image", "give image_id (from POST /v1/images) or image (base64)")
    if body.image_id is not None:
        entry = host.cache.get(body.image_id)
        if entry is not None:
            return body.image_id, entry, None
        if body.image is None:
            raise ApiError(404, "unknown_image", f"image_id {body.image_id!r} is not known here (never uploaded, "
                                                 "evicted from the cache, or uploaded to another server process): "
                                                 "upload it again")
    data = codec.decode_base64(body.image, "image")
    key = codec.image_id(data)
    if body.image_id is not None and body.image_id != key:
        raise ApiError(400, "image_mismatch", f"image_id {body.image_id!r} is not the id of the inline image")
    entry = host.cache.get(key)
    if entry is not None:
        return key, entry, None
    return key, None, await run_in_threadpool(codec.decode_image, data, config.max_pixels)


def _prompt(body: SegmentRequest, width: int, height: int) -> Prompt:
    """The request's prompt, checked against the image: points inside it, one label per point, a sane box."""
    if not body.points and body.box is None:
        raise ApiError(400, "no_prompt", "give at least one point or a box")
    if body.labels is not None and len(body.labels) != len(body.points):
        raise ApiError(400, "bad_labels", f"{len(body.points)} points but {len(body.labels)} labels")
    for x, y in body.points:
        if not (0 <= x < width and 0 <= y < height):
            raise ApiError(400, "point_outside", f"point {x:g},{y:g} lies outside the {width}x{height} image")
    if body.box is not None:
        x0, y0, x1, y1 = body.box
        if x1 < x0 or y1 < y0:
            raise ApiError(400, "bad_box", f"box {x0:g},{y0:g},{x1:g},{y1:g}: needs x0 <= x1 and y0 <= y1")
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise ApiError(400, "box_outside", f"box {x0:g},{y0:g},{x1:g},{y1:g} reaches outside the "
                                               f"{width}x{height} image")
    return Prompt.of(body.points or None, body.labels if body.points else None, body.box)


def _error_handlers(app: FastAPI) -> None:
    """Every error as {"error": {"code", "message"}}; no traceback ever reaches a client."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        parts = []
        for error in exc.errors()[:5]:
            if error.get("type") == "json_invalid":
                parts.append(f"body: not valid JSON ({error.get('ctx', {}).get('error', 'decode error')})")
                continue
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
            parts.append(f"{where}: {error.get('msg', 'invalid')}")
        return JSONResponse(ApiError(422, "invalid_request", "; ".join(parts)).body(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if isinstance(exc.__cause__, BodyTooLarge):  # FastAPI re-raises a failed body read as a 400
            exc = exc.__cause__
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status_code, "http_error")
        return JSONResponse(ApiError(exc.status_code, code, str(exc.detail)).body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(ApiError(500, "internal", "internal error (see the server's log)").body(),
                            status_code=500)
