"""The one error a request can get: an HTTP status, a machine-readable code, and a line naming the problem.

Every client mistake is raised as `ApiError` (4xx, or 503 when the server is busy) and answered as JSON
`{"error": {"code", "message"}}`; the app turns framework errors (validation, unknown routes, oversized bodies)
into the same shape, and anything unexpected into a 500 of that shape without a traceback (the traceback goes to
the server's log). Whatever a message quotes from the request is cut short (`samcl.io.quote`), so an answer never grows
with what the client sent."""

from __future__ import annotations

#: The longest message answered (a message quotes at most a few short pieces of the request).
MESSAGE_CHARS = 600


#: The library's error codes (`SamclError.code`) that a request can cause -> the HTTP status answered; any other code
#: a request causes is a 400 (the library's errors are about what it was given).
STATUS = {
    "no_prompt": 400, "point_outside": 400, "bad_box": 400, "box_outside": 400,  # PromptError: the prompt's fault
    "unknown_domain": 400,  # a forced domain the set does not hold (it may have changed since the request was read)
    "not_found": 404,
    "not_installed": 501, "unsupported": 501,  # a runtime or feature this server cannot run
}


def answer_for(exc, code: str | None = None) -> "ApiError":
    """The answer to a request that raised the library's `exc` (a `SamclError`): its code (or `code`, where the
    route knows better), the status `STATUS` maps it to, and its message."""
    code = code or getattr(exc, "code", None) or "invalid"
    message, field = str(exc), getattr(exc, "field", None)
    if field and message.endswith(f" ({field})"):  # the library's pointer to its argument names nothing in JSON
        message = message[: -len(field) - 3]
    return ApiError(STATUS.get(code, 400), code, message)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        message = message if len(message) <= MESSAGE_CHARS else message[: MESSAGE_CHARS - 1] + "…"
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}
