"""samcl: continual learning for Segment Anything (SAMCL).

    from samcl import SAMCL, load_backbone, FolderDataset, Prompt

The public names are imported on first use (PEP 562), so `import samcl` (and the `samcl` command's start-up)
does not pay for torch and transformers until a name that needs them is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_names
from ._version import __version__

#: public name -> the module that defines it
_WHERE = {
    "SAMCL": ".learning.learner", "Prediction": ".types", "Prompt": ".types", "PromptError": ".types",
    "FolderDataset": ".data.folders", "SelectorConfig": ".selector", "TrainConfig": ".learning.trainer",
    "load_backbone": ".backbone", "forget": ".learning.lifecycle", "merge": ".learning.lifecycle",
    "SamclError": ".errors", "MissingFile": ".store.manifest", "ReferenceFileError": ".reference.unpickle",
    "AutoMaskConfig": ".inference.automatic", "GeneratedMasks": ".inference.automatic",
}

__all__ = ["SAMCL", "Prediction", "Prompt", "PromptError", "FolderDataset", "SelectorConfig", "TrainConfig",
           "load_backbone", "forget", "merge", "SamclError", "MissingFile", "ReferenceFileError", "AutoMaskConfig",
           "GeneratedMasks", "__version__"]
__getattr__, __dir__ = lazy_names(__name__, _WHERE)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names come from __getattr__
    from .backbone import load_backbone
    from .data.folders import FolderDataset
    from .errors import SamclError
    from .inference.automatic import AutoMaskConfig, GeneratedMasks
    from .learning.learner import SAMCL
    from .learning.lifecycle import forget, merge
    from .learning.trainer import TrainConfig
    from .reference.unpickle import ReferenceFileError
    from .selector import SelectorConfig
    from .store.manifest import MissingFile
    from .types import Prediction, Prompt, PromptError
