"""samcl: continual learning for Segment Anything (SAMCL).

    from samcl import SAMCL, load_backbone, FolderDataset, Prompt
"""

__version__ = "0.1.0"

from .backbone import load_backbone  # noqa: E402
from .data.folders import FolderDataset  # noqa: E402
from .learner import SAMCL, Prediction, Prompt  # noqa: E402
from .selector import SelectorConfig  # noqa: E402
from .trainer import TrainConfig  # noqa: E402

__all__ = ["SAMCL", "Prediction", "Prompt", "FolderDataset", "SelectorConfig", "TrainConfig", "load_backbone"]
