"""How a module set runs, for front ends (CLI, server, benchmark): the runtime, the prefix cache, and the few changes a
front end may make to a set, as narrow methods of `SAMCL` (mixed in; kept apart so the learner stays one concern).
Front ends call these and never assign to a `SAMCL`'s attributes (tests/test_layout.py)."""

from __future__ import annotations

from dataclasses import replace as with_fields

from ..errors import SamclError
from ..store.moduleset import DomainEntry


class Running:
    """Mixed into `SAMCL` (which has `engine`, `backbone`, `module_set`, `store`, `device`, `aug_config`,
    `selector_block` and `domains`)."""

    def set_runtime(self, runtime: str, precision: str | None = None) -> str:
        """Run inference on `runtime` ("torch", "onnxruntime", "openvino", "auto"; see `samcl.runtime`) at
        `precision`; the graphs are exported on first use and cached. Returns the runtime now in use."""
        from ..runtime.attach import graph_backbone, resolved

        chosen = resolved(runtime, self.device, self.backbone, self.aug_config)
        if chosen != "torch":
            graphs = graph_backbone(self.backbone, self.aug_config, self.selector_block, chosen, precision)
            self.engine.use_backbone(graphs, chosen)
        elif self.engine.runtime != "torch":  # torch: the set's own backbone back
            self.engine.use_backbone(self.backbone, "torch")
        return chosen

    def cache_prefixes(self, max_bytes: int, *, evict: str = "lru") -> None:
        """Keep prepared images for later calls within `max_bytes` (`Engine.cache_prefixes`: `evict` "lru" or
        "keep")."""
        self.engine.cache_prefixes(max_bytes, evict=evict)

    def adopt_cache(self, other) -> None:
        """Take `other`'s prepared images where they are valid here (`Engine.adopt_cache`: the same base)."""
        self.engine.adopt_cache(other.engine)

    def configure_modules(self, **fields) -> None:
        """Change `AugModuleConfig` fields (e.g. `shared_down=False`) of the modules this set will learn; only
        before the first domain is learned (every module of a set has one config)."""
        if self.domains:
            raise SamclError(f"configure_modules: the set holds domains already ({', '.join(self.domains)})",
                             code="not_empty")
        self.module_set.aug_config = with_fields(self.aug_config, **fields)

    def put_module(self, name: str, module) -> None:
        """Put a module trained elsewhere into the set as domain `name` (replacing that domain's module); the
        set's module config becomes `module.config`. Not saved: for evaluating one module at a time."""
        self.module_set.aug_config = module.config  # the bank is rebuilt for a new module object
        self.module_set.modules[name] = module.to(self.device)
        if name not in self.domains:
            self.module_set.domains.append(DomainEntry(name, "module"))

    def keep_in_memory(self) -> None:
        """From now on learn without saving to the store this set was opened from."""
        self.store = None

    @property
    def runtime(self) -> str:
        """What runs the encoder and decoder: "torch", "onnxruntime" or "openvino"."""
        return self.engine.runtime
