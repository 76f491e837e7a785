"""argparse types that check a flag's value when the command line is parsed, before any work starts.

Each type names its accepted range in its message; argparse adds the flag, so a user reads one line such as
`samcl learn: error: argument --lr: expected a number > 0 and <= 10, got '-1'`. Every command uses these, the
benchmark's flags too (`samcl benchmark`), so no bad number reaches a trainer or a saved manifest.

    parser.add_argument("--epochs", type=int_range(1, 100_000))
    parser.add_argument("--lr", type=float_range(0, 10, low_open=True))
"""

from __future__ import annotations

import argparse
import math
import re

#: Seeds go to numpy's and torch's generators; 2**32 - 1 is the largest both take everywhere.
MAX_SEED = 2**32 - 1


def int_range(low: int, high: int):
    """An integer low <= value <= high (no float text, no nan/inf)."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer from {low:,} to {high:,}, got {text!r}")
        return value

    parse.__name__ = "integer"
    return parse


def float_range(low: float, high: float, low_open: bool = False):
    """A finite number in [low, high] (or (low, high] with low_open)."""
    bounds = f"{'>' if low_open else '>='} {low:g} and <= {high:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
            raise argparse.ArgumentTypeError(f"expected a number {bounds}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def field_value(config_class, name: str, *, narrow: dict | None = None, scale: int = 1):
    """A value of the config field `config_class.name`, checked by the field's own schema
    (`samcl.options.check_value`), so the flag takes exactly what the library takes; `narrow`: a tighter range
    for the command line; `scale`: the field holds the flag's value times this (MiB on the command line, bytes in
    the field), and the message gives the range in the flag's unit."""
    import dataclasses

    from ..options import ConfigError, check_value, range_of

    accepted = dataclasses.replace(range_of(config_class, name), **(narrow or {}))
    integer = accepted.integer and scale == 1
    shown = dataclasses.replace(accepted, optional=False)  # (a flag given has a value: None is not one)
    shown = shown if scale == 1 else dataclasses.replace(
        shown, integer=False, low=None if accepted.low is None else accepted.low / scale,
        high=None if accepted.high is None else accepted.high / scale)

    def parse(text: str):
        try:
            value = int(text.strip()) if integer else float(text)
            check_value(config_class, name, value if scale == 1 else _scaled(value, scale), narrow=narrow)
        except (ValueError, ConfigError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {shown.describe()}, got {text!r}") from None
        return value

    parse.__name__ = "integer" if integer else "number"
    parse.accepted = shown.describe()
    return parse


def _scaled(value: float, scale: int) -> int | float:
    return int(value * scale) if math.isfinite(value) else value


def seed(text: str) -> int:
    return int_range(0, MAX_SEED)(text)


def seed_list(text: str) -> str:
    """Comma-separated distinct seeds: '0,1,2' (checked; returned as text, as `samcl.bench.main_benchmark` reads it)."""
    parts = [p for p in text.split(",") if p.strip()]
    try:
        values = [seed(p) for p in parts]
    except argparse.ArgumentTypeError:
        values = []
    if not values or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct integers from 0 to {MAX_SEED:,} separated by commas, "
                                         f"got {text!r}")
    return ",".join(map(str, values))


def _numbers(text: str, count: int) -> tuple[float, ...] | None:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        return None
    return values if len(values) == count and all(math.isfinite(v) for v in values) else None


def point(text: str) -> tuple[float, float]:
    """X,Y: 0-based pixel coordinates in the image as viewers show it."""
    values = _numbers(text, 2)
    if values is None:
        raise argparse.ArgumentTypeError(f"expected X,Y (two finite numbers), got {text!r}")
    return values  # type: ignore[return-value]


def box(text: str) -> tuple[float, float, float, float]:
    """X0,Y0,X1,Y1: finite numbers, ordered (`Prompt.check_box`)."""
    from ..types import Prompt, PromptError

    values = _numbers(text, 4)
    if values is None:
        raise argparse.ArgumentTypeError(f"expected X0,Y0,X1,Y1 (finite numbers, X0<=X1 and Y0<=Y1), got {text!r}")
    try:
        Prompt.check_box(values)
    except PromptError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return values  # type: ignore[return-value]


def named_dir(text: str) -> tuple[str, str]:
    """NAME=DIR."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, path


_DEVICE = re.compile(r"(cpu|mps|cuda(:[0-9]{1,3})?)")


def device(text: str) -> str:
    """A torch device samcl can run on: cpu, cuda, cuda:N, mps (availability is checked when it is used)."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {text!r}")
    return text
