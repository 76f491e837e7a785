"""Large answers built under the request's budget ticket and sent before it is given back.

    ticket.take(cvat_answer_cost(mask))                       # 503 before the answer is built, not after
    body = await run_in_threadpool(cvat_answer, mask, extra)   # bytes of JSON, built in a worker thread
    return HeldResponse(body, ticket)                         # the ticket given back once the body is sent

A CVAT answer carries the mask as a H x W list of 0/255: as JSON text it is 4 bytes a pixel, which FastAPI's own
encoder would make from a Python list of lists (8 bytes a pixel of pointers, then a copy, on the event loop). Here
the text is written straight from the mask with numpy into one buffer, every value padded to 3 characters
("  0," or "255,": JSON allows the spaces), in a worker thread; the polygon is traced before it (on the mask's
bounding box), and both are charged before either starts (measured: the numbers below).
"""

from __future__ import annotations

import json

import numpy as np
from starlette.responses import Response

from .budget import Ticket

#: Peak bytes per pixel of the mask's bounding box while its polygon is traced: the padded bool and float64 copies
#: (9) and contourpy's own working memory (20); measured 29.1 on a 16 MP mask (peak RSS growth, one process).
OUTLINE_BYTES_PER_PIXEL = 32
#: Bytes per pixel of the mask of the JSON text (4 and the row brackets; measured 4.3).
JSON_BYTES_PER_PIXEL = 5
_ONE, _ZERO = np.frombuffer(b"255,", dtype=np.uint8), np.frombuffer(b"  0,", dtype=np.uint8)


def cvat_answer_cost(mask: np.ndarray) -> int:
    """Bytes to charge before building the CVAT answer of `mask` (the trace is freed before the text is made)."""
    from .label_studio.labels import outline_box

    box = outline_box(mask)
    traced = 0 if box is None else (box[0][1] - box[0][0]) * (box[1][1] - box[1][0])
    return max(traced * OUTLINE_BYTES_PER_PIXEL, mask.size * JSON_BYTES_PER_PIXEL) + mask.size * JSON_BYTES_PER_PIXEL


def mask_json(mask: np.ndarray, out: np.ndarray) -> None:
    """Write the H x W mask as the JSON text of a list of rows of 0/255 into `out` (uint8, `mask_json_size`)."""
    height, width = mask.shape
    out[0] = ord("[")
    rows = out[1:-1].reshape(height, width * 4 + 2)
    rows[:, 0] = ord("[")
    for start in range(0, height, 256):  # in row blocks: the temporary of np.where stays small
        block = mask[start:start + 256]
        rows[start:start + len(block), 1:-1] = np.where(block[..., None], _ONE, _ZERO).reshape(len(block), -1)
    rows[:, -2] = ord("]")  # over the last value's comma
    rows[:, -1] = ord(",")
    out[-2] = ord("]")  # over the last row's comma
    out[-1] = ord(" ")


def mask_json_size(height: int, width: int) -> int:
    return 1 + height * (width * 4 + 2) + 1


def cvat_answer(mask: np.ndarray, fields: dict) -> memoryview:
    """{"mask": [[0|255, ...], ...], **fields} as JSON bytes, the mask written by `mask_json`."""
    head = b'{"mask": '
    tail = (", " + json.dumps(fields)[1:]).encode() if fields else b"}"
    size = mask_json_size(*mask.shape)
    buffer = bytearray(len(head) + size + len(tail))
    view = np.frombuffer(buffer, dtype=np.uint8)
    view[:len(head)] = np.frombuffer(head, dtype=np.uint8)
    mask_json(np.asarray(mask, dtype=bool), view[len(head):len(head) + size])
    view[len(head) + size:] = np.frombuffer(tail, dtype=np.uint8)
    return memoryview(buffer)


class HeldResponse(Response):
    """A JSON response that holds its request's budget ticket until the body is sent (or the client is gone)."""

    media_type = "application/json"

    def __init__(self, content, ticket: Ticket):
        super().__init__(content)
        self.ticket = ticket

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.ticket.__exit__(None, None, None)
