"""Read the authors' `torch.save` files without running their code: a restricted unpickler for torch's zip format.

    obj = load_reference_file("checkpoint/SAM1/Kvasir.pth")   # dicts, lists, tensors and inert `Record`s

A torch zip file holds `<name>/data.pkl` (the pickle) and `<name>/data/<key>` (one raw storage per key). The
pickle names globals; `pickle` would import and call each one, which is how a `.pth` file runs arbitrary code.
Here `find_class` answers only from an allow-list:

- the authors' module classes and torch's `Linear` / `LayerNorm` become `Record` subclasses: NEWOBJ makes an
  empty record, BUILD hands it the module's `__dict__`, which is kept as data (no `nn.Module` is constructed);
- `torch._utils._rebuild_tensor_v2` / `_rebuild_parameter` are replaced by functions that only view a storage
  read from the zip as a tensor (bounds checked), and storage classes name a dtype;
- `collections.OrderedDict` and `set` are the harmless builtins that `nn.Module.__dict__` holds.

Every other global raises `ReferenceFileError` naming it: nothing outside the list is imported or called.

Sizes are bounded before anything is inflated or copied: the file (`FILE_LIMIT`), each member's declared size
(the pickle's, and each storage's against the bytes its tensors need), the containers the pickle may build
(`MAX_CONTAINERS`: counted on its opcodes before it runs, since hashing a deeply nested tuple recurses in C), how
deep the loaded object nests (`MAX_DEPTH`), and the values its tensors may copy out of their storages in all.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch

from ..errors import SamclError
from ..io import open_regular, quote

#: The most a file may hold, and inflate to: the authors' ViT-B module file is 0.25 MB, their selector 2.5 MB.
FILE_LIMIT = 64 << 20
#: The most the pickle itself may hold (theirs are about 20 KB: the structure, not the values).
PICKLE_LIMIT = 1 << 20
#: Lists, dicts, tuples, sets and calls the pickle may build (theirs about 1,000), and how deep they may nest.
MAX_CONTAINERS = 20_000
MAX_DEPTH = 32
_CONTAINER_OPS = {"EMPTY_LIST", "EMPTY_DICT", "EMPTY_TUPLE", "EMPTY_SET", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
                  "LIST", "DICT", "FROZENSET", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "INST", "OBJ", "BUILD"}


class ReferenceFileError(SamclError):
    """A file the restricted unpickler refuses (an unlisted global, a malformed archive)."""


class Record:
    """An inert stand-in for a pickled object of an allowed class: `state` is what BUILD gave it (for an
    `nn.Module`, its `__dict__`: `_parameters`, `_modules`, attributes). No method of the real class runs."""

    cls_name = ""
    state: dict = {}  # replaced (never mutated) by __setstate__; NEWOBJ does not call __init__

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) from objects with __slots__
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise ReferenceFileError(f"{self.cls_name}: unexpected pickled state of type {type(state).__name__}")
        self.state = dict(state)

    # the views the importer needs of an nn.Module's __dict__
    @property
    def parameters(self) -> dict:
        return dict(self.state.get("_parameters") or {})

    @property
    def modules(self) -> dict:
        return dict(self.state.get("_modules") or {})

    def __repr__(self) -> str:
        return f"<record of {self.cls_name}>"


def _record_class(qualified: str) -> type:
    return type(qualified.rpartition(".")[2], (Record,), {"cls_name": qualified})


#: Classes whose instances become records: the authors' modules and the torch layers inside them.
RECORD_CLASSES = {name: _record_class(name) for name in (
    "module.SAMCL.Extra", "module.SAMCL_2.Extra",
    "torch.nn.modules.linear.Linear", "torch.nn.modules.normalization.LayerNorm",
    "torch.nn.modules.batchnorm.BatchNorm1d", "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.container.Sequential", "torch.nn.modules.activation.ReLU",
)}

#: Legacy storage classes (what `torch.save` names in a storage's persistent id) -> dtype.
STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class _StorageType:
    """What the allow-list returns for `torch.FloatStorage` etc.: a dtype, nothing callable."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """`torch._utils._rebuild_tensor_v2`, reduced to what it may do here: view a zip storage (a 1-D tensor) and
    copy the view out. A view reaching past its storage, or with more values than the storage holds (a stride of
    0 repeats one value), is refused before anything is copied."""
    offset, size, stride = _checked_layout(storage, offset, size, stride)
    return storage.as_strided(size, stride, offset).clone()


def _checked_layout(storage, offset, size, stride) -> tuple[int, tuple, tuple]:
    if not isinstance(storage, torch.Tensor) or storage.dim() != 1:
        raise ReferenceFileError("a tensor is rebuilt from something that is not a storage of this file")
    if not all(isinstance(v, (list, tuple)) for v in (size, stride)) or not isinstance(offset, int) \
            or not all(isinstance(v, int) for v in (*size, *stride)) or len(size) != len(stride) \
            or any(v < 0 for v in (*size, *stride, offset)):
        raise ReferenceFileError(f"a tensor has an invalid layout (size {quote(size)}, stride {quote(stride)}, "
                                 f"offset {quote(offset)})")
    size, stride, values = tuple(size), tuple(stride), math.prod(size)
    if values > storage.numel() or (values and offset + sum((n - 1) * s for n, s in zip(size, stride))
                                    >= storage.numel()):
        raise ReferenceFileError(f"a tensor of size {quote(size)} (stride {quote(stride)}) needs more than its "
                                 f"storage of {storage.numel()} values")
    return offset, size, stride


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """`torch._utils._rebuild_parameter(_with_state)`: the tensor itself (a parameter is only its values here)."""
    if not isinstance(data, torch.Tensor):
        raise ReferenceFileError("a parameter is rebuilt from something that is not a tensor")
    return data


ALLOWED_FUNCTIONS = {
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "collections.OrderedDict": OrderedDict,
    "__builtin__.set": set, "builtins.set": set,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, storages, budget: int):
        super().__init__(io.BytesIO(data))
        self.storages = storages
        self.budget = budget  # bytes the tensors may still copy out of their storages

    def find_class(self, module: str, name: str):
        qualified = f"{module}.{name}"
        if qualified in RECORD_CLASSES:
            return RECORD_CLASSES[qualified]
        if qualified == "torch._utils._rebuild_tensor_v2":
            return self.rebuild_tensor
        if qualified in ALLOWED_FUNCTIONS:
            return ALLOWED_FUNCTIONS[qualified]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        raise ReferenceFileError(f"holds the global {qualified}, which is not one the authors' module files use "
                                 "(nothing was imported or run)")

    def rebuild_tensor(self, storage, offset, size, *rest):
        """`_rebuild_tensor`, charged to the file's budget: views of one storage cannot copy it out many times."""
        _checked_layout(storage, offset, size, rest[0] if rest else None)
        self.budget -= math.prod(size) * storage.element_size()
        if self.budget < 0:
            raise ReferenceFileError(f"its tensors copy out more than {FILE_LIMIT:,} bytes in all")
        return _rebuild_tensor(storage, offset, size, *rest)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)):
            raise ReferenceFileError(f"holds an unexpected persistent id {str(pid)[:80]}")
        return self.storages(pid[2], pid[1].dtype, int(pid[4]))


