"""The HTTP server: FastAPI (Starlette underneath) served by uvicorn, the routers, the page, the error shape.

    app = create_app(ServeConfig(store="my-set"))    # opens the store now: a bad store fails before binding
    uvicorn.run(app, host="127.0.0.1", port=8000)

Why FastAPI: the request and response bodies are typed models (`schemas`), which give field-naming 4xx errors and
the OpenAPI document for free; Starlette's test client drives the whole app in tests without a socket; uvicorn
is the common ASGI server (workers, graceful shutdown). One event loop per process is what lets concurrent
requests meet in the batcher; the model itself runs in one thread beside it, and a new store generation loads
in a thread of its own (`reload`). Each protocol is a router over one `Serving` (`context`): this server's own
`/v1` (`api`) here, another tool's beside it with one more `include_router`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from . import api, cvat, cvat_detector, cvat_tracker, label_studio
from .batching import Batcher
from .budget import InflightBudget, return_large_buffers_to_the_system
from .config import ServeConfig
from .context import Serving
from .errors import ApiError
from .intake import validation_message
from .model import ModelHost
from .reload import Reloader

log = logging.getLogger("samcl.serve")
PAGE = Path(__file__).resolve().parent / "page"


def create_app(config: ServeConfig, host: ModelHost | None = None) -> FastAPI:
    host = host or ModelHost(config)
    return_large_buffers_to_the_system()  # so the memory budget bounds the process, not just the live objects
    batcher = Batcher(host.run, None, config.batch_window_s, config.max_batch)
    serving = Serving(config, host, batcher, InflightBudget(config.max_inflight_bytes))
    reloader = Reloader(host, lambda fresh, digest: batcher.call(host.swap, fresh, digest),
                        config.reload_timeout_seconds)

    async def watch_store() -> None:
        while True:
            await asyncio.sleep(config.reload_seconds)
            try:
                await reloader.check()
            except Exception:  # keep watching: the next commit may well be readable
                log.exception("checking the store for a new generation failed")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # the model's one thread: batches and swaps never overlap (made here, so an app can start again)
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
    app.state.serving, app.state.host, app.state.batcher, app.state.config = serving, host, batcher, config
    _error_handlers(app)

    @app.get("/healthz")
    async def healthz() -> dict:
        """Liveness and what is being served (no token needed: load balancers call it). `reload_error`: why the
        store's newest generation is not served (it did not verify, or its load was abandoned as stuck)."""
        return {"status": "ok", "pid": os.getpid(), "generation": host.generation,
                "manifest_sha256": host.manifest_sha256, "domains": len(host.samcl.domains),
                "cache": host.cache.stats(), "batches": host.batches,
                "inflight": serving.budget.stats(), "reload_error": host.reload_error,
                "reload_stuck": reloader.stuck is not None, "auth": bool(config.token)}

    app.include_router(api.router(serving))
    studio = label_studio.router(serving)
    app.include_router(studio)  # /label-studio, with basic auth (what Label Studio sends)
    app.state.label_studio = studio.backend
    app.include_router(cvat.router(serving))
    app.include_router(cvat_detector.router(serving))
    app.include_router(cvat_tracker.router(serving))
    _page(app)
    return app


def _page(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(PAGE / "index.html", media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():
        return Response(status_code=204)

    app.mount("/page", StaticFiles(directory=PAGE), name="page")


def _error_handlers(app: FastAPI) -> None:
    """Every error as {"error": {"code", "message"}}; no traceback ever reaches a client."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return JSONResponse(ApiError(422, "invalid_request", validation_message(exc.errors())).body(),
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status_code, "http_error")
        error = ApiError(exc.status_code, code, str(exc.detail))
        return JSONResponse(error.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(ApiError(500, "internal", "internal error (see the server's log)").body(),
                            status_code=500)
