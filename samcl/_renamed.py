"""Old spellings of renamed public names (issue 31's one vocabulary), kept for one release with a DeprecationWarning.

    Prediction.selector_score = renamed_attribute("selector_score", "domain_score")   # a property
    __getattr__ = renamed_names(__name__, {"EmbeddingBuffer": "FeatureBuffer"}, globals())   # a module's names
    without_module = renamed_keyword("as_base", "without_module", as_base, without_module)  # a keyword

The table of every rename is in CHANGELOG.md (Unreleased).
"""

from __future__ import annotations

import warnings
from typing import Any


def warn_renamed(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn once per call site that `old` is now spelled `new`."""
    warnings.warn(f"{old} is renamed {new}; the old name goes in the next release", DeprecationWarning,
                  stacklevel=stacklevel)


def renamed_attribute(old: str, new: str) -> property:
    """A property reading and writing attribute `new` under its old name `old`, with a DeprecationWarning."""

    def get(self):
        warn_renamed(f"{type(self).__name__}.{old}", new)
        return getattr(self, new)

    def put(self, value):
        warn_renamed(f"{type(self).__name__}.{old}", new)
        setattr(self, new, value)

    return property(get, put, doc=f"Deprecated spelling of `{new}`.")


def renamed_names(module: str, renames: dict[str, str], namespace: dict[str, Any]):
    """A module `__getattr__` answering each old name in `renames` with the new one's object, with a warning."""

    def __getattr__(name: str):
        if name in renames:
            warn_renamed(f"{module}.{name}", renames[name])
            return namespace[renames[name]]
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


def renamed_keyword(old: str, new: str, old_value: Any, new_value: Any, *, default: Any = False) -> Any:
    """The value of keyword `new`, taking a value given under the old keyword `old` (None: not given; with a
    warning at the line that called the function calling this, so Python's default filter shows it). `default`: the
    new keyword's default (given otherwise, it must agree with the old one)."""
    if old_value is None:
        return new_value
    warn_renamed(f"keyword {old}=", f"{new}=", stacklevel=4)
    if new_value != default and new_value != old_value:
        raise TypeError(f"both {old}= and {new}= given")
    return old_value


def renamed_method(old: str, new: str):
    """A method `old` calling method `new` with the same arguments, with a DeprecationWarning."""

    def call(self, *args, **kwargs):
        warn_renamed(f"{type(self).__name__}.{old}", new)
        return getattr(self, new)(*args, **kwargs)

    call.__name__, call.__doc__ = old, f"Deprecated spelling of `{new}`."
    return call
