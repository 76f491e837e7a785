"""Progress bars on a terminal, none in logs: every bar samcl shows goes through `bar`."""

from __future__ import annotations

from tqdm.auto import tqdm


def bar(iterable=None, progress: bool = True, **kwargs) -> tqdm:
    """A tqdm bar when `progress` is on and stderr is a terminal (tqdm's disable=None); otherwise a silent one,
    so a log file gets no thousands of carriage-return lines."""
    return tqdm(iterable, disable=None if progress else True, **kwargs)