def load_reference_file(path: str | Path):
    """The object a `torch.save` zip file holds, through the allow-list (see the module docstring).
    Any problem is a `ReferenceFileError` naming the file."""
    path = Path(path)
    try:
        handle = open_regular(path, "torch file")  # a fifo or a device is refused before any read blocks
    except SamclError as exc:
        raise ReferenceFileError(str(exc)) from None
    with handle:
        size = os.fstat(handle.fileno()).st_size
        if size > FILE_LIMIT:
            raise ReferenceFileError(f"{path}: {size:,} bytes, more than a module or selector file holds "
                                     f"(at most {FILE_LIMIT:,}); nothing was read")
        try:
            archive = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise ReferenceFileError(f"{path}: not a torch zip file ({quote(str(exc))}); files from torch < 1.6 "
                                     "(the legacy format) are not read: re-save them with a recent torch") from None
        with archive:
            obj = _load_archive(archive, path)
    _check_nesting(obj, path)
    return obj


def _load_archive(archive: zipfile.ZipFile, path: Path):
    """The pickle of `archive`, every member's declared size checked before it is inflated."""
    infos = {info.filename: info for info in archive.infolist()}
    inflated = sum(info.file_size for info in infos.values())
    if inflated > FILE_LIMIT:
        raise ReferenceFileError(f"{path}: its members inflate to {inflated:,} bytes, more than a module or "
                                 f"selector file holds (at most {FILE_LIMIT:,}); nothing was inflated")
    pickles = [n for n in infos if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise ReferenceFileError(f"{path}: not a torch zip file (no single <name>/data.pkl)")
    prefix = pickles[0][: -len("data.pkl")]
    if infos[pickles[0]].file_size > PICKLE_LIMIT:
        raise ReferenceFileError(f"{path}: its pickle is {infos[pickles[0]].file_size:,} bytes, more than the "
                                 f"structure of a module file needs (at most {PICKLE_LIMIT:,})")
    order = infos.get(f"{prefix}byteorder")
    if order is not None and (order.file_size > 16 or archive.read(order).strip() not in (b"little", b"")):
        raise ReferenceFileError(f"{path}: big-endian tensors are not supported")
    cache: dict[str, torch.Tensor] = {}

    def storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        info = infos.get(f"{prefix}data/{key}")
        if info is None:
            raise ReferenceFileError(f"{path}: names a storage {quote(key)} that the archive does not hold")
        if key not in cache:
            itemsize = torch.empty(0, dtype=dtype).element_size()
            if info.file_size != numel * itemsize:  # checked on the declared size, before inflating
                raise ReferenceFileError(f"{path}: storage {quote(key)} holds {info.file_size:,} bytes, expected "
                                         f"{numel:,} x {itemsize}")
            raw = bytearray(archive.read(info))
            cache[key] = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        return cache[key]

    try:
        data = archive.read(pickles[0])
        _count_containers(data)
        return _Unpickler(data, storage, FILE_LIMIT).load()
    except ReferenceFileError as exc:
        message = str(exc)
        raise ReferenceFileError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, TypeError, ValueError, AttributeError,
            IndexError, KeyError, RuntimeError, MemoryError, OverflowError) as exc:
        raise ReferenceFileError(f"{path}: malformed pickle ({type(exc).__name__}: {quote(str(exc))})") from None


