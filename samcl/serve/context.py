"""What every router of the server shares: the settings, the opened store, the batcher, the in-flight budget, and
the steps each request goes through in order (token, bounded body, budget, decode, batch).

    serving = Serving(config, host, batcher, InflightBudget(config.max_inflight_bytes))
    with serving.ticket() as ticket:
        data = await serving.body(request, ticket)              # 401 first, then 413 / 503 as the body streams
        body = await serving.json(request, MyRequest, ticket)   # the same, parsed and validated in a thread
        image = await serving.decode(data, ticket)              # 413 above --max-megapixels, 503 past the budget
        await serving.run(job)                                  # one batch through the model thread

A router for another tool's protocol (`api.router(serving)` is this server's own) takes a `Serving` and uses these
steps, so its requests share the one batcher, the limits and the budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from . import codec
from .batching import Batcher
from .budget import BYTES_PER_PIXEL, InflightBudget, Ticket
from .config import ServeConfig
from .forms import read_image
from .intake import check_token, read_body, read_json
from .model import Job, ModelHost


@dataclass
class Serving:
    config: ServeConfig
    host: ModelHost
    batcher: Batcher
    budget: InflightBudget

    @property
    def json_limit(self) -> int:
        """The largest JSON body: an image inline as base64 (4/3 of an upload) and room for the rest."""
        return self.config.max_upload_bytes * 4 // 3 + (64 << 10)

    def ticket(self) -> Ticket:
        """One request's share of the in-flight budget (`with`: given back when the request ends)."""
        return self.budget.ticket()

    def authorise(self, request: Request) -> None:
        check_token(request, self.config.token)

    async def body(self, request: Request, ticket: Ticket, limit: int | None = None) -> bytes:
        self.authorise(request)
        return await read_body(request, self.config.max_upload_bytes if limit is None else limit, ticket)

    async def image_body(self, request: Request, ticket: Ticket) -> bytes:
        """An uploaded image file: the raw body (any Content-Type) or a multipart form's image part."""
        self.authorise(request)
        return await read_image(request, self.config.max_upload_bytes, ticket)

    async def json(self, request: Request, model: type[BaseModel], ticket: Ticket, limit: int | None = None):
        self.authorise(request)
        return await read_json(request, model, self.json_limit if limit is None else limit, ticket)

    async def decode(self, data: bytes, ticket: Ticket) -> np.ndarray:
        """Image file bytes -> RGB array; its pixels charged to the budget between reading its size and decoding."""
        opened = await run_in_threadpool(codec.open_image, data, self.config.max_pixels)
        ticket.take(opened.width * opened.height * BYTES_PER_PIXEL)
        return await run_in_threadpool(codec.load_image, opened)

    async def run(self, job: Job) -> Job:
        await self.batcher.submit(job)
        if job.error is not None:
            raise job.error
        return job


def timings(job: Job, start: float) -> dict:
    return {**{k: round(v, 3) for k, v in job.timings.items()}, "batch_size": job.batch_size,
            "total_ms": round((time.perf_counter() - start) * 1e3, 3)}
