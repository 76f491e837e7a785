"""The SAMCL method itself: the AugModule (SLoRA with a shared down-projection, heat features injected at the
neck; its config derived from a backbone's adaptation site), the bank that keeps every module resident, point
prompts and their heat maps, and what a module costs in bytes.

    config = config_for(backbone.site, rank=10)
    module = AugModule(config)                      # fresh: reproduces the base exactly (B = 0)

`augmodule` (parameters and math; `parameter_shapes` is the one source of truth for init, checks, bank and
sizes), `bank` (zero-copy rows per sample), `prompts` (point sampling, heat rendering), `sizes` (byte counts).
Public names load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

_WHERE = {
    "AugModule": ".augmodule", "AugModuleConfig": ".augmodule", "AugModuleSize": ".augmodule",
    "Injection": ".augmodule", "config_for": ".augmodule", "parameter_shapes": ".augmodule",
    "ModuleBank": ".bank",
    "HeatConfig": ".prompts", "render_heat": ".prompts", "sample_points": ".prompts",
    "storage": ".sizes", "tensor_bytes": ".sizes",
}
__all__ = ["AugModule", "AugModuleConfig", "AugModuleSize", "HeatConfig", "Injection", "ModuleBank", "config_for",
           "parameter_shapes", "render_heat", "sample_points", "storage", "tensor_bytes"]
__getattr__, __dir__ = lazy_names(__name__, _WHERE)

if TYPE_CHECKING:
    from .augmodule import AugModule, AugModuleConfig, AugModuleSize, Injection, config_for, parameter_shapes
    from .bank import ModuleBank
    from .prompts import HeatConfig, render_heat, sample_points
    from .sizes import storage, tensor_bytes
