"""What a request brings in, checked in the order that costs least: the token, the declared size, the in-flight
budget, then the body as it streams (bounded), then JSON parsed in a thread with a depth limit.

    check_token(request, token)                               # ApiError 401 before a byte of the body is read
    data = await read_body(request, limit, ticket)            # 413 past `limit`, 503 past the in-flight budget,
                                                              # 408 when the body stalls or outlasts its deadline
    body = await read_json(request, SegmentRequest, limit, ticket)   # 422 naming the field, never 400 or 500

Reading the body ourselves (instead of a typed body parameter, which FastAPI reads and parses before any check
runs, on the event loop) is what puts the token first: an unauthenticated 25 MB upload is refused from its
headers, and no client can stall the others with a large or deeply nested JSON body. The budget is charged by the
bytes received (a declared length only refuses at once what the limit never takes), so a client that declares
25 MB and sends 10 bytes holds 10 bytes of it; and a body that sends nothing for `STALL_S` seconds, or is not
complete `timeout_s` seconds after its headers, is answered 408 and its charge given back.
"""

from __future__ import annotations

import asyncio
import hmac
import logging

from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from .budget import Ticket
from .. import SamclError
from ..io import parse_json as io_parse_json, quote
from .errors import ApiError

log = logging.getLogger("samcl.serve")

#: Seconds a body may send nothing before it is answered 408 (`ServeConfig.body_timeout_seconds` bounds the whole).
STALL_S = 10.0
#: Seconds a whole body may take when the caller gives no deadline (`ServeConfig.body_timeout_seconds`).
BODY_TIMEOUT_S = 60.0


def check_token(request: Request, token: str | None) -> None:
    """401 unless the request carries `Authorization: Bearer TOKEN` (compared in constant time)."""
    if not token:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "unauthorized", "missing or wrong token: send 'Authorization: Bearer TOKEN'")


def declared_length(request: Request, limit: int) -> int | None:
    """The body's Content-Length (None when chunked), refused at once when over `limit`."""
    text = request.headers.get("content-length")
    if text is None:
        return None
    if not text.strip().isdigit():
        raise ApiError(400, "bad_content_length", f"Content-Length {quote(text)} is not a byte count")
    declared = int(text)
    if declared > limit:
        raise too_large(limit)
    return declared


def too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"request body exceeds this server's limit of {limit:,} bytes")


async def body_chunks(request: Request, limit: int, ticket: Ticket, copies: int,
                      timeout_s: float = BODY_TIMEOUT_S):
    """The body's chunks as they arrive, at most `limit` bytes in all; `copies` bytes of the budget taken per body
    byte received (the body, and what is made of it before it is freed). ApiError 408 when no byte comes for
    `STALL_S` seconds or the body is not complete within `timeout_s`. A client gone mid-body is one log line."""
    declared_length(request, limit)  # a declared length over the limit: refused before a byte is read
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    stream = request.stream().__aiter__()
    seen = 0
    try:
        while True:
            left = deadline - loop.time()
            try:
                chunk = await asyncio.wait_for(stream.__anext__(), max(min(left, STALL_S), 0.0))
            except StopAsyncIteration:
                return
            except (asyncio.TimeoutError, TimeoutError):
                stalled = "sent nothing for" if left > STALL_S else "was not complete after"
                seconds = STALL_S if left > STALL_S else timeout_s
                log.info("client %s: the body of %s %s %s %g s (%d bytes): 408", _peer(request), request.method,
                         request.url.path, stalled, seconds, seen)
                raise ApiError(408, "body_timeout", f"the request body {stalled} {seconds:g} s ({seen:,} bytes "
                                                    "received): send it at once", {"Connection": "close"}) from None
            seen += len(chunk)
            if seen > limit:
                raise too_large(limit)
            ticket.take(len(chunk) * copies)
            yield chunk
    except ClientDisconnect:
        log.info("client %s went away during %s %s after %d bytes", _peer(request), request.method,
                 request.url.path, seen)
        raise ApiError(400, "client_disconnected", "the client closed the connection before sending the body") \
            from None


async def read_body(request: Request, limit: int, ticket: Ticket, copies: int = 2,
                    timeout_s: float = BODY_TIMEOUT_S) -> bytes:
    """The whole body, bounded by `limit` and `timeout_s` (default charge: the buffer as it grows and the bytes
    made of it)."""
    buffer = bytearray()
    async for chunk in body_chunks(request, limit, ticket, copies, timeout_s):
        buffer += chunk
    return bytes(buffer)


def parse_json(data: bytes, depth: int = 32):
    """JSON bytes -> Python value (`samcl.io.parse_json`, at a stricter `depth` than a file's: the API's own
    bodies are 3 deep, {"points": [[x, y]]}); ApiError 422 for bad JSON or nesting deeper than `depth`."""
    try:
        return io_parse_json(data, "body", "not valid JSON", max_depth=depth)
    except SamclError as exc:
        raise invalid(str(exc)) from None


def invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_request", message)


def validation_message(errors: list[dict]) -> str:
    """Pydantic's (or FastAPI's) errors as one line naming each field (at most five), never quoting its value."""
    parts = []
    for error in errors[:5]:
        if error.get("type") == "json_invalid":
            parts.append(f"body: not valid JSON ({str(error.get('ctx', {}).get('error', 'decode error'))[:120]})")
            continue
        where = ".".join(str(p)[:40] for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {str(error.get('msg', 'invalid'))[:160]}")
    return "; ".join(parts)


def parse_model(data: bytes, model: type[BaseModel]):
    value = parse_json(data)
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise invalid(validation_message(exc.errors())) from None


async def read_json(request: Request, model: type[BaseModel], limit: int, ticket: Ticket,
                    timeout_s: float = BODY_TIMEOUT_S):
    """The body as `model`: size-capped while it streams, then parsed and validated in a worker thread."""
    # the bytes, the parsed strings, what they decode to
    data = await read_body(request, limit, ticket, copies=3, timeout_s=timeout_s)
    return await run_in_threadpool(parse_model, data, model)


def _peer(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client else "?"
