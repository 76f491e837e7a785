"""The memory all requests in flight may hold together: their bodies as they arrive and their decoded images.

    budget = InflightBudget(1 << 30)
    with budget.ticket() as ticket:                      # one request, from its first byte to its answer
        ticket.take(len(body))                           # ApiError 503 + Retry-After when the budget is spent
        ticket.take(width * height * BYTES_PER_PIXEL)    # before decoding (the size is in the file's header)
    # what the request took is given back when it ends: answered, refused, or its client gone

Each upload under the megapixel cap is fine alone; what bounds the process is the sum over concurrent requests.
A request is charged before it allocates, and a request that would pass the budget is refused at once (503 and
`Retry-After`: the client retries, nothing queues unbounded). A request larger than the whole budget (possible
when `--max-megapixels` is set high and the budget low) is let in only while nothing else is in flight, so it
can still be served, alone. The event loop takes and gives back; a lock keeps the counts exact anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

from .errors import ApiError

#: Bytes of process memory per pixel of an image being decoded or waiting for its prefix, by file format: Pillow's
#: decode buffer (4 per RGB pixel), the RGB array (3), Pillow's copy for the resize (4), the decoder's own working
#: memory, and what the allocator keeps around them. benchmarks/decode_memory.py measured the peak RSS growth per
#: pixel of one decode (8 MP and 20 MP, RGB): PNG 14.1, JPEG 14.2, WebP 22.7 (libwebp decodes into a buffer of its
#: own first); charged with a margin, and a format not measured at the largest charge.
DECODE_BYTES_PER_PIXEL = {"PNG": 16, "JPEG": 16, "MPO": 16, "WEBP": 26}
OTHER_FORMAT_BYTES_PER_PIXEL = 26
#: The PNG charge (the common upload).
BYTES_PER_PIXEL = DECODE_BYTES_PER_PIXEL["PNG"]
RETRY_AFTER_S = 1


def decode_cost(image_format: str | None, pixels: int) -> int:
    """Bytes to charge before decoding `pixels` of a file in `image_format` (Pillow's name: "PNG", "WEBP", ...)."""
    return pixels * DECODE_BYTES_PER_PIXEL.get((image_format or "").upper(), OTHER_FORMAT_BYTES_PER_PIXEL)


class InflightBudget:
    def __init__(self, budget: int):
        self.budget, self.used, self.peak, self.refused = budget, 0, 0, 0
        self._lock = threading.Lock()

    def ticket(self) -> "Ticket":
        return Ticket(self)

    def free(self) -> int:
        with self._lock:
            return self.budget - self.used

    def stats(self) -> dict:
        with self._lock:
            return {"bytes": self.used, "peak": self.peak, "budget": self.budget, "refused": self.refused}

    def _take(self, ticket: "Ticket", nbytes: int) -> None:
        with self._lock:
            alone = self.used == ticket.held  # nothing in flight but this request
            if self.used + nbytes > self.budget and not alone:
                self.refused += 1
                raise ApiError(503, "busy", f"the server is at its budget for requests in flight "
                                            f"({self.budget / 2**20:,.0f} MiB of bodies and decoded images); "
                                            f"retry in {RETRY_AFTER_S} s", {"Retry-After": str(RETRY_AFTER_S)})
            self.used += nbytes
            self.peak = max(self.peak, self.used)
            ticket.held += nbytes

    def _give_back(self, ticket: "Ticket") -> None:
        with self._lock:
            self.used -= ticket.held
            ticket.held = 0


class Ticket:
    """What one request holds of the budget; a context manager that gives it all back at the end."""

    def __init__(self, budget: InflightBudget):
        self.budget, self.held = budget, 0

    def take(self, nbytes: int) -> None:
        if nbytes > 0:
            self.budget._take(self, int(nbytes))

    def __enter__(self) -> "Ticket":
        return self

    def __exit__(self, *exc) -> None:
        self.budget._give_back(self)


def return_large_buffers_to_the_system(threshold: int = 1 << 20) -> bool:
    """Make glibc map every allocation of `threshold` bytes or more on its own and unmap it when freed (a fixed
    M_MMAP_THRESHOLD). By default glibc raises that threshold after the first large free, and decoded images
    then come from per-thread heaps that keep the freed memory: the process would stay at its peak and grow
    past the budget with fragments. False where the C library is not glibc (nothing changes)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, threshold))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False
