"""The library's one error type for what the user gave it: every room raises it, every front end shows it."""

from __future__ import annotations

__all__ = ["SamclError"]


class SamclError(Exception):
    """A problem with the user's input or files: shown as one line, exit code 2, nothing saved is changed.

    Arguments:
      message (str): the problem, in the library's own terms (its arguments and config fields, never a flag).
      code (str): a short machine code for the kind of problem (`invalid`, `not_found`, `unsupported`, ...); the
        server answers it, `samcl.serve.errors` maps it to an HTTP status.
      field (str | None): the argument or config field at fault, as the library names it (`"TrainConfig.lr"`,
        `"runtime"`, `"allowed_urls"`); the command line shows it as its flag (`samcl.cli.errors.FLAGS`).
    """

    def __init__(self, message: str, *, code: str = "invalid", field: str | None = None):
        super().__init__(message)
        self.code, self.field = code, field
