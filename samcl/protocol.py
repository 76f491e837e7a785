"""The continual-learning protocol, and the one interface every continual method implements.

Protocol (SAMCL.md, "Evaluation protocol"): domains are learned in the given order; before any learning and
after each step every domain (learned or not, plus extra domains such as the general and unseen ones) is
evaluated with its fixed test points. From the IoU matrix a[t][i] come AA, FM (both definitions) and FT
(see `samcl.metrics`). Scores are at the original image size, images resized SAM-style (longest side, pad).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Sequence

from tqdm.auto import tqdm

from .data.sample import Sample
from .learner import SAMCL
from .metrics import continual_metrics
from .selector import SelectorConfig
from .trainer import TrainConfig

METRICS = ("iou", "f1", "mae")


@dataclass
class DomainData:
    name: str
    train: Sequence[Sample]
    test: Sequence[Sample]


class Strategy(ABC):
    """A continual method: learns domains one at a time, segments test images, reports its storage."""

    name: str = "strategy"

    @abstractmethod
    def learn(self, domain: DomainData) -> dict:
        """Learn one more domain (only its training data is available now). Returns stats."""

    @abstractmethod
    def evaluate(self, domain: DomainData) -> dict:
        """Scores on `domain.test`: iou, f1, mae (and selector_accuracy where a selector exists)."""

    @abstractmethod
    def storage(self) -> dict:
        """Bytes kept beyond the frozen base: at least "total"; components such as modules/selector/buffer/replay."""


class SamclStrategy(Strategy):
    """SAMCL itself: one AugModule per domain + the Module Selector (or oracle selection for the ablation)."""

    name = "samcl"

    def __init__(self, backbone, train: TrainConfig, selector: SelectorConfig = SelectorConfig(),
                 rank: int = 10, oracle: bool = False, base_domain: DomainData | None = None, device=None,
                 store=None):
        self.samcl = SAMCL.create(backbone, store, rank=rank, selector=selector, device=device)
        self.train = train
        self.oracle = oracle
        if oracle:
            self.name = "samcl-oracle"
        if base_domain is not None:  # the reference learns a general domain as "base" (SAM without a module)
            self.samcl.learn(base_domain.name, base_domain.train, train, base=True)

    def learn(self, domain: DomainData) -> dict:
        return self.samcl.learn(domain.name, domain.train, self.train)

    def evaluate(self, domain: DomainData) -> dict:
        learned = domain.name in self.samcl.domains
        force = domain.name if self.oracle and learned else ("base" if self.oracle else None)
        return self.samcl.evaluate(domain.test, domain=domain.name, force=force)

    def storage(self) -> dict:
        return self.samcl.storage()


@dataclass
class ProtocolResult:
    """rows[s][domain] = scores after step s (s = 0: before any learning; s = t + 1: after learning domain t)."""

    method: str
    order: list[str]
    extra: list[str]
    rows: list[dict[str, dict]] = field(default_factory=list)
    learn_stats: list[dict] = field(default_factory=list)
    storage: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)

    def matrix(self, metric: str = "iou") -> list[list[float]]:
        """a[t][i]: `metric` on learned domain i after learning step t (T x T)."""
        return [[self.rows[t + 1][name][metric] for name in self.order] for t in range(len(self.order))]

    def summary(self) -> dict:
        out = {metric: continual_metrics(self.matrix(metric)) for metric in METRICS}
        final = self.rows[-1]
        out["final"] = {name: {k: v for k, v in final[name].items() if k != "chosen"} for name in self.order + self.extra}
        out["zero_shot"] = {name: self.rows[0][name]["iou"] for name in self.order + self.extra}
        accuracies = [final[n]["selector_accuracy"] for n in self.order if "selector_accuracy" in final[n]]
        if accuracies:
            out["selector_accuracy"] = sum(accuracies) / len(accuracies)
        return out

    def to_dict(self) -> dict:
        return {"method": self.method, "order": self.order, "extra": self.extra, "rows": self.rows,
                "matrix_iou": self.matrix("iou"), "summary": self.summary(), "learn": self.learn_stats,
                "storage": self.storage, "seconds": self.seconds}


def run_protocol(strategy: Strategy, domains: Sequence[DomainData], extra: Sequence[DomainData] = (),
                 progress: bool = True) -> ProtocolResult:
    """Learn `domains` in order; evaluate all of them (and `extra`) before learning and after every step."""
    result = ProtocolResult(strategy.name, [d.name for d in domains], [d.name for d in extra])
    everything = list(domains) + list(extra)
    start = time.perf_counter()
    eval_seconds = 0.0

    def evaluate_all(label: str) -> None:
        nonlocal eval_seconds
        t0 = time.perf_counter()
        row = {}
        for domain in tqdm(everything, desc=f"{strategy.name} eval {label}", disable=not progress, leave=False):
            row[domain.name] = strategy.evaluate(domain)
        result.rows.append(row)
        eval_seconds += time.perf_counter() - t0

    evaluate_all("zero-shot")
    learn_seconds = 0.0
    for domain in tqdm(domains, desc=f"{strategy.name} domains", disable=not progress):
        t0 = time.perf_counter()
        stats = strategy.learn(domain)
        learn_seconds += time.perf_counter() - t0
        result.learn_stats.append({"domain": domain.name, "seconds": time.perf_counter() - t0,
                                   **{k: v for k, v in (stats or {}).items() if k in ("stats", "bytes", "kind")}})
        evaluate_all(f"after {domain.name}")
    result.storage = strategy.storage()
    result.seconds = {"learn": learn_seconds, "eval": eval_seconds, "total": time.perf_counter() - start}
    return result
