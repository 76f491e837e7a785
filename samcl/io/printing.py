"""What the commands print for machines: strict JSON."""

from __future__ import annotations

import json
import math


def finite(value):
    """`value` with every non-finite float (NaN, inf) as None: JSON has no NaN, and `--json` output must parse."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        return finite(value.item())
    return value


def print_json(value) -> None:
    """The one way `--json` output is printed: strict JSON (non-finite numbers as null)."""
    print(json.dumps(finite(value), allow_nan=False, default=float))
