"""Every module of a set resident at once, so that switching modules is choosing rows, never copying a model.

    bank = ModuleBank(config, [module_0, None, module_2])    # domain k -> row k + 1; row 0 = zeros (base)
    bank.params([3, 3])       # G = 1: a view of row 3 (no copy), for a batch that chose one module
    bank.params([1, 0, 3])    # G = B: one gather per tensor, for a mixed-domain batch

A *row* is a module's index in these stacked tensors (row 0: the base model's zeros); the word means nothing else
in samcl: a learned domain is a domain, its AugModule weights its module. One (K + 1) x shape tensor per parameter
name, built once when the set is opened or changes, instead of stacking module tensors on every call. A zero row
adds exactly nothing (see `samcl.method.augmodule`), so the base choice shares the same batched math. Modules
whose device and dtype match the bank's are re-pointed at their rows, so the bank costs no memory beyond the
modules themselves; in-place changes to such a module show in the bank at once.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .augmodule import AugModule, AugModuleConfig, parameter_shapes
from .sizes import tensor_bytes


class ModuleBank:
    """K modules (None = no module) as one stacked tensor per parameter name, row 0 = zeros."""

    def __init__(self, config: AugModuleConfig, modules: Sequence[AugModule | None], device=None,
                 dtype: torch.dtype = torch.float32):
        self.config = config
        self.owners = list(modules)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        zeros = {name: torch.zeros(shape, device=self.device, dtype=dtype)
                 for name, shape in parameter_shapes(config).items()}
        self.device = next(iter(zeros.values())).device  # "cuda" -> "cuda:0", as the modules report it
        named = [None if module is None else module.named_tensors() for module in self.owners]
        with torch.no_grad():
            self.tensors = {name: torch.stack([zero, *(zero if n is None else n[name].to(self.device, dtype)
                                                       for n in named)])
                            for name, zero in zeros.items()}
            for row, tensors in enumerate(named, start=1):
                for name, param in (tensors or {}).items():
                    if param.device == self.device and param.dtype == dtype:
                        param.data = self.tensors[name][row]  # the module now lives in the bank: no second copy

    def row(self, index: int) -> int:
        """Bank row of domain `index` (-1 or a domain without module: row 0, the base)."""
        return 0 if index < 0 or self.owners[index] is None else index + 1

    def is_current(self, index: int, module: AugModule | None) -> bool:
        """Does row `index + 1` still hold `module` (the same object, sharing the row's memory where it can)?"""
        if index >= len(self.owners) or self.owners[index] is not module:
            return False
        if module is None:
            return True
        name = next(iter(self.tensors))
        param = module.named_tensors()[name]
        if param.device != self.device or param.dtype != self.dtype:
            return True  # a converted copy: in-place changes are not followed (rebuild explicitly)
        return param.data_ptr() == self.tensors[name][index + 1].data_ptr()

    def params(self, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        """Grouped parameters for a batch whose samples use `rows`: G = 1 (a view) if all equal, else G = B."""
        first = rows[0]
        if all(r == first for r in rows):
            return {name: t[first:first + 1] for name, t in self.tensors.items()}
        index = torch.tensor(list(rows), device=self.device)
        return {name: t.index_select(0, index) for name, t in self.tensors.items()}

    @property
    def num_bytes(self) -> int:
        return tensor_bytes(self.tensors)
