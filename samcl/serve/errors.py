"""The one error a request can get: an HTTP status, a machine-readable code, and a line naming the problem.

Every client mistake is raised as `ApiError` (4xx) and answered as JSON `{"error": {"code", "message"}}`; the
app turns framework errors (validation, unknown routes, oversized bodies) into the same shape, and anything
unexpected into a 500 of that shape without a traceback (the traceback goes to the server's log)."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}
