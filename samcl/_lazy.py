"""Public names of a package imported on first use (PEP 562), so importing a package costs nothing until a name
is used: `samcl info` and `samcl --help` never import torch.

    __getattr__, __dir__ = lazy_names(__name__, {"Engine": ".engine", "PrefixCache": ".prefix_cache"})
"""

from __future__ import annotations

from importlib import import_module


def lazy_names(package: str, where: dict[str, str]):
    """`__getattr__` and `__dir__` for `package`: each public name -> the module (relative to it) that defines it;
    a name that is itself a submodule maps to "." + its name and comes back as that module."""
    namespace = import_module(package).__dict__

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = import_module(where[name], package)
        value = module if where[name] == "." + name else getattr(module, name)
        namespace[name] = value  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return __getattr__, __dir__
