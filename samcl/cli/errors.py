"""How the command reports what went wrong: one line on stderr."""

from __future__ import annotations

from .. import SamclError


def error_line(exc: BaseException) -> str:
    """An error as one line; an OSError from below (permission denied, disk full...) as 'FILE: reason'."""
    if isinstance(exc, OSError) and not isinstance(exc, SamclError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    text = (getattr(exc, "cli", None) or str(exc)).strip()  # the line in flags' terms, when the library gave one
    return text.splitlines()[0] if text else type(exc).__name__
