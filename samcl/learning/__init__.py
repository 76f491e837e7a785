"""Learning: training one AugModule on the frozen backbone (`trainer`), the continual loop over a module set
(`learner.SAMCL`: create, open, learn, segment, evaluate), the same learn spread over torchrun's processes
(`distributed`), and `forget` / `merge` (`lifecycle`: the same commit with another set of domains).

    samcl = SAMCL.create("builtin:tiny-sam", "my-set")
    samcl.learn("polyps", FolderDataset("kvasir/train"), TrainConfig(epochs=20))

Public names load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

_WHERE = {
    "SAMCL": ".learner",
    "TrainConfig": ".trainer", "Objective": ".trainer", "NonFiniteLoss": ".trainer", "train_module": ".trainer",
    "module_loss": ".trainer", "train_step_points": ".trainer", "training_batch": ".trainer",
    "usable_indices": ".trainer", "default_device": ".trainer",
    "forget": ".lifecycle", "merge": ".lifecycle",
    "distributed": ".distributed",
}
__all__ = ["NonFiniteLoss", "Objective", "SAMCL", "TrainConfig", "default_device", "distributed", "forget", "merge",
           "module_loss", "train_module", "train_step_points", "training_batch", "usable_indices"]
__getattr__, __dir__ = lazy_names(__name__, _WHERE)

if TYPE_CHECKING:
    from . import distributed
    from .learner import SAMCL
    from .lifecycle import forget, merge
    from .trainer import (NonFiniteLoss, Objective, TrainConfig, default_device, module_loss, train_module,
                          train_step_points, training_batch, usable_indices)
