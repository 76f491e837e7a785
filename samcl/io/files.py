"""Files: bounded reads of regular files, JSON with a depth limit, atomic writes, and the store writers' fault
points.

Every file samcl reads goes through `open_regular` (or `read_limited` / `read_json_file` on top of it): a FIFO,
a device or a symlink to one is refused before any read can block or run forever, and what is read is bounded by
the size the caller expects. New files get the permissions any Unix tool gives them (0666 minus the umask), and a
file that is replaced keeps its own."""

from __future__ import annotations

import json
import os
import re
import reprlib
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import SamclError

#: Test hook for fault injection: with SAMCL_FAULT_DELAY=<seconds> every step of a store write announces itself
#: on stderr ("samcl-fault: <step>") and then pauses, so a test can kill the writer between two file writes.
FAULT_DELAY_ENV = "SAMCL_FAULT_DELAY"


def fault_point(step: str) -> None:
    """A point between two steps of a write where a crash must leave a consistent store (no-op by default)."""
    delay = os.environ.get(FAULT_DELAY_ENV)
    if not delay:
        return
    print(f"samcl-fault: {step}", file=sys.stderr, flush=True)
    try:
        time.sleep(max(float(delay), 0.0))
    except ValueError:
        pass


class NoSuchFile(SamclError):
    """The file to read is not there (a caller expecting it may say more)."""


#: JSON nested deeper than this is refused before it is parsed: samcl's own files nest a few levels, and Python's
#: parser recurses once per level (a file nested a million levels deep would end in a RecursionError).
MAX_JSON_DEPTH = 64


def open_regular(path: Path, what: str = "file") -> BinaryIO:
    """`path` opened for binary reading if it is a regular file (a symlink to one is fine). A FIFO, a device, a
    socket or a folder is refused before any read: stat first, then open with O_NONBLOCK (a FIFO swapped in
    between opens at once instead of waiting for a writer) and check the opened file itself again."""
    path = Path(path)
    try:
        _check_kind(path, os.stat(path).st_mode, what)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise NoSuchFile(f"{path}: no such file") from None
    except PermissionError:
        raise SamclError(f"{path}: permission denied") from None
    except OSError as exc:
        raise SamclError(f"{path}: unreadable ({exc.strerror or exc})") from None
    try:
        _check_kind(path, os.fstat(fd).st_mode, what)
        os.set_blocking(fd, True)
        return open(path, "rb", opener=lambda *_: fd)  # (named by its path, for messages of other libraries)
    except BaseException:
        os.close(fd)
        raise


def _check_kind(path: Path, mode: int, what: str) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise SamclError(f"{path}: is a folder, not {_article(what)}")
    expected = "" if what == "file" else f" (expected {_article(what)})"
    raise SamclError(f"{path}: is a {_file_kind(mode)}, not a regular file{expected}")


def _article(what: str) -> str:
    return f"{'an' if what[:1] in 'aeiou' else 'a'} {what}"


def check_regular(path: Path, what: str = "file") -> None:
    """`path` is a regular file (for a file another library opens by name, e.g. transformers' safetensors): a
    stat, not an open, so the file is still opened once."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise NoSuchFile(f"{path}: no such file") from None
    except OSError as exc:
        raise SamclError(f"{path}: unreadable ({exc.strerror or exc})") from None
    _check_kind(path, mode, what)


def read_limited(path: Path, limit: int, what: str = "file") -> bytes:
    """The bytes of the regular file `path`, refused unread if it holds more than `limit` bytes."""
    with open_regular(path, what) as handle:
        size = os.fstat(handle.fileno()).st_size
        data = handle.read(limit + 1) if size <= limit else b""
    if size > limit or len(data) > limit:
        raise SamclError(f"{path}: {max(size, len(data)):,} bytes, more than {_article(what)} holds here "
                         f"(at most {limit:,}); nothing was read")
    return data


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_OPEN, _JSON_CLOSE = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)


def json_depth(data: bytes) -> int:
    """How deep the arrays and objects of JSON text nest (brackets inside strings do not count)."""
    text = np.frombuffer(_JSON_STRING.sub(b'""', data), np.uint8)
    brackets = text[np.isin(text, _JSON_OPEN) | np.isin(text, _JSON_CLOSE)]
    steps = np.where(np.isin(brackets, _JSON_OPEN), 1, -1).astype(np.int64)
    return int(np.cumsum(steps).max(initial=0))


def parse_json(data: bytes | str, source, problem: str = "malformed JSON", max_depth: int = MAX_JSON_DEPTH):
    """JSON text -> its value; nesting deeper than `max_depth` is refused before parsing. Every problem is one
    SamclError "<source>: <problem> (<why>)"."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    depth = json_depth(raw)
    if depth > max_depth:
        raise SamclError(f"{source}: {problem} (nested {depth:,} levels deep; at most {max_depth} are read)")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise SamclError(f"{source}: {problem} ({one_line(exc)})") from None


