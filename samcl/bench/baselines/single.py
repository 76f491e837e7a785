"""The single-module baselines: zero-shot SAM, one module fine-tuned in sequence (an AugModule or PEFT-style
LoRA on qkv), and the runner that evaluates one module (or none) for every image."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch

from ... import SAMCL, SamclError, TrainConfig
from ...data import Sample
from ...io import encode_image
from ...learning import Objective, train_module
from ...method import AugModule, AugModuleConfig, config_for
from ...store import BASE_MODEL
from ..protocol import EVAL_PREFIX_CACHE_BYTES, DomainData, Strategy

ADAPTER = "adapter"

#: Strengths of the regularised baselines, fixed (the benchmark searches learning rates only). Chosen once by a pilot
#: on the embedded suite's first two domains (polyps, camouflage; seed 0; the shipped tiny SAM; 8 epochs, batch 4,
#: lr 0.03 for AugModules and 0.01 for LoRA): each domain trained on 36 of its training images, scored on the other
#: 12 (never the test split); the strength with the best mean IoU over both domains after the second step, from
#: EWC {0.1, 1, 10} (0.538 / 0.577 / 0.578; sequential 0.534), LwF {1, 3, 10, 30} (0.535 / 0.586 / 0.573 / 0.467),
#: O-LoRA {0.1, 0.5, 2} (0.554 / 0.551 / 0.542; sequential LoRA 0.503).
EWC_STRENGTH = 10.0  # with the Fisher normalised to mean 1 per domain
LWF_STRENGTH = 3.0
LWF_TEMPERATURE = 1.0
OLORA_STRENGTH = 0.1


def lora_config(backbone, rank: int = 10) -> AugModuleConfig:
    """PEFT-style LoRA (rank r) on the qkv projection of the blocks SAMCL adapts."""
    if not backbone.site.qkv_lora:
        raise SamclError(f"LoRA on the attention's qkv is implemented for SAM only, not {backbone.family!r}")
    return replace(config_for(backbone.site, rank=rank), shared_down=False, prompt_augmentation=False, target="qkv")


def sample_bytes(sample: Sample) -> int:
    """What a replay memory keeps of a sample: its image and mask as PNG (`samcl.io.encode_image`)."""
    return len(encode_image(sample.image)) + len(encode_image(sample.mask))


class SingleModule:
    """A SAMCL object without a selector that runs one module (or none: the base) for every image."""

    def __init__(self, backbone, rank: int, device):
        self.samcl = SAMCL.create(backbone, None, rank=rank, device=device)
        self.samcl.cache_prefixes(EVAL_PREFIX_CACHE_BYTES, evict="keep")
        self.module: AugModule | None = None

    def use(self, module: AugModule | None) -> None:
        self.module = module
        if module is not None:  # its own config each time (O-LoRA's rank grows)
            self.samcl.put_module(ADAPTER, module)

    def evaluate(self, samples: Sequence[Sample]) -> dict:
        return self.samcl.evaluate(samples, force=ADAPTER if self.module is not None else BASE_MODEL)


def module_tensors(prefix: str, module: AugModule) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{name}": t.clone() for name, t in module.state_tensors().items()}


def module_from(prefix: str, tensors: dict[str, torch.Tensor], config: AugModuleConfig) -> AugModule:
    module = AugModule(config)
    module.load_state_tensors({k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
    return module.requires_grad_(False)


class ZeroShotStrategy(Strategy):
    """The base SAM, never adapted: the lower reference."""

    name = "zero-shot"

    def __init__(self, backbone, device=None):
        self.runner = SingleModule(backbone, 10, device)

    def learn(self, domain: DomainData) -> dict:
        return {}

    def evaluate(self, domain: DomainData) -> dict:
        return self.runner.evaluate(domain.test)

    def storage(self) -> dict:
        return {"modules": {}, "module_total": 0, "selector": 0, "buffer": 0, "total": 0}

    def snapshot(self) -> tuple[dict, dict]:
        return {}, {}

    def restore(self, tensors: dict, meta: dict) -> None:
        pass


class SequentialStrategy(Strategy):
    """One module fine-tuned on every domain in turn, no selector: the naive way, which forgets.

    config: the module (default: the backbone's AugModule at `rank`; `lora_config` for plain LoRA on qkv).
    Subclasses change the data (`training_samples`), the starting point (`initial`), the objective and what is
    kept after each domain (`after_learn`)."""

    name = "sequential"

    def __init__(self, backbone, train: TrainConfig, rank: int = 10, device=None,
                 config: AugModuleConfig | None = None):
        self.runner = SingleModule(backbone, rank, device)
        self.samcl = self.runner.samcl
        self.config = config or self.samcl.aug_config
        self.train = train
        self.module: AugModule | None = None
        self.steps = 0

    # ------------------------------------------------------------------ what subclasses change
    def training_samples(self, domain: DomainData) -> Sequence[Sample]:
        return domain.train

    def initial(self, domain: DomainData) -> AugModule | None:
        return self.module

    def objective(self, domain: DomainData) -> Objective | None:
        return None

    def after_learn(self, domain: DomainData, module: AugModule) -> None:
        pass

    # ------------------------------------------------------------------ the interface
    def learn(self, domain: DomainData) -> dict:
        samcl = self.samcl
        module, stats, _ = train_module(samcl.backbone, self.config, self.training_samples(domain),
                                        samcl.selector_block, self.train, samcl.device,
                                        desc=f"{self.name} {domain.name}", init=self.initial(domain),
                                        objective=self.objective(domain))
        self.after_learn(domain, module)
        self.module = module
        self.runner.use(module)
        self.steps += 1
        return {"stats": stats}

    def evaluate(self, domain: DomainData) -> dict:
        return self.runner.evaluate(domain.test)

    def storage(self) -> dict:
        size = self.config.num_parameters * 4 if self.module is not None else 0
        return {"modules": {ADAPTER: size} if size else {}, "module_total": size, "selector": 0, "buffer": 0,
                "total": size}

    def snapshot(self) -> tuple[dict, dict]:
        tensors = module_tensors("module", self.module) if self.module is not None else {}
        return tensors, {"steps": self.steps, "config": self.config.to_dict()}

    def restore(self, tensors: dict, meta: dict) -> None:
        if AugModuleConfig.from_dict(meta["config"]) != self.config:
            raise SamclError(f"{self.name}: saved state has another module config")
        self.steps = int(meta["steps"])
        self.module = module_from("module", tensors, self.config) if self.steps else None
        self.runner.use(self.module)


def sequential_lora(backbone, train: TrainConfig, rank: int = 10, device=None) -> SequentialStrategy:
    """Plain LoRA on the attention's qkv (as PEFT would add it), one LoRA fine-tuned on the domains in turn."""
    strategy = SequentialStrategy(backbone, train, rank, device, config=lora_config(backbone, rank))
    strategy.name = "sequential-lora"
    return strategy


def score_fresh_module(backbone, config: AugModuleConfig, fit: Sequence[Sample], val: Sequence[Sample],
                       train: TrainConfig, rank: int = 10, device=None) -> float:
    """Mean IoU on `val` of a fresh module of `config` trained on `fit`, run alone for every image (no selector):
    what the benchmark's learning-rate search scores each rate with."""
    runner = SingleModule(backbone, rank, device)
    module, _, _ = train_module(backbone, config, fit, runner.samcl.selector_block, train, runner.samcl.device)
    runner.use(module)
    return runner.evaluate(val)["iou"]
