"""Sequential fine-tuning with a regulariser: EWC (diagonal Fisher per domain) and LwF (distillation to the
previous module)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ... import TrainConfig
from ...data import Sample
from ...inference import PrefixCache
from ...learning import Objective, module_loss, train_step_points, training_batch, usable_indices
from ...method import AugModule, Injection
from ..protocol import DomainData
from .single import EWC_STRENGTH, LWF_STRENGTH, LWF_TEMPERATURE, SequentialStrategy


class EwcPenalty(Objective):
    """strength / 2 x sum over earlier domains k of sum_j F_kj (theta_j - theta*_kj)^2 (diagonal Fisher, each
    normalised to mean 1)."""

    def __init__(self, anchors: list[tuple[dict, dict]], strength: float, device):
        self.anchors = [({n: f.to(device) for n, f in fisher.items()}, {n: t.to(device) for n, t in theta.items()})
                        for fisher, theta in anchors]
        self.strength = strength

    def penalty(self, params, tokens, points, low_res):
        total = 0.0
        for fisher, theta in self.anchors:
            for name, weight in fisher.items():
                total = total + (weight * (params[name][0] - theta[name]) ** 2).sum()
        return 0.5 * self.strength * total


def diagonal_fisher(backbone, module: AugModule, samples: Sequence[Sample], selector_block: int,
                    train: TrainConfig, device, normalize: bool = True) -> dict[str, torch.Tensor]:
    """Empirical diagonal Fisher of the training loss at `module`: the mean over the training samples of the
    squared gradient of each sample's loss (points as the first training epoch draws them). `normalize` divides
    it by its mean over all parameters, so that the EWC strength does not depend on the loss's scale."""
    module = module.to(device).requires_grad_(True)
    cache = PrefixCache(backbone, selector_block, device)  # one pass: nothing to keep
    names = list(module.named_tensors())
    sums = {name: torch.zeros_like(t) for name, t in module.named_tensors().items()}
    indices = usable_indices(samples)
    for index in indices:
        tokens, masks, geometries, _ = training_batch(cache, samples, [index])
        points = train_step_points(samples, [index], geometries, train, 0).to(device)
        loss = module_loss(backbone, module.params(), module.config, tokens, masks, points, selector_block + 1,
                           train)
        grads = torch.autograd.grad(loss, [module.named_tensors()[n] for n in names])
        for name, grad in zip(names, grads):
            sums[name] += grad.detach() ** 2
    module.requires_grad_(False).cpu()
    fisher = {name: (total / len(indices)).cpu() for name, total in sums.items()}
    if normalize:
        mean = sum(f.sum() for f in fisher.values()) / sum(f.numel() for f in fisher.values())
        fisher = {name: f / mean.clamp(min=torch.finfo(f.dtype).tiny) for name, f in fisher.items()}
    return fisher


class EwcStrategy(SequentialStrategy):
    """Sequential fine-tuning of one AugModule with Elastic Weight Consolidation: after each domain its diagonal
    Fisher and the module's weights are kept, and later training pays a quadratic penalty across all of them."""

    name = "ewc"

    def __init__(self, backbone, train: TrainConfig, rank: int = 10, device=None, strength: float = EWC_STRENGTH):
        super().__init__(backbone, train, rank, device)
        self.strength = strength
        self.anchors: list[tuple[dict, dict]] = []

    def objective(self, domain: DomainData) -> Objective | None:
        return EwcPenalty(self.anchors, self.strength, self.samcl.device) if self.anchors else None

    def after_learn(self, domain: DomainData, module: AugModule) -> None:
        fisher = diagonal_fisher(self.samcl.backbone, module, domain.train, self.samcl.selector_block, self.train,
                                 self.samcl.device)
        self.anchors.append((fisher, {n: t.clone() for n, t in module.state_tensors().items()}))

    def storage(self) -> dict:
        out = super().storage()
        out["fisher"] = sum(2 * t.numel() * 4 for fisher, _ in self.anchors for t in fisher.values())
        out["total"] += out["fisher"]
        return out

    def snapshot(self) -> tuple[dict, dict]:
        tensors, meta = super().snapshot()
        for k, (fisher, theta) in enumerate(self.anchors):
            tensors.update({f"fisher.{k}.{n}": t for n, t in fisher.items()})
            tensors.update({f"theta.{k}.{n}": t for n, t in theta.items()})
        return tensors, {**meta, "anchors": len(self.anchors)}

    def restore(self, tensors: dict, meta: dict) -> None:
        super().restore(tensors, meta)
        pick = lambda kind, k: {n.split(".", 2)[2]: t for n, t in tensors.items()  # noqa: E731
                                if n.startswith(f"{kind}.{k}.")}
        self.anchors = [(pick("fisher", k), pick("theta", k)) for k in range(int(meta["anchors"]))]


# ---------------------------------------------------------------------------------------------------- LwF
class Distillation(Objective):
    """LwF for promptable segmentation: strength x BCE(new low-res logits / T, sigmoid(old logits / T)), the old
    logits from the previous module on the same images and prompts (the new domain's training batch)."""

    def __init__(self, backbone, previous: AugModule, start_block: int, strength: float, temperature: float,
                 device):
        self.backbone, self.start_block = backbone, start_block
        self.config = previous.config
        self.previous = {n: t.to(device) for n, t in previous.params().items()}
        self.strength, self.temperature = strength, temperature

    def penalty(self, params, tokens, points, low_res):
        with torch.no_grad():
            heat = self.backbone.heat(points, None, None)
            embeddings = self.backbone.suffix(tokens, self.start_block, Injection(self.config, self.previous, heat))
            old, _ = self.backbone.decode(embeddings, points, None, None, multimask_output=False)
        target = torch.sigmoid(old.float() / self.temperature)
        return self.strength * F.binary_cross_entropy_with_logits(low_res / self.temperature, target)


class LwfStrategy(SequentialStrategy):
    """Sequential fine-tuning of one AugModule, distilled towards the previous module's outputs on the new images."""

    name = "lwf"

    def __init__(self, backbone, train: TrainConfig, rank: int = 10, device=None, strength: float = LWF_STRENGTH,
                 temperature: float = LWF_TEMPERATURE):
        super().__init__(backbone, train, rank, device)
        self.strength, self.temperature = strength, temperature

    def objective(self, domain: DomainData) -> Objective | None:
        if self.module is None:
            return None
        frozen = AugModule(self.config)
        frozen.load_state_tensors(self.module.state_tensors())
        return Distillation(self.samcl.backbone, frozen.requires_grad_(False), self.samcl.selector_block + 1,
                            self.strength, self.temperature, self.samcl.device)
