"""The manifest's one schema: every key and type of `manifest.json` (format `FORMAT_VERSION`) as a pydantic model,
with the rules across its parts (names, files, one AugModule config, the selector's domain order), on the same
mechanism as the configs it holds (`AugModuleConfig`, `SelectorConfig`: `samcl.options`). The writer validates
what it is about to commit through it and writes its `to_dict`; a reader validates what it read through it and
uses the model; so what is written is exactly what is validated.

    manifest = Manifest.model_validate(raw)   # pydantic.ValidationError; `samcl.store.check` words it as one line
    manifest.to_dict()                        # the JSON written, key for key

Unknown keys are refused (a typo would otherwise be kept and ignored); every count is a strict integer, every name
and hash a string.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_serializer, model_serializer,
                      model_validator)

from .._version import __version__
from ..method.augmodule import AugModuleConfig
from ..selector import KINDS, SelectorConfig
from .manifest import FORMAT, FORMAT_VERSION
from .moduleset import MODULE, NO_MODULE, Count, DomainEntry

DTYPES = ("float32", "float16")
#: A domain's kinds: with its module, or without one (the base model runs for it).
WITH_MODULE, WITHOUT_MODULE = MODULE, NO_MODULE
#: The manifest's record of one domain is the in-memory entry itself (one schema; the old name kept).
DomainRecord = DomainEntry


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")  # as json.dumps writes


class BackboneIdentity(_Part):
    """The base the store was built on (`FrozenBackbone.identity`)."""

    family: StrictStr
    architecture: StrictStr
    config_sha256: StrictStr
    weights_sha256: StrictStr


class SelectorRecord(_Part):
    """The selector: its kind and config, the block it reads, and its file once a domain is learned (the keys
    from `file` on are written only when set)."""

    kind: Literal[KINDS]
    config: SelectorConfig
    block: Count
    file: StrictStr | None = None
    sha256: StrictStr | None = None
    bytes: Count | None = None
    dim: Annotated[StrictInt, Field(ge=1)] | None = None
    classes: list[StrictStr] | None = None  # the domains' names, in order (the on-disk key is kept)

    @model_serializer(mode="wrap")
    def _set_keys_only(self, handler):
        written = handler(self)
        return {k: v for k, v in written.items() if v is not None or k in ("kind", "config", "block")}


class BufferRecord(_Part):
    """The mlp selector's feature buffer (all keys, or none: no buffer)."""

    file: StrictStr
    sha256: StrictStr
    bytes: Count | None = None
    count: Count


class Manifest(_Part):
    """What `manifest.json` holds (format `FORMAT_VERSION`): read by `ModuleStore.read_manifest` (older versions
    upgraded first, `samcl.store.manifest.upgrade`) and written by `ModuleStore.save` as `to_dict`.

    Arguments:
      generation (int): the commit count: every save writes the next one.
      backbone (BackboneIdentity): the base's identity: family, architecture, config_sha256, weights_sha256.
      base_hint (str | None): where the base is (`builtin:tiny-sam` or an absolute path).
      base_source (dict | None): that base's weights file, size and mtime (reopening it unchanged skips hashing).
      dtype (str): storage dtype of modules, selector and buffer, "float32" or "float16".
      augmodule (AugModuleConfig | None): the store's module config (None: nothing learned yet needs one).
      selector (SelectorRecord): kind, config (every `SelectorConfig` field), block, and its file, sha256, bytes,
        dim and classes (the domains' names, in order; the key is kept) once a domain is learned.
      buffer (BufferRecord | None): the mlp selector's feature buffer (its safetensors keys: embeddings, labels):
        file, sha256, bytes, count (None: none; written as {}).
      domains (list[DomainEntry]): in learning order: name, kind ("module" or "no_module"; version 2 and before
        wrote "base" for "no_module"), and a module's file, bytes, sha256, config and parameters.
    """

    format: Literal[FORMAT] = FORMAT
    format_version: Annotated[StrictInt, Field(ge=1)] = FORMAT_VERSION
    samcl_version: StrictStr | None = __version__
    generation: Count = 0
    backbone: BackboneIdentity
    base_hint: StrictStr | None = None
    base_source: dict | None = None
    dtype: Literal[DTYPES] = "float32"
    augmodule: AugModuleConfig | None = None
    selector: SelectorRecord
    buffer: BufferRecord | None = None
    domains: list[DomainEntry]

    def to_dict(self) -> dict:
        """The manifest as JSON types, key for key what `manifest.json` holds."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, raw) -> "Manifest":
        """A manifest of this format version, as read (a `Manifest` is returned as it is)."""
        return raw if isinstance(raw, cls) else cls.model_validate(raw)

    @field_serializer("buffer", mode="wrap")
    def _no_buffer_written(self, buffer, handler):
        return {} if buffer is None else handler(buffer)

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
            if problem := domain.saved_problem():
                raise ValueError(problem)
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


#: The name the schema had while a dataclass wrote the manifest beside it (kept).
ManifestSchema = Manifest
