"""Task image URLs taken apart safely: a URL whose host or port does not parse is a 400 (never a 500), and the
path's dot segments are resolved (RFC 3986 5.2.4, '%2e' counted as '.') before any prefix is compared, so
`https://images.example.com/set/../secret` is checked, and fetched, as `https://images.example.com/secret`.

    target = dot_segments_resolved(url)        # None: not a URL with a valid host and port
    scheme, host, port = origin(target)
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit, urlunsplit

_DOT = re.compile(r"%2e", re.IGNORECASE)
_PORT = re.compile(r"[0-9]{1,5}")


def checked_url(url: str) -> SplitResult | None:
    """`urlsplit(url)` when its host and port are valid (ASCII, a port of ASCII digits 1..65535 given once, an
    IPv6 literal closed); None otherwise."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # "http://[::1/x": an unclosed IPv6 literal
        return None
    if not parts.netloc.isascii() or not host:
        return None
    _, _, hostport = parts.netloc.rpartition("@")
    port_text = hostport.rpartition("]")[2] if hostport.startswith("[") else hostport
    if ":" in port_text:
        text = port_text.split(":", 1)[1]
        if ":" in text or not _PORT.fullmatch(text) or not 0 < int(text) <= 65535:
            return None
    return parts


def origin(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host lowercased, port with the scheme's default) of a checked URL; None when it does not parse."""
    parts = checked_url(url)
    if parts is None:
        return None
    return parts.scheme.lower(), parts.hostname.lower(), parts.port or {"http": 80, "https": 443}.get(
        parts.scheme.lower())


def dot_segments_resolved(url: str) -> str | None:
    """`url` with its path's '.' and '..' segments (also percent-encoded) removed as a server would; None when it
    does not parse. An empty segment ('//') is kept: it is not a dot segment."""
    parts = checked_url(url)
    if parts is None:
        return None
    segments = _DOT.sub(".", parts.path).split("/")
    kept: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                kept.append("")
        elif segment == "..":
            if len(kept) > 1:
                kept.pop()
            if last:
                kept.append("")
        else:
            kept.append(segment)
    path = "/".join(kept)
    if parts.path.startswith("/") and not path.startswith("/"):
        path = "/" + path
    if _DOT.sub(".", parts.path) == parts.path and path == parts.path:
        return url  # nothing to resolve: the URL as given (no re-quoting)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))
