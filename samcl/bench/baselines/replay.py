"""Sequential fine-tuning on new data plus replayed images within a byte budget, and joint training on all
domains so far (the upper bound for one module)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ... import SamclError, TrainConfig
from ...data import Sample
from ...io import encode_image
from ...method import AugModule
from ..protocol import DomainData
from .single import SequentialStrategy, sample_bytes


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
        return cls(domain, sample.name, encode_image(sample.image), encode_image(sample.mask))

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