def read_json_file(path: Path, limit: int, what: str = "JSON file", problem: str | None = None):
    """A regular JSON file of at most `limit` bytes, depth-checked (`parse_json`)."""
    return parse_json(read_limited(path, limit, what), path, problem or f"malformed {what}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, rename over `path`, fsync the folder.

    A crash leaves either the old file or the new one at `path` (and possibly a stale `.<name>.*.tmp` beside it)."""
    path = Path(path)
    tmp = None
    try:
        _make_dirs(path.parent)
        mode = file_mode(path)
        fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=".tmp", dir=path.parent)
        os.fchmod(fd, mode)  # mkstemp creates 0600; a store or a mask is meant to be shareable like any file
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        fault_point(f"temporary file for {path.name} written")
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as exc:
        if tmp is not None:  # (already renamed if only the folder's fsync failed: then a no-op)
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):  # disk full, permission denied...: the old file is still in place
            raise SamclError(f"{path}: cannot write ({exc.strerror or exc})") from None
        raise


#: The longest file name most file systems take (NAME_MAX), where the folder does not say.
NAME_MAX = 255
_TEMP_EXTRA = len("..") + 8 + len(".tmp")  # mkstemp's 8 random characters between prefix and suffix


def name_max(folder: Path) -> int:
    """The longest file name `folder` (or its nearest existing parent) takes, in bytes."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return NAME_MAX


def temporary_prefix(path: Path) -> str:
    """".<name>." for `atomic_write_bytes`' temporary beside `path`, the name cut (to bytes the folder takes) when
    the whole would be longer than a file name may be: a name that fits is never refused for its temporary."""
    room, name = max(name_max(path.parent) - _TEMP_EXTRA, 1), path.name
    while len(os.fsencode(name)) > room:
        name = name[:-1]
    return f".{name}."


def file_mode(path: Path) -> int:
    """The permissions a write to `path` gives: the replaced file's own, or 0666 minus the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc; elsewhere set and restored at once)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _make_dirs(folder: Path) -> None:
    """mkdir -p, fsyncing the parent of every folder created so the new entries survive a power loss."""
    if folder.is_dir():
        return
    _make_dirs(folder.parent)
    try:
        folder.mkdir()
    except FileExistsError:
        if not folder.is_dir():
            raise
        return
    fsync_dir(folder.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: Path, data) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def one_line(exc: BaseException) -> str:
    """An exception as a short single-line text."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


_QUOTE = reprlib.Repr()
_QUOTE.maxlevel, _QUOTE.maxstring, _QUOTE.maxother, _QUOTE.maxlist, _QUOTE.maxdict = 2, 40, 40, 4, 4
_QUOTE.maxtuple = _QUOTE.maxset = _QUOTE.maxfrozenset = 4


def quote(value, limit: int = 64) -> str:
    """A bounded repr for messages and answers: nested or shared containers are cut (reprlib), and the text to
    `limit` characters with an ellipsis, so a message never grows with what a file or a request holds."""
    try:
        text = repr(value) if isinstance(value, str) else _QUOTE.repr(value)
    except RecursionError:  # (an object whose own repr nests without bound)
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"
