"""A module set in memory: the domains learned so far (in order), their modules (AugModule weights), the selector
and its feature buffer, and what they were built on. `samcl.store.files` reads and writes it;
`samcl.inference.engine` runs it; the learner grows it.

    domains   domains[k] for k = 0..K-1 (a domain's index): kind "module" (its AugModule in `modules`) or
              "no_module" (learned without a module: the base model runs for it)
    index -1  no domain: the base model, SAM without a module (what an empty set, or a forced "base", runs)
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StrictInt, StrictStr, TypeAdapter
from pydantic.dataclasses import dataclass as pydantic_dataclass

from .._renamed import renamed_names
from ..errors import SamclError
from ..method.augmodule import AugModule, AugModuleConfig
from ..selector import FeatureBuffer, Selector, SelectorConfig

#: The name results give to the base model, SAM without a module: what ran for a domain learned without a module,
#: for a forced "base" and for the open-set fallback (index -1). Never a learned domain's name.
BASE_MODEL = "base"
#: A domain's kind: "module" (its AugModule runs) or "no_module" (learned without one: the base model runs).
MODULE, NO_MODULE = "module", "no_module"
#: A domain name: a letter or digit first, then letters, digits, '_', '.', '-' (at most 64), matched in full (so
#: no path separator, no "..", nothing a file name could not hold).
DOMAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: A size or count the manifest records: a strict non-negative integer.
Count = Annotated[StrictInt, Field(ge=0)]


def name_problem(name) -> str | None:
    """Why `name` cannot name a domain (None if it can): the one rule of learn, import, merge and every store."""
    if not isinstance(name, str) or not DOMAIN_NAME.fullmatch(name):
        shown = repr(name) if isinstance(name, str) and len(name) <= 80 else f"{repr(name)[:77]}..."
        return f"domain name {shown}: use letters, digits, '_', '.', '-' (max 64), starting with a letter or digit"
    if name == BASE_MODEL:
        return (f"domain name {name!r} is reserved for the base model (SAM without a module); learn the base "
                "model's own domain under its real name with without_module=True")
    return None


@pydantic_dataclass(config=ConfigDict(extra="forbid", ser_json_inf_nan="constants"))  # info as json.dumps writes it
class DomainEntry:
    """One learned domain: with its AugModule ("module") or without a module ("no_module": the base model runs).
    The one schema of a domain, in memory and in the manifest (`Manifest.domains`; `to_dict` is what is written,
    in this key order). Types are checked when it is made; the rules a saved entry follows (`saved_problem`) when
    a manifest is: a module's file and sha256 exist once it is saved."""

    name: object  # any JSON value, so that a bad one is named by `name_problem`, the one rule for names
    kind: Literal[MODULE, NO_MODULE]
    file: StrictStr | None = None
    bytes: Count = 0
    sha256: StrictStr | None = None
    config: AugModuleConfig | None = None
    parameters: Count = 0
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The entry as the manifest writes it (JSON types: the module config as `AugModuleConfig.to_dict`)."""
        return _ENTRY.dump_python(self, mode="json")

    def saved_problem(self) -> str | None:
        """Why this entry cannot be a saved manifest's (None if it can): its name, and a file for a module only."""
        if problem := name_problem(self.name):
            return problem
        if self.kind == NO_MODULE and self.file is not None:
            return f"domain {self.name!r} has no module but names a file"
        if self.kind == MODULE and (self.file is None or self.sha256 is None):
            return f"domain {self.name!r} lacks its file name or sha256"
        if self.kind == MODULE and self.config is None:
            return f"domain {self.name!r} lacks its module's config"
        return None


_ENTRY = TypeAdapter(DomainEntry)


@dataclass
class ModuleSet:
    """Everything a store holds, in memory. backbone: the base's identity; base_hint: where to find the base
    ("builtin:tiny-sam" or an absolute path); base_source: the weights file the identity was computed from
    (path, size, mtime), so reopening on the same unchanged file need not hash it again."""

    backbone: dict
    selector_config: SelectorConfig
    selector_block: int
    domains: list[DomainEntry] = field(default_factory=list)
    modules: dict[str, AugModule] = field(default_factory=dict)
    selector: Selector | None = None
    aug_config: AugModuleConfig | None = None
    dtype: str = "float32"
    base_hint: str | None = None
    base_source: dict | None = None
    generation: int = 0

    @property
    def buffer(self) -> FeatureBuffer | None:
        """The `mlp` selector's feature buffer (the statistics selectors keep none)."""
        return getattr(self.selector, "buffer", None)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.domains]

    def module_for(self, index: int) -> AugModule | None:
        """The module of domain `index` (None for -1 and for a domain without a module)."""
        if index < 0:
            return None
        entry = self.domains[index]
        return self.modules.get(entry.name) if entry.kind == MODULE else None

    def domain_name(self, index: int) -> str:
        """What a result reports for domain `index`: its name, or "base" (the base model ran) for -1 and for a
        domain without a module."""
        return BASE_MODEL if index < 0 or self.domains[index].kind == NO_MODULE else self.domains[index].name

    def index_of(self, domain: str) -> int:
        """A domain name -> domain index; "base" (not a learned name) -> -1, the base model."""
        names = self.names
        if domain == BASE_MODEL and BASE_MODEL not in names:
            return -1  # the same as a domain without a module, if one was learned
        if domain not in names:
            raise SamclError(f"unknown domain {domain!r}; learned: {', '.join(names) or 'none'}",
                             code="unknown_domain")
        return names.index(domain)

    # ------------------------------------------------------------------ rollback of a failed learn step
    def snapshot(self) -> dict:
        """What `restore` needs to undo everything a learn step may change (domains, modules, selector weights,
        buffer rows, generation)."""
        return {"domains": copy.deepcopy(self.domains), "modules": dict(self.modules),
                "generation": self.generation, "selector": self.selector,
                "selector_state": None if self.selector is None else self.selector.snapshot()}

    def restore(self, snap: dict) -> None:
        self.domains[:] = snap["domains"]
        self.modules, self.generation = snap["modules"], snap["generation"]
        self.selector = snap["selector"]
        if self.selector is not None:
            self.selector.restore(snap["selector_state"])


__getattr__ = renamed_names(__name__, {"BASE_CLASS": "BASE_MODEL"}, globals())
