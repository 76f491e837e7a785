"""samcl: continual learning for Segment Anything (SAMCL).

    from samcl import SAMCL, load_backbone, FolderDataset, Prompt
"""

from ._version import __version__
from .backbone import load_backbone
from .data.folders import FolderDataset
from .learner import SAMCL
from .selector import SelectorConfig
from .trainer import TrainConfig
from .types import Prediction, Prompt

__all__ = ["__version__", "SAMCL", "Prediction", "Prompt", "FolderDataset", "SelectorConfig", "TrainConfig", "load_backbone"]
