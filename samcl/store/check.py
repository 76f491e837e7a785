"""The one check of a store's structure, before anything it names is used.

    check_manifest(manifest, store_path)        # the manifest's schema (`samcl.store.schema`): one SamclError if not
    check_tensors(tensors, file)                 # every value finite
    check_site(aug, selector_dim, site, store_path)   # the configs fit the base's adaptation site
    check_recorded_base(manifest, store_path, blocks)  # what `samcl info` can check of the base without loading it

`ModuleStore.read_manifest` runs the first on the manifest it reads, and a command passes that manifest on (it is
read and checked once per command); `ModuleStore.load` runs the second on every tensor it reads (so `SAMCL.open`,
`samcl info`, learn, forget, merge and the server all refuse the same stores), `ModuleStore.save` runs both on
what it is about to commit (so no path writes a store that open would refuse), and `SAMCL.open` runs the third
once the base is loaded.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import torch
from pydantic import ValidationError

from ..errors import SamclError
from ..io import quote
from ..method.augmodule import AugModuleConfig
from ..options import range_of
from ..selector import SelectorConfig
from .manifest import MANIFEST
from .schema import Manifest

#: pydantic's words for "not this kind of JSON value" -> ours
_KINDS = {"model_type": "an object", "model_attributes_type": "an object", "dataclass_type": "an object",
          "dict_type": "an object", "list_type": "a list"}


def check_manifest(manifest, store: Path) -> Manifest:
    """Every key, type and rule of a manifest (`samcl.store.schema`); one SamclError naming the manifest and the
    first problem. Returns the manifest as its schema reads it: the `Manifest` that commands pass on."""
    try:
        return Manifest.model_validate(manifest)
    except ValidationError as exc:
        problem = _problem(exc.errors()[0], manifest)
        raise SamclError(f"{Path(store) / MANIFEST}: malformed manifest ({problem})") from None


def _problem(error: dict, raw) -> str:
    """One pydantic error as the manifest's words: 'domain 'red' config rank 0: expected an integer >= 1'."""
    loc = [part for part in error["loc"] if not (isinstance(part, str) and part[:1].isupper())]  # (union tags)
    cause = (error.get("ctx") or {}).get("error")
    if error["type"] in ("value_error", "assertion_error") and cause is not None:
        return str(cause)
    if error["type"] in ("missing", "missing_argument"):
        return f"{_where(loc[:-1], raw)} lacks {loc[-1]!r}"
    if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"{_where(loc[:-1], raw)} has an unexpected key {quote(loc[-1])}"
    if error["type"] in _KINDS:
        return f"{_where(loc, raw)} is {type(error['input']).__name__}, not {_KINDS[error['type']]}"
    if error["type"] == "literal_error":
        return f"{_where(loc, raw)} {quote(error['input'])}: expected {error['ctx']['expected']}"
    accepted = _range(loc)
    rule = f"expected {accepted.describe()}" if accepted else _rule(error)
    return f"{_where(loc, raw)} {quote(error['input'])}: {rule}"


#: pydantic's error types for a field without a samcl range, in the words of the other refusals
_EXPECTED = {"int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
             "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
             "string_type": "a string", "bool_type": "true or false", "bool_parsing": "true or false"}
_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"), "less_than_equal": ("<=", "le"),
           "less_than": ("<", "lt")}


def _rule(error: dict) -> str:
    """'expected an integer', 'expected >= 0' (pydantic's own message, lower-cased, for the rest)."""
    if error["type"] in _EXPECTED:
        return f"expected {_EXPECTED[error['type']]}"
    if error["type"] in _BOUNDS:
        sign, key = _BOUNDS[error["type"]]
        return f"expected {sign} {error['ctx'][key]}"
    return error["msg"][:1].lower() + error["msg"][1:]


def _where(loc: list, raw) -> str:
    """A location in the manifest in words: 'the manifest', 'selector dim', 'domain 'red' config'."""
    words, node = [], raw
    for part in loc:
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
        if isinstance(part, int) and words == ["domains"]:
            name = node.get("name") if isinstance(node, dict) else None
            words = [f"domain {name!r}" if isinstance(name, str) else f"domain entry {part}"]
        else:
            words.append(str(part))
    return " ".join(words) or "the manifest"


def _has(node, part) -> bool:
    return part in node if isinstance(node, dict) else isinstance(part, int) and 0 <= part < len(node)


def _range(loc: list):
    """The `samcl.options.Range` of a config field the manifest holds (a module's or the selector's), if any."""
    if len(loc) < 2 or not isinstance(loc[-1], str):
        return None
    owner = {"augmodule": AugModuleConfig, "config": AugModuleConfig}.get(loc[-2])
    owner = SelectorConfig if loc[:2] == ["selector", "config"] else owner
    try:
        return range_of(owner, loc[-1]) if owner is not None else None
    except KeyError:
        return None


def check_tensors(tensors: dict[str, torch.Tensor], source) -> None:
    """Every value of every floating-point tensor is finite (NaN or inf weights would give empty masks)."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise SamclError(f"{source}: tensor {quote(name)} holds NaN or infinite values")


def check_site(aug: AugModuleConfig | None, selector_dim, site, store: Path) -> None:
    """A store's AugModule config and selector width fit the base's adaptation site (`backbone.site`)."""
    if aug is None:
        return
    where = Path(store) / MANIFEST
    if aug.dim != site.dim or (selector_dim is not None and selector_dim != site.dim):
        raise SamclError(f"{where}: its modules are {aug.dim} wide, the base's blocks {site.dim}")
    outside = [b for b in aug.adapted_blocks if b not in site.blocks]
    if outside:
        raise SamclError(f"{where}: adapts blocks {outside}, which the base cannot adapt "
                         f"({site.blocks[0]}..{site.blocks[-1]})")
    if aug.neck_channels and aug.neck_channels != site.neck_channels:
        raise SamclError(f"{where}: its modules inject {aug.neck_channels} neck channels, the base has "
                         f"{site.neck_channels}")


def check_recorded_base(manifest: Manifest, store: Path, blocks: tuple[int, ...] | None) -> list[str]:
    """What can be checked of a store against its recorded base without loading it (`samcl info`): the base hint
    is not a device, FIFO or socket (a stat, never an open), and, where the base's blocks are known from its
    config (`blocks`, the adaptable ones; None: not known), the adapted blocks lie among them. Returns what was
    left unchecked, for the user to read; one SamclError for a problem."""
    where = Path(store) / MANIFEST
    hint = manifest.base_hint
    if isinstance(hint, str) and not hint.startswith("builtin:"):
        try:
            mode = os.stat(hint).st_mode
        except (OSError, ValueError):
            mode = None
        if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            kind = next(name for test, name in ((stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "character device"),
                                                (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"),
                                                (lambda _: True, "special file")) if test(mode))
            raise SamclError(f"{where}: base_hint {quote(hint)} is a {kind}, not a model folder or checkpoint "
                             "file; give the model as base", field="base")
    unchecked = ["the base's weights against the recorded sha256 (checked when a command loads the base)"]
    aug = manifest.augmodule
    if aug and blocks is not None:
        outside = [b for b in aug.adapted_blocks if b not in blocks]
        if outside:
            raise SamclError(f"{where}: adapts blocks {outside}, which the base cannot adapt "
                             f"({blocks[0]}..{blocks[-1]}, from its config)")
    elif aug:
        unchecked.append("the adapted blocks against the base's (its config is not a folder samcl can read "
                         "without loading the base)")
    return unchecked
