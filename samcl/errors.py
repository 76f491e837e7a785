"""The library's one error type for what the user gave it: every room raises it, every front end shows it."""

from __future__ import annotations

__all__ = ["SamclError"]


class SamclError(Exception):
    """A problem with the user's input or files: shown as one line, exit code 2, nothing saved is changed.

    The message names the problem in the library's own terms (arguments, config fields); `cli`, when given, is the
    same line in the command line's terms (its flags), which the `samcl` command prints instead."""

    def __init__(self, message: str, *, cli: str | None = None):
        super().__init__(message)
        self.cli = cli
