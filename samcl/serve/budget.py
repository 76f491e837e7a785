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

import threading

from .errors import ApiError

#: Bytes a decoded image holds per pixel until its prefix has run, measured by benchmarks/serve_uploads.py: the
#: decoder's buffer (4 per RGB pixel in Pillow), the RGB array (3), an EXIF rotation's copy (4), the resize (1).
BYTES_PER_PIXEL = 12
RETRY_AFTER_S = 1


class InflightBudget:
    def __init__(self, budget: int):
        self.budget, self.used, self.peak, self.refused = budget, 0, 0, 0
        self._lock = threading.Lock()

    def ticket(self) -> "Ticket":
        return Ticket(self)

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
