"""One schema mechanism for everything configured: config fields that carry their help and their accepted range,
checked by pydantic when a config is made, and read by the `samcl` flags that set them (help text, default and
accepted range come from here, so a flag and the library accept exactly the same values).

    @config
    class TrainConfig:
        epochs: int = option(20, "passes over the training images", low=1, high=100_000, integer=True)

    TrainConfig(epochs=0)   # ConfigError (a SamclError and a ValueError), field "TrainConfig.epochs":
                            # TrainConfig.epochs 0: expected an integer from 1 to 100,000

A config is a pydantic dataclass (`dataclasses.fields`, `asdict` and `replace` work as on any dataclass; `replace`
checks again). Every `option` field is strict: a string is never read as a number, a bool is no count, an integer
given for a float stays the integer it was. In the manner of PEFT's `field(metadata={"help": ...})`; the range is
what the library accepts, and the command line accepts exactly that.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from dataclasses import dataclass
from typing import Any

from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter, ValidationError, WrapValidator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from .errors import SamclError

__all__ = ["ConfigError", "Range", "check_value", "config", "field_of", "help_of", "option", "range_of"]


class ConfigError(SamclError, ValueError):
    """A config value its schema refuses: one line naming the field (`field`, "TrainConfig.epochs"), the value and
    what is accepted. A ValueError too, for callers that catch what a constructor refuses."""


@dataclass(frozen=True)
class Range:
    """Accepted values: a number in [low, high] (`low_open`, `high_open`: that bound itself excluded), an integer
    with `integer`, one of `choices`, and None as well with `optional`. It describes the range; pydantic checks it
    (`constraints`)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    choices: tuple | None = None
    optional: bool = False

    def describe(self) -> str:
        """'an integer from 1 to 100,000', 'a number > 0 and <= 10', 'one of none, bf16' (', or None')."""
        if self.choices is not None:
            text = "one of " + ", ".join(map(str, self.choices))
        elif self.integer:
            text = "an integer " + _bounds(self, "{:,}".format)
        else:
            text = "a number " + _bounds(self, _number)
        return text + (", or None" if self.optional else "")

    def constraints(self) -> list:
        """pydantic's metadata for this range: bounds and finiteness (numbers) or membership (choices)."""
        if self.choices is not None:
            return [AfterValidator(functools.partial(_member, self.choices))]
        bounds = {("gt" if self.low_open else "ge"): self.low, ("lt" if self.high_open else "le"): self.high}
        info = Field(**{k: v for k, v in bounds.items() if v is not None}, allow_inf_nan=False)
        return [*info.metadata, WrapValidator(_keep_int)]


def _member(choices: tuple, value):
    if value is not None and value not in choices:
        raise ValueError("not one of the choices")
    return value


def _keep_int(value, handler):
    """An integer given for a float field stays that integer (pydantic would make it a float): what a config was
    given is what reaches the code that reads it."""
    checked = handler(value)
    return value if type(value) is int else checked


def _number(value: float) -> str:
    """A bound as people write it: 0.5, 4096, and 1,048,576 rather than 1.04858e+06."""
    text = f"{value:g}"
    return f"{int(value):,}" if "e+" in text and float(value).is_integer() and abs(value) < 1e15 else text


def _bounds(r: Range, form) -> str:
    low = None if r.low is None else form(r.low if not r.integer else int(r.low))
    high = None if r.high is None else form(r.high if not r.integer else int(r.high))
    if low is not None and high is not None and not r.low_open and not r.high_open and r.integer:
        return f"from {low} to {high}"
    parts = []
    if low is not None:
        parts.append(f"{'>' if r.low_open else '>='} {low}")
    if high is not None:
        parts.append(f"{'<' if r.high_open else '<='} {high}")
    return " and ".join(parts) or "(any finite value)"


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory=None, **accepted) -> Any:
    """A config field with its help text and, given any keyword arguments of `Range`, its accepted range; strict
    (no string read as a number). `factory`: makes the default (a list); neither: a required field."""
    accepted = Range(**accepted) if accepted else None
    kwargs = {"default_factory": factory} if factory else {}
    kwargs.update({} if default is dataclasses.MISSING else {"default": default})
    info = Field(**kwargs, description=help, strict=True)
    if accepted is not None:
        info.metadata.extend([*accepted.constraints(), accepted])
    return info


