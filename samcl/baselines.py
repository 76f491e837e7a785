"""Competing continual methods behind the `samcl.protocol.Strategy` interface.

Every method adapts the same frozen SAM through the same hooks (`samcl.augmodule`: one config, one math) and
trains with the same loop (`samcl.trainer.train_module`: loss, optimiser, schedule, epochs, batch); what differs
is what is trained, on which data, with which extra term (`samcl.trainer.Objective`) and what is kept:

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

SAMCL and its ablations are `samcl.protocol.SamclStrategy` (with `variant`/`oracle`).

The qkv LoRA is LoRA as PEFT applies it (`peft.LoraConfig(r=rank, lora_alpha=rank, target_modules=qkv of the
adapted blocks)`: qkv(x) + B A x, A Kaiming-uniform, B zero, no bias, no dropout), run through the backbone's
qkv hook rather than by wrapping the shared model's layers; tests/test_baselines.py checks it against PEFT.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .augmodule import AugModule, AugModuleConfig, Injection, config_for
from .data.sample import Sample
from .io import SamclError
from .learner import SAMCL
from .protocol import EVAL_PREFIX_CACHE_BYTES, DomainData, Strategy
from .moduleset import BASE_CLASS, DomainEntry
from .prefix_cache import PrefixCache
from .trainer import (Objective, TrainConfig, module_loss, train_module, train_step_points, training_batch,
                      usable_indices)

ADAPTER = "adapter"
SEQUENTIAL = ADAPTER  # the name the single module runs under (kept for older callers)

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


def png_bytes(array: np.ndarray) -> bytes:
    """An image (H x W x 3 uint8) or a mask (H x W bool, stored as uint8 0/255) as PNG: what a replay memory keeps."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def sample_bytes(sample: Sample) -> int:
    return len(png_bytes(sample.image)) + len(png_bytes(sample.mask))


class _SingleModule:
    """A SAMCL object without a selector that runs one module (or none: the base) for every image."""

    def __init__(self, backbone, rank: int, device):
        self.samcl = SAMCL.create(backbone, None, rank=rank, device=device)
        self.samcl.engine.cache_prefixes(EVAL_PREFIX_CACHE_BYTES)
        self.module: AugModule | None = None

    def use(self, module: AugModule | None) -> None:
        classes = self.samcl.module_set
        self.module = module
        if module is None:
            return
        classes.aug_config = module.config  # the bank is rebuilt for a new module object (O-LoRA's rank grows)
        classes.modules[ADAPTER] = module.to(self.samcl.device)
        if ADAPTER not in self.samcl.domains:
            classes.domains.append(DomainEntry(ADAPTER, "module"))

    def evaluate(self, samples: Sequence[Sample]) -> dict:
        return self.samcl.evaluate(samples, force=ADAPTER if self.module is not None else BASE_CLASS)


def _module_tensors(prefix: str, module: AugModule) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{name}": t.clone() for name, t in module.state_tensors().items()}


