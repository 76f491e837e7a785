"""Competing continual methods behind the `samcl.bench.protocol.Strategy` interface.

Every method adapts the same frozen SAM through the same hooks (`samcl.method.augmodule`: one config, one math)
and trains with the same loop (`samcl.learning.trainer.train_module`: loss, optimiser, schedule, epochs, batch);
what differs is what is trained, on which data, with which extra term (`samcl.learning.trainer.Objective`) and
what is kept:

| method            | trained per domain                          | kept between domains                       |
|-------------------|---------------------------------------------|--------------------------------------------|
| zero-shot         | nothing                                     | nothing                                    |
| sequential        | one AugModule, continued                    | the module                                 |
| sequential-lora   | one PEFT-style LoRA on qkv, continued       | the LoRA                                   |
| ewc               | as sequential + EWC penalty                 | module, diagonal Fisher and weights per domain |
| lwf               | as sequential + distillation to the previous module on the new images | the module |
| replay            | as sequential, on new data + replayed images | module + images (PNG) within a byte budget |
| o-lora            | a new qkv LoRA, orthogonal to the earlier ones; all summed at inference | every LoRA |
| joint             | a fresh AugModule on all domains so far     | the module + all training images           |

SAMCL and its ablations are `samcl.bench.protocol.SamclStrategy` (with `variant`/`oracle`).

The qkv LoRA is LoRA as PEFT applies it (`peft.LoraConfig(r=rank, lora_alpha=rank, target_modules=qkv of the
adapted blocks)`: qkv(x) + B A x, A Kaiming-uniform, B zero, no bias, no dropout), run through the backbone's
qkv hook rather than by wrapping the shared model's layers; tests/test_baselines.py checks it against PEFT.
"""

from .olora import OLoraStrategy, OrthogonalLora, concat_loras
from .regularised import Distillation, EwcPenalty, EwcStrategy, LwfStrategy, diagonal_fisher
from .replay import JointStrategy, ReplayStrategy, StoredSample
from .single import (ADAPTER, EWC_STRENGTH, LWF_STRENGTH, LWF_TEMPERATURE, OLORA_STRENGTH,
                     SequentialStrategy, SingleModule, ZeroShotStrategy, lora_config, sample_bytes,
                     score_fresh_module, sequential_lora)

__all__ = ["ADAPTER", "EWC_STRENGTH", "LWF_STRENGTH", "LWF_TEMPERATURE", "OLORA_STRENGTH", "Distillation",
           "EwcPenalty", "EwcStrategy", "JointStrategy", "LwfStrategy", "OLoraStrategy", "OrthogonalLora",
           "ReplayStrategy", "SequentialStrategy", "SingleModule", "StoredSample", "ZeroShotStrategy", "concat_loras",
           "diagonal_fisher", "lora_config", "sample_bytes", "score_fresh_module", "sequential_lora"]
