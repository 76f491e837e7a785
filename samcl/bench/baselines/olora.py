"""O-LoRA: a new qkv LoRA per domain, orthogonal to the earlier ones; all summed at inference."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch

from ... import SamclError, TrainConfig
from ...learning import Objective, train_module
from ...method import AugModule, AugModuleConfig
from ..protocol import DomainData, Strategy
from .single import OLORA_STRENGTH, SingleModule, lora_config, module_from, module_tensors


class OrthogonalLora(Objective):
    """O-LoRA: the forward uses the frozen earlier LoRAs and the new one together (concatenated along the rank,
    i.e. their sum); penalty = strength x sum over blocks of ||A_old A_new^T||^2 (squared Frobenius)."""

    def __init__(self, frozen: dict[str, torch.Tensor] | None, strength: float, device):
        self.frozen = None if frozen is None else {n: t.to(device) for n, t in frozen.items()}
        self.strength = strength

    def params(self, trainable):
        if self.frozen is None:
            return trainable
        return {"a.weight": torch.cat([self.frozen["a.weight"], trainable["a.weight"]], dim=2),
                "b.weight": torch.cat([self.frozen["b.weight"], trainable["b.weight"]], dim=3)}

    def penalty(self, params, tokens, points, low_res):
        if self.frozen is None:
            return 0.0
        old_rank = self.frozen["a.weight"].shape[2]
        old, new = params["a.weight"][:, :, :old_rank], params["a.weight"][:, :, old_rank:]
        return self.strength * (torch.matmul(old, new.transpose(-1, -2)) ** 2).sum()


def concat_loras(loras: Sequence[AugModule]) -> AugModule:
    """LoRAs of one qkv config -> one LoRA of the summed rank computing the sum of their deltas."""
    config = replace(loras[0].config, rank=sum(m.config.rank for m in loras))
    module = AugModule(config)
    module.load_state_tensors({
        "a.weight": torch.cat([m.state_tensors()["a.weight"] for m in loras], dim=1),
        "b.weight": torch.cat([m.state_tensors()["b.weight"] for m in loras], dim=2),
    })
    return module.requires_grad_(False)


class OLoraStrategy(Strategy):
    """O-LoRA (Wang et al. 2023): a new qkv LoRA per domain, trained orthogonal to the frozen earlier ones;
    at inference all of them are summed (no selector)."""

    name = "o-lora"

    def __init__(self, backbone, train: TrainConfig, rank: int = 10, device=None, strength: float = OLORA_STRENGTH):
        self.runner = SingleModule(backbone, rank, device)
        self.samcl = self.runner.samcl
        self.config = lora_config(backbone, rank)
        self.train, self.strength = train, strength
        self.loras: list[AugModule] = []

    def learn(self, domain: DomainData) -> dict:
        samcl = self.samcl
        init = AugModule(self.config, generator=torch.Generator().manual_seed(self.train.seed + len(self.loras)))
        frozen = concat_loras(self.loras).params() if self.loras else None
        module, stats, _ = train_module(samcl.backbone, self.config, domain.train, samcl.selector_block, self.train,
                                        samcl.device, desc=f"{self.name} {domain.name}", init=init,
                                        objective=OrthogonalLora(frozen, self.strength, samcl.device))
        self.loras.append(module)
        self.runner.use(concat_loras(self.loras))
        return {"stats": stats}

    def evaluate(self, domain: DomainData) -> dict:
        return self.runner.evaluate(domain.test)

    def storage(self) -> dict:
        sizes = {f"lora-{k}": self.config.num_parameters * 4 for k in range(len(self.loras))}
        total = sum(sizes.values())
        return {"modules": sizes, "module_total": total, "selector": 0, "buffer": 0, "total": total}

    def snapshot(self) -> tuple[dict, dict]:
        tensors = {}
        for k, module in enumerate(self.loras):
            tensors.update(module_tensors(f"lora.{k}", module))
        return tensors, {"loras": len(self.loras), "config": self.config.to_dict()}

    def restore(self, tensors: dict, meta: dict) -> None:
        if AugModuleConfig.from_dict(meta["config"]) != self.config:
            raise SamclError(f"{self.name}: saved state has another LoRA config")
        self.loras = [module_from(f"lora.{k}", tensors, self.config) for k in range(int(meta["loras"]))]
        self.runner.use(concat_loras(self.loras) if self.loras else None)
