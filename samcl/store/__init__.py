"""A module set, in memory and on disk: the `ModuleSet` (domains in learning order, modules, selector, feature
buffer), its `Manifest` (one pydantic schema, written and read; format version, one upgrade chain from each
earlier version, checksums), the `ModuleStore` folder (safetensors files, generations, the writer's lock) and the
one validator of a store.

    module_set = ModuleStore("my-set").load()       # every module and the selector, each file checked

`moduleset` (in memory), `manifest` (the file: bounded reads, versions, upgrade), `schema` (the `Manifest`
model), `files` (the folder), `check` (structure and values). Public names load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names
from .._renamed import warn_renamed

_WHERE = {
    "ModuleSet": ".moduleset", "DomainEntry": ".moduleset", "BASE_MODEL": ".moduleset", "name_problem": ".moduleset",
    "Manifest": ".schema", "MANIFEST": ".manifest", "FORMAT_VERSION": ".manifest", "MissingFile": ".manifest",
    "read_manifest": ".manifest", "manifest_bytes": ".manifest", "upgrade": ".manifest",
    "ModuleStore": ".files", "read_tensors": ".files", "write_tensors": ".files",
    "check_manifest": ".check", "check_tensors": ".check", "check_site": ".check",
    "check_recorded_base": ".check",
}
__all__ = ["BASE_MODEL", "DomainEntry", "FORMAT_VERSION", "MANIFEST", "Manifest", "MissingFile", "ModuleSet",
           "ModuleStore", "check_manifest", "check_recorded_base", "check_site", "check_tensors", "manifest_bytes", "name_problem",
           "read_manifest",
           "read_tensors", "upgrade", "write_tensors"]
_lazy_getattr, __dir__ = lazy_names(__name__, _WHERE)


def __getattr__(name: str):
    if name == "BASE_CLASS":  # the old spelling of BASE_MODEL (deprecated): warned here, so at the caller's line
        warn_renamed(f"{__name__}.BASE_CLASS", "BASE_MODEL")
        name = "BASE_MODEL"
    return _lazy_getattr(name)


if TYPE_CHECKING:
    from .check import check_manifest, check_recorded_base, check_site, check_tensors
    from .files import ModuleStore, read_tensors, write_tensors
    from .manifest import FORMAT_VERSION, MANIFEST, MissingFile, manifest_bytes, read_manifest, upgrade
    from .moduleset import BASE_MODEL, DomainEntry, ModuleSet, name_problem
    from .schema import Manifest