def _module_from(prefix: str, tensors: dict[str, torch.Tensor], config: AugModuleConfig) -> AugModule:
    module = AugModule(config)
    module.load_state_tensors({k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
    return module.requires_grad_(False)


class ZeroShotStrategy(Strategy):
    """The base SAM, never adapted: the lower reference."""

    name = "zero-shot"

    def __init__(self, backbone, device=None):
        self.runner = _SingleModule(backbone, 10, device)

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
        self.runner = _SingleModule(backbone, rank, device)
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
        tensors = _module_tensors("module", self.module) if self.module is not None else {}
        return tensors, {"steps": self.steps, "config": self.config.to_dict()}

    def restore(self, tensors: dict, meta: dict) -> None:
        if AugModuleConfig.from_dict(meta["config"]) != self.config:
            raise SamclError(f"{self.name}: saved state has another module config")
        self.steps = int(meta["steps"])
        self.module = _module_from("module", tensors, self.config) if self.steps else None
        self.runner.use(self.module)


def sequential_lora(backbone, train: TrainConfig, rank: int = 10, device=None) -> SequentialStrategy:
    """Plain LoRA on the attention's qkv (as PEFT would add it), one LoRA fine-tuned on the domains in turn."""
    strategy = SequentialStrategy(backbone, train, rank, device, config=lora_config(backbone, rank))
    strategy.name = "sequential-lora"
    return strategy


# ---------------------------------------------------------------------------------------------------- EWC
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


# ---------------------------------------------------------------------------------------------------- replay
@dataclass
class StoredSample:
    """One replayed training image as a replay memory keeps it: PNG bytes of the image and of its mask."""

    domain: str
    name: str
    image_png: bytes
    mask_png: bytes

    @property
    def bytes(self) -> int:
        return len(self.image_png) + len(self.mask_png)

    @classmethod
    def of(cls, domain: str, sample: Sample) -> "StoredSample":
        return cls(domain, sample.name, png_bytes(sample.image), png_bytes(sample.mask))

    def sample(self) -> Sample:
        image = np.asarray(Image.open(io.BytesIO(self.image_png)).convert("RGB"))
        mask = np.asarray(Image.open(io.BytesIO(self.mask_png))) > 127
        return Sample(f"{self.domain}/{self.name}", image, mask)


class ReplayStrategy(SequentialStrategy):
    """Experience replay: one AugModule trained on each new domain together with images replayed from a memory of
    `budget_bytes` (PNG image + mask), split evenly over the domains seen; a new domain's share is filled with a
    seeded random choice of its training images, and older shares shrink by dropping their last-added images."""

    name = "replay"

    def __init__(self, backbone, train: TrainConfig, budget_bytes: int, rank: int = 10, device=None):
        super().__init__(backbone, train, rank, device)
        self.budget = int(budget_bytes)
        self.memory: list[StoredSample] = []
        self.domains_seen: list[str] = []

    def training_samples(self, domain: DomainData) -> Sequence[Sample]:
        return list(domain.train) + [item.sample() for item in self.memory]

    def after_learn(self, domain: DomainData, module: AugModule) -> None:
        self.domains_seen.append(domain.name)
        share = self.budget // len(self.domains_seen)
        kept = []
        for name in self.domains_seen[:-1]:
            used = 0
            for item in (m for m in self.memory if m.domain == name):
                if used + item.bytes <= share:
                    kept.append(item)
                    used += item.bytes
        rng = np.random.default_rng([self.train.seed, len(self.domains_seen)])
        used = 0
        for index in rng.permutation(len(domain.train)):
            item = StoredSample.of(domain.name, domain.train[int(index)])
            if used + item.bytes <= share:
                kept.append(item)
                used += item.bytes
        self.memory = kept

    @property
    def memory_bytes(self) -> int:
        return sum(item.bytes for item in self.memory)

    def storage(self) -> dict:
        out = super().storage()
        out.update(replay=self.memory_bytes, replay_images=len(self.memory), replay_budget=self.budget)
        out["total"] += self.memory_bytes
        return out

    def snapshot(self) -> tuple[dict, dict]:
        tensors, meta = super().snapshot()
        for k, item in enumerate(self.memory):
            tensors[f"memory.{k}.image"] = torch.frombuffer(bytearray(item.image_png), dtype=torch.uint8)
            tensors[f"memory.{k}.mask"] = torch.frombuffer(bytearray(item.mask_png), dtype=torch.uint8)
        items = [{"domain": m.domain, "name": m.name} for m in self.memory]
        return tensors, {**meta, "memory": items, "domains_seen": self.domains_seen, "budget": self.budget}

    def restore(self, tensors: dict, meta: dict) -> None:
        super().restore(tensors, meta)
        if int(meta["budget"]) != self.budget:
            raise SamclError(f"{self.name}: saved state has a budget of {meta['budget']} bytes, not {self.budget}")
        self.domains_seen = list(meta["domains_seen"])
        self.memory = [StoredSample(item["domain"], item["name"], tensors[f"memory.{k}.image"].numpy().tobytes(),
                                    tensors[f"memory.{k}.mask"].numpy().tobytes())
                       for k, item in enumerate(meta["memory"])]


# ---------------------------------------------------------------------------------------------------- joint
class JointStrategy(SequentialStrategy):
    """The upper bound: at every step a fresh AugModule trained on the training data of all domains so far
    (same epochs and batch as every method, so more steps). Keeps every training image."""

    name = "joint"

    def __init__(self, backbone, train: TrainConfig, domains: Sequence[DomainData], rank: int = 10, device=None):
        super().__init__(backbone, train, rank, device)
        self.domains = list(domains)
        self._data_bytes: dict[str, int] = {}

    def _so_far(self, domain: DomainData) -> list[DomainData]:
        names = [d.name for d in self.domains]
        return self.domains[: names.index(domain.name) + 1]

    def training_samples(self, domain: DomainData) -> Sequence[Sample]:
        return [sample for seen in self._so_far(domain) for sample in seen.train]

    def initial(self, domain: DomainData) -> AugModule | None:
        return None

    def storage(self) -> dict:
        out = super().storage()
        data = 0
        for seen in self.domains[: self.steps]:
            if seen.name not in self._data_bytes:
                self._data_bytes[seen.name] = sum(sample_bytes(s) for s in seen.train)
            data += self._data_bytes[seen.name]
        out.update(replay=data, replay_images=sum(len(d.train) for d in self.domains[: self.steps]))
        out["total"] += data
        return out


# ---------------------------------------------------------------------------------------------------- O-LoRA
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
        self.runner = _SingleModule(backbone, rank, device)
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
            tensors.update(_module_tensors(f"lora.{k}", module))
        return tensors, {"loras": len(self.loras), "config": self.config.to_dict()}

    def restore(self, tensors: dict, meta: dict) -> None:
        if AugModuleConfig.from_dict(meta["config"]) != self.config:
            raise SamclError(f"{self.name}: saved state has another LoRA config")
        self.loras = [_module_from(f"lora.{k}", tensors, self.config) for k in range(int(meta["loras"]))]
        self.runner.use(concat_loras(self.loras) if self.loras else None)


def score_fresh_module(backbone, config: AugModuleConfig, fit: Sequence[Sample], val: Sequence[Sample],
                       train: TrainConfig, rank: int = 10, device=None) -> float:
    """Mean IoU on `val` of a fresh module of `config` trained on `fit`, run alone for every image (no selector):
    what the benchmark's learning-rate search scores each rate with."""
    runner = _SingleModule(backbone, rank, device)
    module, _, _ = train_module(backbone, config, fit, runner.samcl.selector_block, train, runner.samcl.device)
    runner.use(module)
    return runner.evaluate(val)["iou"]
