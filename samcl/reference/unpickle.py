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
"""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch

from ..io import SamclError


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
    """`torch._utils._rebuild_tensor_v2`, reduced to what it may do here: view a zip storage (a 1-D tensor)."""
    if not isinstance(storage, torch.Tensor) or storage.dim() != 1:
        raise ReferenceFileError("a tensor is rebuilt from something that is not a storage of this file")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or any(s < 0 for s in (*size, *stride)) or int(offset) < 0:
        raise ReferenceFileError(f"a tensor has an invalid layout (size {size}, stride {stride}, offset {offset})")
    if math.prod(size) and int(offset) + sum((n - 1) * s for n, s in zip(size, stride)) >= storage.numel():
        raise ReferenceFileError(f"a tensor of size {size} reaches past its storage of {storage.numel()} values")
    return storage.as_strided(size, stride, int(offset)).clone()


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
    def __init__(self, data: bytes, storages):
        super().__init__(io.BytesIO(data))
        self.storages = storages

    def find_class(self, module: str, name: str):
        qualified = f"{module}.{name}"
        if qualified in RECORD_CLASSES:
            return RECORD_CLASSES[qualified]
        if qualified in ALLOWED_FUNCTIONS:
            return ALLOWED_FUNCTIONS[qualified]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        raise ReferenceFileError(f"holds the global {qualified}, which is not one the authors' module files use "
                                 "(nothing was imported or run)")

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
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise ReferenceFileError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise ReferenceFileError(f"{path}: not a torch zip file ({exc}); files from torch < 1.6 (the legacy "
                                 "format) are not read: re-save them with a recent torch") from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ReferenceFileError(f"{path}: not a torch zip file (no single <name>/data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        names = set(archive.namelist())
        if f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder").strip() not in (b"little", b""):
            raise ReferenceFileError(f"{path}: big-endian tensors are not supported")
        cache: dict[str, torch.Tensor] = {}

        def storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
            member = f"{prefix}data/{key}"
            if member not in names:
                raise ReferenceFileError(f"{path}: names a storage {key!r} that the archive does not hold")
            if key not in cache:
                raw = bytearray(archive.read(member))
                itemsize = torch.empty(0, dtype=dtype).element_size()
                if len(raw) != numel * itemsize:
                    raise ReferenceFileError(f"{path}: storage {key!r} holds {len(raw)} bytes, expected "
                                             f"{numel} x {itemsize}")
                cache[key] = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            return cache[key]

        try:
            return _Unpickler(archive.read(pickles[0]), storage).load()
        except ReferenceFileError as exc:
            message = str(exc)
            raise ReferenceFileError(message if message.startswith(str(path)) else f"{path}: {message}") from None
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError, KeyError,
                RuntimeError) as exc:
            raise ReferenceFileError(f"{path}: malformed pickle ({type(exc).__name__}: {exc})") from None