def config(cls=None, *, frozen: bool = False, name: str | None = None):
    """Make `cls` a config: a pydantic dataclass whose refusals are one `ConfigError` naming the field as
    "NAME.field" (`name`: how a message names the config, default the class name; e.g. "extra_params").
    `__post_init__` runs after the fields are checked, for rules across fields."""
    if cls is None:
        return functools.partial(config, frozen=frozen, name=name)
    made = pydantic_dataclass(cls, frozen=frozen, config=ConfigDict(arbitrary_types_allowed=True, extra="forbid"))
    made.__config_name__ = name or cls.__name__
    for f in dataclasses.fields(made):  # plain dataclass fields again: the default itself, the help and range
        info = made.__pydantic_fields__[f.name]
        if not info.is_required() and info.default_factory is None:
            f.default = info.default
        f.metadata = types.MappingProxyType({"help": info.description or "", "range": _range(info)})
    checked_init = made.__init__

    @functools.wraps(checked_init)
    def __init__(self, *args, **kwargs):
        try:
            checked_init(self, *args, **kwargs)
        except ValidationError as exc:
            raise _refusal(made, exc) from None

    made.__init__ = __init__
    return made


def _range(info) -> Range | None:
    return next((m for m in info.metadata if isinstance(m, Range)), None)


def _refusal(config_class, exc: ValidationError) -> SamclError:
    """The first problem of a pydantic ValidationError as one line naming the field, its value and its range."""
    error, label = exc.errors()[0], getattr(config_class, "__config_name__", config_class.__name__)
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, SamclError):
        return cause
    where = [part for part in error["loc"] if isinstance(part, str)]
    if error["type"] == "unexpected_keyword_argument":
        known = ", ".join(f.name for f in dataclasses.fields(config_class))
        return ConfigError(f"{label}: unknown field {_shown(where[-1])} (known: {known})", field=label)
    if not where:  # a rule across fields (`__post_init__`)
        return ConfigError(str(cause) if cause is not None else f"{label}: {error['msg']}", field=label)
    name = where[0]
    if error["type"] in ("missing", "missing_argument"):
        return ConfigError(f"{label}.{name}: required", field=f"{label}.{name}")
    accepted = _range(config_class.__pydantic_fields__[name]) if name in config_class.__pydantic_fields__ else None
    rule = f"expected {accepted.describe()}" if accepted is not None else error["msg"][:1].lower() + error["msg"][1:]
    return ConfigError(f"{label}.{name} {_shown(error.get('input'))}: {rule}", field=f"{label}.{name}")


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


@functools.lru_cache(maxsize=None)
def _adapter(config_class, name: str, narrow: tuple = ()) -> TypeAdapter:
    """The field's own validator (type, strictness, range), alone; `narrow` replaces parts of its range."""
    from typing import Annotated

    info = config_class.__pydantic_fields__[name]
    metadata = [m for m in info.metadata if not isinstance(m, Range)]
    if narrow:  # the narrowed range's constraints instead of the field's own
        narrowed = dataclasses.replace(_range(info), **dict(narrow))
        metadata = narrowed.constraints()
    return TypeAdapter(Annotated[(info.annotation, Field(strict=True), *metadata)])


def check_value(config_class, name: str, value, *, narrow: dict | None = None):
    """`value` checked as the field `name` of `config_class` checks it (`narrow`: a tighter `Range` for a front
    end, e.g. {"high": 10}). Returns the value; ConfigError naming the field and its range if refused."""
    try:
        return _adapter(config_class, name, tuple(sorted((narrow or {}).items()))).validate_python(value)
    except ValidationError as exc:
        label = f"{getattr(config_class, '__config_name__', config_class.__name__)}.{name}"
        accepted = range_of(config_class, name)
        accepted = dataclasses.replace(accepted, **narrow) if narrow else accepted
        rule = f"expected {accepted.describe()}" if accepted else exc.errors()[0]["msg"]
        raise ConfigError(f"{label} {_shown(value)}: {rule}", field=label) from None


def field_of(config_class, name: str) -> dataclasses.Field:
    """The field `name` of a config (KeyError naming both if there is none)."""
    for f in dataclasses.fields(config_class):
        if f.name == name:
            return f
    raise KeyError(f"{config_class.__name__} has no field {name!r}")


def help_of(config_class, name: str) -> str:
    return field_of(config_class, name).metadata.get("help", "")


def range_of(config_class, name: str) -> Range | None:
    return field_of(config_class, name).metadata.get("range")
