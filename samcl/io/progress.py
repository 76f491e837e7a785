"""Progress: every bar samcl shows goes through `bar`. On a terminal it is a tqdm bar; elsewhere (a log file, a
pipe, a notebook) it becomes a few plain lines on the `samcl.progress` logger: when the work starts, about every
tenth of it (and at least once a minute), and when it is done, so a log is never silent for minutes and never
holds thousands of carriage-return lines. Work with nothing to do shows nothing (no `embed: 0it`).

    for batch in bar(batches, desc="embed", progress=config.progress):
        ...

The `samcl` command prints those lines on stderr (`log_to_stderr`). From Python they are ordinary `logging`
records: `logging.basicConfig(level=logging.INFO)` (or `samcl.io.log_to_stderr()`) shows them. A bar opened
while another is running (a trainer's steps inside the benchmark's) logs at DEBUG: the outer one tells the story.
"""

from __future__ import annotations

import logging
import sys
import time

from tqdm.auto import tqdm

log = logging.getLogger("samcl.progress")
#: A line at least this often (seconds) while a bar runs, whatever share of the work it is.
INTERVAL_S = 60.0
#: ... and one each time another 1/PARTS of the work is done.
PARTS = 10

_open: list["LogBar"] = []


def bar(iterable=None, progress: bool = True, **kwargs):
    """A tqdm bar on a terminal, log lines elsewhere (`LogBar`), nothing when `progress` is off or there is no
    work (a total of 0). Takes tqdm's arguments (desc, total, unit, leave)."""
    total = kwargs.get("total")
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if not progress or total == 0:
        return tqdm(iterable, disable=True, **kwargs)
    if _is_terminal(sys.stderr):
        return tqdm(iterable, disable=False, **kwargs)
    return LogBar(iterable, total=total, desc=kwargs.get("desc"), unit=kwargs.get("unit", "it"))


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


class LogBar:
    """What a bar would show, as log lines: start, each 1/`PARTS` of `total` (or every `INTERVAL_S`), done. Has the
    part of tqdm's interface samcl uses: iteration, update, set_postfix(_str), close, a context manager."""

    def __init__(self, iterable=None, *, total: int | None = None, desc: str | None = None, unit: str = "it"):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc or "progress", unit
        self.n, self.postfix, self.closed, self.stopped = 0, "", False, False
        self.level = logging.DEBUG if _open else logging.INFO  # inside another bar: detail
        self.start = self.last = time.monotonic()
        self.next_share = 1
        _open.append(self)
        of = f"{total:,} {unit}" if total is not None else unit
        log.log(self.level, "%s: started (%s)", self.desc, of)

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update()
        except Exception:  # the work failed (not a consumer stopping early): "stopped", not "done"
            self.stopped = True
            raise
        except KeyboardInterrupt:
            self.stopped = True
            raise
        finally:
            self.close()

    def __enter__(self) -> "LogBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        due = self.total is not None and self.n < self.total and self.n * PARTS >= self.next_share * self.total
        if due or now - self.last >= INTERVAL_S:
            if self.total:
                while self.next_share * self.total <= self.n * PARTS:
                    self.next_share += 1
            self.last = now
            log.log(self.level, "%s: %s%s (%.0f s)", self.desc, self._count(), self._postfix(), now - self.start)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        values = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{key} {value}" for key, value in values.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self in _open:
            _open.remove(self)
        log.log(self.level, "%s: %s, %s%s in %.1f s", self.desc, "stopped" if self.stopped else "done", self._count(),
                self._postfix(), time.monotonic() - self.start)

    def _count(self) -> str:
        if self.total:
            return f"{self.n:,}/{self.total:,} {self.unit} ({100 * self.n / self.total:.0f} %)"
        return f"{self.n:,} {self.unit}"

    def _postfix(self) -> str:
        return f", {self.postfix}" if self.postfix else ""


class _CurrentStderr(logging.StreamHandler):
    """A handler that writes to whatever sys.stderr is at the time (a test's capture, a redirected stream)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def log_to_stderr(prefix: str = "samcl: ") -> None:
    """Print progress lines on stderr as '<prefix><message>' (the `samcl` command does; once is enough)."""
    if any(isinstance(h, _CurrentStderr) for h in log.handlers):
        return
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter(prefix + "%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # one line each, also where the root logger prints too
