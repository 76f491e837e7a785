"""Competing continual methods behind the `samcl.protocol.Strategy` interface."""

from __future__ import annotations

from .learner import SAMCL
from .protocol import DomainData, Strategy
from .trainer import TrainConfig, train_module

SEQUENTIAL = "sequential"


class SequentialStrategy(Strategy):
    """One AugModule fine-tuned on every domain in turn, no selector: the naive way, which forgets."""

    name = "sequential-augmodule"

    def __init__(self, backbone, train: TrainConfig, rank: int = 10, device=None):
        self.samcl = SAMCL.create(backbone, None, rank=rank, device=device)
        self.train = train
        self.module = None

    def learn(self, domain: DomainData) -> dict:
        module, stats, _ = train_module(self.samcl.backbone, self.samcl.aug_config, domain.train,
                                        self.samcl.selector_block, self.train, self.samcl.device,
                                        desc=f"{self.name} {domain.name}", init=self.module)
        self.module = module
        self.samcl.state.modules[SEQUENTIAL] = module.to(self.samcl.device)
        if SEQUENTIAL not in self.samcl.domains:
            from .store import DomainEntry

            self.samcl.state.domains.append(DomainEntry(SEQUENTIAL, "module"))
        return {"stats": stats}

    def evaluate(self, domain: DomainData) -> dict:
        force = SEQUENTIAL if self.module is not None else "base"
        return self.samcl.evaluate(domain.test, force=force)

    def storage(self) -> dict:
        size = self.samcl.aug_config.num_parameters * 4 if self.module is not None else 0
        return {"modules": {SEQUENTIAL: size}, "module_total": size, "selector": 0, "buffer": 0, "total": size}
