"""Config fields that carry their help and their range: one source for the docs, the checks a config runs when it
is made, and the `samcl` flags that set it (help text, default and accepted range are read from here).

    @dataclass
    class TrainConfig:
        epochs: int = option(20, "passes over the training images", low=1, high=100_000, integer=True)

        def __post_init__(self):
            check_fields(self)          # ValueError: TrainConfig.epochs 0: expected an integer from 1 to 100,000

In the manner of PEFT's `field(metadata={"help": ...})`; the range is what the library accepts, and the command
line accepts exactly that.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Range", "check_fields", "field_of", "help_of", "option", "range_of"]


@dataclass(frozen=True)
class Range:
    """Accepted values: a number in [low, high] (`low_open`, `high_open`: that bound itself excluded), an integer
    with `integer`, one of `choices`, and None as well with `optional`."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    choices: tuple | None = None
    optional: bool = False

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.choices is not None:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or value < self.high or (value == self.high and not self.high_open)

    def describe(self) -> str:
        """'an integer from 1 to 100,000', 'a number > 0 and <= 10', 'one of none, bf16' (', or None')."""
        if self.choices is not None:
            text = "one of " + ", ".join(map(str, self.choices))
        elif self.integer:
            text = "an integer " + _bounds(self, "{:,}")
        else:
            text = "a number " + _bounds(self, "{:g}")
        return text + (", or None" if self.optional else "")


def _bounds(r: Range, form: str) -> str:
    low = None if r.low is None else form.format(r.low if not r.integer else int(r.low))
    high = None if r.high is None else form.format(r.high if not r.integer else int(r.high))
    if low is not None and high is not None and not r.low_open and not r.high_open and r.integer:
        return f"from {low} to {high}"
    parts = []
    if low is not None:
        parts.append(f"{'>' if r.low_open else '>='} {low}")
    if high is not None:
        parts.append(f"{'<' if r.high_open else '<='} {high}")
    return " and ".join(parts) or "(any finite value)"


def option(default: Any, help: str, **accepted) -> Any:
    """A dataclass field with its help text and its `Range` (keyword arguments of `Range`)."""
    return dataclasses.field(default=default, metadata={"help": help, "range": Range(**accepted)})


def check_fields(config) -> None:
    """ValueError naming the first field of `config` whose value its range refuses."""
    for f in dataclasses.fields(config):
        accepted = f.metadata.get("range")
        value = getattr(config, f.name)
        if accepted is not None and not accepted.accepts(value):
            raise ValueError(f"{type(config).__name__}.{f.name} {value!r}: expected {accepted.describe()}")


def field_of(config_class, name: str) -> dataclasses.Field:
    """The field `name` of a config dataclass (KeyError naming both if there is none)."""
    for f in dataclasses.fields(config_class):
        if f.name == name:
            return f
    raise KeyError(f"{config_class.__name__} has no field {name!r}")


def help_of(config_class, name: str) -> str:
    return field_of(config_class, name).metadata.get("help", "")


def range_of(config_class, name: str) -> Range | None:
    return field_of(config_class, name).metadata.get("range")
