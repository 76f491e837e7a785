"""Bytes, counted in one place: of tensors (any nesting of dicts, lists and tuples), and a module set's storage
report (modules, selector, buffer) in the set's storage dtype."""

from __future__ import annotations

from typing import Any

import torch

#: Bytes per floating-point value in each storage dtype a module set can use.
VALUE_BYTES = {"float32": 4, "float16": 2}


def tensor_bytes(tensors: Any, value_bytes: int | None = None) -> int:
    """Bytes held by every tensor in `tensors` (a tensor, or dicts / lists / tuples of them). `value_bytes`:
    count floating-point values at that size instead of their own (what they take in a given storage dtype)."""
    if isinstance(tensors, torch.Tensor):
        size = value_bytes if value_bytes is not None and tensors.is_floating_point() else tensors.element_size()
        return tensors.numel() * size
    if isinstance(tensors, dict):
        tensors = tensors.values()
    return sum(tensor_bytes(t, value_bytes) for t in tensors)


def storage(module_set) -> dict:
    """Bytes a module set stores: per module, selector, buffer (pooled features and their int64 labels), total.
    Counted from shapes, so a deferred buffer is not read for it."""
    value = VALUE_BYTES[module_set.dtype]
    per_module = module_set.aug_config.num_parameters * value if module_set.aug_config is not None else 0
    modules = {d.name: per_module for d in module_set.domains if d.kind == "module"}
    selector = buffer = 0
    if module_set.selector is not None and module_set.selector.num_domains:
        mlp = module_set.buffer is not None  # the MLP's weights take the storage dtype; statistics stay exact
        selector = tensor_bytes(module_set.selector.to_tensors(), value if mlp else None)
        if mlp:
            buffer = len(module_set.buffer) * (module_set.buffer.dim * value + 8)
    return {"modules": modules, "module_total": sum(modules.values()), "selector": selector,
            "buffer": buffer, "total": sum(modules.values()) + selector + buffer}