def _count_containers(data: bytes) -> None:
    """Refuse a pickle that would build more than MAX_CONTAINERS containers, before it runs: a tuple nested
    300,000 deep crashes the interpreter when hashed (CPython's tuple hash recurses in C without a guard)."""
    built = 0
    for opcode, _, _ in pickletools.genops(data):
        built += opcode.name in _CONTAINER_OPS
        if built > MAX_CONTAINERS:
            raise ReferenceFileError(f"its pickle builds more than {MAX_CONTAINERS:,} containers (the authors' "
                                     "files build about a thousand)")


def _children(node) -> list:
    if isinstance(node, dict):
        return [*node.keys(), *node.values()]
    if isinstance(node, (list, tuple, set, frozenset)):
        return list(node)
    if isinstance(node, Record):
        return [node.state]
    return []


def _check_nesting(obj, path: Path) -> None:
    """The loaded object nests at most MAX_DEPTH levels (the longest path, shared parts counted on every path)
    and refers to no part of itself: the importer's walks and messages never recurse without bound."""
    heights: dict[int, int] = {}
    stack = [(obj, _children(obj), 0)]
    on_path = {id(obj)}
    while stack:
        node, children, at = stack[-1]
        if at < len(children):
            stack[-1] = (node, children, at + 1)
            child = children[at]
            if not _children(child) or id(child) in heights:
                continue
            if id(child) in on_path:
                raise ReferenceFileError(f"{path}: its object refers to itself (a cycle); the authors' files do not")
            if len(stack) >= MAX_DEPTH:
                raise ReferenceFileError(f"{path}: its object nests deeper than {MAX_DEPTH} levels")
            stack.append((child, _children(child), 0))
            on_path.add(id(child))
            continue
        stack.pop()
        on_path.discard(id(node))
        heights[id(node)] = 1 + max((heights.get(id(c), 0) for c in children), default=0)
        if heights[id(node)] + len(stack) > MAX_DEPTH:
            raise ReferenceFileError(f"{path}: its object nests deeper than {MAX_DEPTH} levels")
