"""A module set's life after learning: forget a domain exactly, merge sets learned apart. Neither needs the base
model or a single image: both work on the stored modules and selector state, and commit like `learn` (one new
generation under the store's lock; a kill at any instant leaves the old set or the new one).

    forget("my-set", "polyps")                           # the set as if polyps had never been learned
    merge("both", ["site-a", "site-b"], rename={"cells": "cells-b"})

What "nothing derived from the domain" means per selector kind: the statistics kinds (ncm, fecam, ranpac) keep
per-domain statistics that only that domain's images made, so removing its entry is exact; the `mlp` selector's
weights mix every domain, so it is retrained from scratch on the remaining buffer rows, with the seed of the set's
first learned domain (`MlpSelector.retrain`). Merging is the union: modules copied tensor for tensor, statistics
appended (exact), or the mlp retrained from scratch on both buffers.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import SamclError
from ..store.files import ModuleStore
from ..store.moduleset import BASE_MODEL, NO_MODULE, ModuleSet, name_problem


def _seed(module_set: ModuleSet) -> int:
    """The set's seed: the one its first learned domain was learned with (0 if not recorded)."""
    return int(module_set.domains[0].info.get("seed", 0)) if module_set.domains else 0


def _load(store: ModuleStore) -> ModuleSet:
    module_set = store.load()  # every file read and checked (the mlp's buffer too: forget and merge need it)
    if module_set.aug_config is not None and module_set.aug_config.heat_mode == "reference":
        raise SamclError(f"{store.path}: an imported reference set has no feature buffer to retrain its "
                         "selector on; forget and merge work on sets samcl learned")
    return module_set


def remove_domain(module_set: ModuleSet, domain: str) -> int:
    """Take `domain` out of the in-memory `module_set`: its entry, its module, its selector state (the set's only
    domain leaves no selector: the next domain starts a fresh one, as the first learn did).

    Returns:
      (int): the seed the selector was retrained with (`_seed`)."""
    index = module_set.names.index(domain)
    seed = _seed(module_set)
    if len(module_set.domains) == 1:
        module_set.selector = None
    else:
        module_set.selector.remove_domain(index, seed=seed)
    del module_set.domains[index]
    module_set.modules.pop(domain, None)
    return seed


def forget(path: str | Path, domain: str) -> dict:
    """Remove `domain` from the store at `path`: its module file, its selector state, every selector weight
    that saw it. Returns a report (remaining domains, whether the selector was retrained, bytes)."""
    store = ModuleStore(path)
    with store.lock():
        module_set = _load(store)
        names = module_set.names
        if domain not in names:
            hint = (" ('base' names no domain: the base model itself cannot be forgotten)" if domain == BASE_MODEL
                    else "")
            raise SamclError(f"{path}: no domain {domain!r}{hint}; learned: {', '.join(names) or 'none'}")
        index = names.index(domain)
        if len(names) == 1:
            raise SamclError(f"{path}: {domain!r} is the set's only domain; delete the store instead of forgetting it")
        without_module = module_set.domains[index].kind == NO_MODULE  # only its selector state goes
        seed = remove_domain(module_set, domain)
        store.save(module_set, written=set())
    return {"store": str(path), "forgot": domain, "without_module": without_module, "domains": module_set.names,
            "selector": module_set.selector_config.kind,
            "selector_retrained": module_set.selector_config.kind == "mlp", "seed": seed}


def _check_compatible(first: ModuleSet, other: ModuleSet, where: str) -> None:
    """Sets merge only on the same base, with the same AugModule, selector and storage configuration."""
    checks = [("base model", first.backbone, other.backbone),
              ("AugModule config", first.aug_config and first.aug_config.to_dict(),
               other.aug_config and other.aug_config.to_dict()),
              ("selector kind", first.selector_config.kind, other.selector_config.kind),
              ("selector config", first.selector_config.to_dict(), other.selector_config.to_dict()),
              ("selector block", first.selector_block, other.selector_block),
              ("storage dtype", first.dtype, other.dtype)]
    for what, mine, theirs in checks:
        if mine != theirs:
            raise SamclError(f"{where}: another {what} than the first store's ({str(theirs)[:80]} vs {str(mine)[:80]}); "
                             "only sets learned on the same base with the same configuration merge")


def merge(out: str | Path, paths: list[str | Path], *, rename: dict[str, str] | None = None) -> dict:
    """A new store at `out` holding the union of the stores at `paths` (learned apart on the same base).
    rename: OLD=NEW for a domain of the second or a later store whose name is taken already."""
    if len(paths) < 2:
        raise SamclError("merge needs at least two stores")
    rename = dict(rename or {})
    for old, new in rename.items():  # the rule of learn: a merge must not make a name learn refuses
        problem = name_problem(new)
        if problem:
            raise SamclError(f"rename '{old}={new}': {problem}", field="rename")
    target = ModuleStore(out)
    if target.exists():
        raise SamclError(f"{out}: a store already exists here; merge writes a new one")
    sets = [_load(ModuleStore(p)) for p in paths]
    merged = sets[0]
    used = set()
    for path, other in zip(paths[1:], sets[1:]):
        _check_compatible(merged, other, str(path))
        if any(d.kind == NO_MODULE for d in merged.domains) and any(d.kind == NO_MODULE for d in other.domains):
            raise SamclError(f"{path}: both sets have a domain without a module; a set has one (forget one of them "
                             "first)")
        for entry in other.domains:
            new = rename.get(entry.name, entry.name)
            if new != entry.name:
                used.add(entry.name)
            if new in merged.names:
                taken = f"{path}: domain {new!r} is in an earlier store too; give it another name with "
                raise SamclError(taken + f"rename '{new}=NEW'", code="domain_exists", field="rename")
            if entry.name in other.modules:
                merged.modules[new] = other.modules[entry.name]
            entry.name = new
            merged.domains.append(entry)
        merged.selector.merge(other.selector, seed=_seed(merged))
    unused = sorted(set(rename) - used)
    if unused:
        raise SamclError(f"rename {unused[0]!r}: no later store has a domain {unused[0]!r}",
                         field="rename")
    for entry in merged.domains:
        entry.file = entry.sha256 = None  # every module file is written into the new store
    merged.generation = 0
    with target.lock():
        target.save(merged)
    return {"store": str(out), "from": [str(p) for p in paths], "domains": merged.names,
            "selector": merged.selector_config.kind, "selector_retrained": merged.selector_config.kind == "mlp"}
