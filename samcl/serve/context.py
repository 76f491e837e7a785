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

from .. import Prompt, PromptError
from . import codec
from .batching import Batcher
from .budget import InflightBudget, Ticket, decode_cost
from .config import ServeConfig
from ..io import quote
from .errors import ApiError, answer_for
from .forms import read_upload
from .intake import check_token, parse_json, read_body, read_json
from .model import ModelTask, ModelHost


def checked(prompt: Prompt, width: int, height: int) -> Prompt:
    """`prompt`, checked against a `width` x `height` image (`Prompt.check`): a misfit is a 400 with its code."""
    try:
        prompt.check(width, height)
    except PromptError as exc:
        raise answer_for(exc) from None
    return prompt


@dataclass
class Loaded:
    """An image a request names, as the model thread takes it: its id, and its cached entry or decoded pixels."""

    key: str
    entry: object | None
    image: np.ndarray | None
    width: int
    height: int


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
        return await read_body(request, self.config.max_upload_bytes if limit is None else limit, ticket,
                               timeout_s=self.config.body_timeout_seconds)

    async def image_body(self, request: Request, ticket: Ticket) -> bytes:
        """An uploaded image file: the raw body (any Content-Type) or a multipart form's image part."""
        self.authorise(request)
        return await read_upload(request, self.config.max_upload_bytes, ticket, self.config.body_timeout_seconds)

    async def json(self, request: Request, model: type[BaseModel], ticket: Ticket, limit: int | None = None):
        self.authorise(request)
        return await read_json(request, model, self.json_limit if limit is None else limit, ticket,
                               self.config.body_timeout_seconds)

    async def json_object(self, request: Request, ticket: Ticket, limit: int) -> dict:
        """A JSON object body of another tool's protocol (its own auth checked by the router), capped at `limit`
        while it streams and parsed in a thread with the depth limit."""
        data = await read_body(request, limit, ticket, copies=3, timeout_s=self.config.body_timeout_seconds)
        value = await run_in_threadpool(parse_json, data or b"null")
        if not isinstance(value, dict):
            raise ApiError(422, "invalid_request", "body: expected a JSON object")
        return value

    async def load(self, data: bytes, ticket: Ticket, key: str | None = None) -> Loaded:
        """Image file bytes -> the cached entry of those bytes, or the decoded image (charged to the budget).
        `key`: their `codec.image_id`, when the caller has it already."""
        key = codec.image_id(data) if key is None else key
        entry = self.host.cache.get(key)
        if entry is not None:
            return Loaded(key, entry, None, entry.size[1], entry.size[0])
        image = await self.decode(data, ticket)
        return Loaded(key, None, image, int(image.shape[1]), int(image.shape[0]))

    def check_force(self, force: str | None) -> None:
        """A request's forced domain is one the served set knows (or "base"): a 400 naming it, before any work."""
        domains = self.host.samcl.domains
        if force is not None and force != "base" and force not in domains:
            raise ApiError(400, "unknown_domain", f"unknown domain {quote(force)}; learned: "
                                                  f"{', '.join(domains) or 'none'} (or 'base')")

    async def segment(self, loaded: Loaded, prompt, force: str | None) -> ModelTask:
        """One prompt on one loaded image through the batcher: the finished job."""
        return await self.run(ModelTask("segment", loaded.key, image=loaded.image, entry=loaded.entry, prompt=prompt,
                                  domain=force))

    async def generate(self, loaded: Loaded, config, force: str | None) -> ModelTask:
        """Automatic masks of one loaded image through the batcher (`config`: an `AutoMaskConfig`; crop layers need
        `loaded.image`): the finished job, its `GeneratedMasks` in `job.prediction`."""
        return await self.run(ModelTask("generate", loaded.key, image=loaded.image, entry=loaded.entry, domain=force,
                                  config=config))

    async def decode(self, data: bytes, ticket: Ticket) -> np.ndarray:
        """Image file bytes -> RGB array; its pixels charged to the budget between reading its size and decoding, at
        its format's cost (`budget.decode_cost`)."""
        opened = await run_in_threadpool(codec.open_image, data, self.config.max_pixels)
        ticket.take(decode_cost(opened.format, opened.width * opened.height))
        return await run_in_threadpool(codec.load_image, opened)

    async def run(self, job: ModelTask) -> ModelTask:
        await self.batcher.submit(job)
        if job.error is not None:
            raise job.error
        return job


def timings(job: ModelTask, start: float) -> dict:
    return {**{k: round(v, 3) for k, v in job.timings.items()}, "batch_size": job.batch_size,
            "total_ms": round((time.perf_counter() - start) * 1e3, 3)}
