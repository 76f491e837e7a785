"""The manifest's schema: every key and type of `manifest.json` (format `FORMAT_VERSION`) as pydantic models, and
the rules across its parts (names, files, one AugModule config, the selector's domain order), on the same mechanism
as the configs it holds (`AugModuleConfig`, `SelectorConfig`: `samcl.options`).

    ManifestSchema.model_validate(raw)     # pydantic.ValidationError; `samcl.store.check` words it as one line

Unknown keys are refused (a typo would otherwise be kept and ignored); every count is a strict integer, every name
and hash a string.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

from ..method.augmodule import AugModuleConfig
from ..selector import KINDS, SelectorConfig
from .manifest import FORMAT
from .moduleset import MODULE, NO_MODULE, name_problem

DTYPES = ("float32", "float16")
#: A domain's kinds: with its module, or without one (the base model runs for it).
WITH_MODULE, WITHOUT_MODULE = MODULE, NO_MODULE
Count = Annotated[StrictInt, Field(ge=0)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackboneIdentity(_Part):
    """The base the store was built on (`FrozenBackbone.identity`)."""

    family: StrictStr
    architecture: StrictStr
    config_sha256: StrictStr
    weights_sha256: StrictStr


class DomainRecord(_Part):
    """One learned domain: a module with its file, or none (kind "no_module": no file; the base model runs)."""

    name: object  # any JSON value, so that a bad one is named by `name_problem`, the one rule for names
    kind: Literal[WITH_MODULE, WITHOUT_MODULE]
    file: StrictStr | None = None
    sha256: StrictStr | None = None
    bytes: Count = 0
    config: AugModuleConfig | None = None
    parameters: Count = 0
    info: dict = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fits_its_kind(self):
        if problem := name_problem(self.name):
            raise ValueError(problem)
        if self.kind == WITHOUT_MODULE and self.file is not None:
            raise ValueError(f"domain {self.name!r} has no module but names a file")
        if self.kind == WITH_MODULE and (self.file is None or self.sha256 is None):
            raise ValueError(f"domain {self.name!r} lacks its file name or sha256")
        if self.kind == WITH_MODULE and self.config is None:
            raise ValueError(f"domain {self.name!r} lacks its module's config")
        return self


class SelectorRecord(_Part):
    """The selector: its kind and config, the block it reads, and its file once a domain is learned."""

    kind: Literal[KINDS]
    config: SelectorConfig
    block: Count
    file: StrictStr | None = None
    sha256: StrictStr | None = None
    bytes: Count | None = None
    dim: Annotated[StrictInt, Field(ge=1)] | None = None
    classes: list[StrictStr] | None = None  # the domains' names, in order (the on-disk key is kept)


class BufferRecord(_Part):
    """The mlp selector's feature buffer (all keys, or none: no buffer)."""

    file: StrictStr
    sha256: StrictStr
    bytes: Count | None = None
    count: Count


class ManifestSchema(_Part):
    """`manifest.json` (see `samcl.store.manifest.Manifest` for what each part means)."""

    format: Literal[FORMAT]
    format_version: Annotated[StrictInt, Field(ge=1)]
    samcl_version: StrictStr | None = None
    generation: Count = 0
    backbone: BackboneIdentity
    base_hint: StrictStr | None = None
    base_source: dict | None = None
    dtype: Literal[DTYPES] = "float32"
    augmodule: AugModuleConfig | None = None
    selector: SelectorRecord
    buffer: BufferRecord | None = None
    domains: list[DomainRecord]

    @model_validator(mode="before")
    @classmethod
    def _no_buffer(cls, raw):
        if isinstance(raw, dict) and raw.get("buffer") == {}:  # {} is how a store without a buffer writes it
            raw = {**raw, "buffer": None}
        return raw

    @model_validator(mode="after")
    def _parts_agree(self):
        names, files = [], set()
        for domain in self.domains:
            if domain.name in names:
                raise ValueError(f"domain {domain.name!r} is listed twice")
            names.append(domain.name)
            if domain.file is not None and domain.file in files:
                raise ValueError(f"domain {domain.name!r} names the file of an earlier domain")
            files.add(domain.file)
            if domain.config is not None and self.augmodule is not None and domain.config != self.augmodule:
                diff = next(k for k in AugModuleConfig.__dataclass_fields__
                            if getattr(domain.config, k) != getattr(self.augmodule, k))
                raise ValueError(f"domain {domain.name!r}'s module has {diff} {getattr(domain.config, diff)!r}, "
                                 f"the store's modules {getattr(self.augmodule, diff)!r}")
        if sum(domain.kind == WITHOUT_MODULE for domain in self.domains) > 1:
            raise ValueError("more than one domain without a module")
        self._selector_fits(names)
        return self

    def _selector_fits(self, names: list[str]) -> None:
        selector, aug = self.selector, self.augmodule
        if selector.config.kind != selector.kind:
            raise ValueError(f"selector kind {selector.kind!r} but its config says {selector.config.kind!r}")
        if aug is not None and selector.block >= min(aug.adapted_blocks):
            raise ValueError(f"selector block {selector.block} is not a block before the first adapted one")
        if selector.file is None and not names:
            return
        if selector.file is None or selector.sha256 is None or selector.dim is None:
            raise ValueError("selector lacks its file name, sha256 or dim")
        if aug is not None and selector.dim != aug.dim:
            raise ValueError(f"selector dim {selector.dim} but the modules are {aug.dim} wide")
        if (selector.classes if selector.classes is not None else names) != names:
            raise ValueError("the selector's classes (its domains' names) are not the domains, in order")
