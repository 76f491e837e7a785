"""samcl: continual learning for Segment Anything (SAMCL).

    from samcl import SAMCL, load_backbone, FolderDataset, Prompt

The public names are imported on first use (PEP 562), so `import samcl` (and the `samcl` command's start-up)
does not pay for torch and transformers until a name that needs them is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from ._version import __version__

#: public name -> the module that defines it
_PUBLIC = {
    "SAMCL": ".learner", "Prediction": ".types", "Prompt": ".types",
    "FolderDataset": ".data.folders", "SelectorConfig": ".selector", "TrainConfig": ".trainer",
    "load_backbone": ".backbone", "forget": ".lifecycle", "merge": ".lifecycle",
    "SamclError": ".io", "MissingFile": ".manifest", "ReferenceFileError": ".reference.unpickle",
}

__all__ = ["SAMCL", "Prediction", "Prompt", "FolderDataset", "SelectorConfig", "TrainConfig", "load_backbone",
           "forget", "merge", "SamclError", "MissingFile", "ReferenceFileError", "__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names come from __getattr__
    from .backbone import load_backbone
    from .data.folders import FolderDataset
    from .io import SamclError
    from .learner import SAMCL
    from .lifecycle import forget, merge
    from .manifest import MissingFile
    from .reference.unpickle import ReferenceFileError
    from .selector import SelectorConfig
    from .trainer import TrainConfig
    from .types import Prediction, Prompt


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(import_module(_PUBLIC[name], __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
