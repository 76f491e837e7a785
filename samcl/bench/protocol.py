"""The continual-learning protocol, and the one interface every continual method implements.

Protocol (SAMCL.md, "Evaluation protocol"): domains are learned in the given order; before any learning and
after each step every domain (learned or not, plus extra domains such as the general and unseen ones) is
evaluated with its fixed test points. From the IoU matrix a[t][i] come AA, FM (both definitions) and FT
(see `samcl.metrics`). Scores are at the original image size, images resized SAM-style (longest side, pad).
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from .. import SAMCL, SamclError, SelectorConfig, TrainConfig
from ..data import Sample
from ..io import atomic_write_json, bar
from ..metrics import continual_metrics
from ..store import BASE_MODEL, ModuleStore, read_tensors, write_tensors

METRICS = ("iou", "f1", "mae")
#: Prefix tokens of test images kept across the protocol's evaluations (the frozen prefix never changes).
EVAL_PREFIX_CACHE_BYTES = 256 << 20


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

    # ------------------------------------------------------------------ resuming (see `run_protocol`)
    def snapshot(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Everything later steps depend on, as tensors (for safetensors) and JSON-able metadata (`restore` undoes)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Back to the state `state()` returned (on a strategy built with the same arguments)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be restored")

    def save_state(self, folder: Path) -> None:
        """Write `snapshot()` to `folder` through the store's safetensors path (state.safetensors, then
        state.json; each written atomically)."""
        tensors, meta = self.snapshot()
        write_tensors(Path(folder) / STATE_TENSORS, tensors, kind="strategy-state")
        atomic_write_json(Path(folder) / STATE_META, {"strategy": type(self).__name__, "meta": meta})

    def load_state(self, folder: Path) -> None:
        folder = Path(folder)
        try:
            raw = json.loads((folder / STATE_META).read_text())
        except (OSError, ValueError) as exc:
            raise SamclError(f"{folder}: unreadable strategy state ({exc})") from None
        tensors = read_tensors(folder / STATE_TENSORS)
        if raw.get("strategy") != type(self).__name__:
            raise SamclError(f"{folder}: state of {raw.get('strategy')}, not {type(self).__name__}")
        self.restore(tensors, raw["meta"])


STATE_TENSORS = "state.safetensors"
STATE_META = "state.json"


class SamclStrategy(Strategy):
    """SAMCL itself: one AugModule per domain + the Module Selector (or oracle selection for the ablation).

    variant: AugModuleConfig fields for the ablations, e.g. {"shared_down": False} (plain LoRA: one A per
    block) or {"prompt_augmentation": False} (no heat features)."""

    name = "samcl"

    def __init__(self, backbone, train: TrainConfig, selector: SelectorConfig = SelectorConfig(),
                 rank: int = 10, oracle: bool = False, base_domain: DomainData | None = None, device=None,
                 store=None, variant: dict | None = None):
        self.samcl = SAMCL.create(backbone, store, rank=rank, selector=selector, device=device)
        self.samcl.cache_prefixes(EVAL_PREFIX_CACHE_BYTES, evict="keep")
        if variant:  # before anything is learned: every module of the set has this config
            self.samcl.configure_modules(**variant)
        self.backbone, self.device = backbone, device
        self.train = train
        self.oracle = oracle
        self.base_name = base_domain.name if base_domain is not None else None
        if oracle:
            self.name = "samcl-oracle"
        if base_domain is not None:  # the reference learns a general domain as "base" (SAM without a module)
            self.samcl.learn(base_domain.name, base_domain.train, train, without_module=True)

    def learn(self, domain: DomainData) -> dict:
        return self.samcl.learn(domain.name, domain.train, self.train)

    def evaluate(self, domain: DomainData) -> dict:
        """Selector accuracy counts the domain learned without a module as right when "base" is chosen; domains never
        learned (unseen) have none."""
        learned = domain.name in self.samcl.domains
        truth = BASE_MODEL if domain.name == self.base_name else (domain.name if learned else None)
        if self.oracle:
            return self.samcl.evaluate(domain.test, truth=domain.name, force=truth or BASE_MODEL)
        return self.samcl.evaluate(domain.test, truth=truth)

    def storage(self) -> dict:
        return self.samcl.storage()

    def save_state(self, folder: Path) -> None:
        """The module set as a store (`samcl.store.files`: manifest + safetensors) in `folder`/store."""
        store = ModuleStore(Path(folder) / "store")
        with store.lock():
            store.save(self.samcl.module_set, written=set(self.samcl.domains))

    def load_state(self, folder: Path) -> None:
        self.samcl = SAMCL.open(Path(folder) / "store", base=self.backbone, device=self.device)
        self.samcl.keep_in_memory()  # `save_state` writes the next snapshot
        self.samcl.cache_prefixes(EVAL_PREFIX_CACHE_BYTES, evict="keep")


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
        for name in self.order + self.extra:  # the share that ran on the base (open set, the domain without a module)
            chosen = final[name].get("chosen")
            if chosen and "selector_accuracy" in final[name] or chosen and name in self.extra:
                out["final"][name]["to_base"] = chosen.get(BASE_MODEL, 0) / max(sum(chosen.values()), 1)
        out["zero_shot"] = {name: self.rows[0][name]["iou"] for name in self.order + self.extra}
        accuracies = [final[n]["selector_accuracy"] for n in self.order if "selector_accuracy" in final[n]]
        if accuracies:
            out["selector_accuracy"] = sum(accuracies) / len(accuracies)
        return out

    def to_dict(self) -> dict:
        return {"method": self.method, "order": self.order, "extra": self.extra, "rows": self.rows,
                "matrix_iou": self.matrix("iou"), "summary": self.summary(), "learn": self.learn_stats,
                "storage": self.storage, "seconds": self.seconds}

    @property
    def steps_done(self) -> int:
        """Learning steps finished and evaluated (-1: not even the zero-shot evaluation)."""
        return len(self.rows) - 1

    def raw(self) -> dict:
        """The fields as they are (also for an unfinished run), for `from_raw`."""
        return {"method": self.method, "order": self.order, "extra": self.extra, "rows": self.rows,
                "learn_stats": self.learn_stats, "storage": self.storage, "seconds": self.seconds}

    @classmethod
    def from_raw(cls, data: dict) -> "ProtocolResult":
        return cls(**data)


TIMERS = ("learn", "eval", "learn_cpu", "eval_cpu")


def run_protocol(strategy: Strategy, domains: Sequence[DomainData], extra: Sequence[DomainData] = (),
                 progress: bool = True, resume: ProtocolResult | None = None,
                 on_step: Callable[[ProtocolResult], None] | None = None) -> ProtocolResult:
    """Learn `domains` in order; evaluate all of them (and `extra`) before learning and after every step.

    resume: the result of an interrupted run whose strategy state was restored to its last finished step; the
    run goes on from there. on_step(result) is called after the zero-shot evaluation and after each step's
    evaluation (to persist the strategy and the result). Seconds are wall and CPU (this process) seconds,
    summed over interrupted runs."""
    result = resume or ProtocolResult(strategy.name, [d.name for d in domains], [d.name for d in extra])
    if result.order != [d.name for d in domains] or result.extra != [d.name for d in extra]:
        raise ValueError("the result to resume was made on other domains")
    for key in TIMERS:
        result.seconds.setdefault(key, 0.0)
    everything = list(domains) + list(extra)

    def evaluate_all(label: str) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        row = {}
        for domain in bar(everything, desc=f"{strategy.name} eval {label}", progress=progress, leave=False):
            row[domain.name] = strategy.evaluate(domain)
        result.rows.append(row)
        result.seconds["eval"] += time.perf_counter() - t0
        result.seconds["eval_cpu"] += time.process_time() - c0
        if on_step is not None:
            on_step(result)

    if result.steps_done < 0:
        evaluate_all("zero-shot")
    remaining = list(domains)[result.steps_done:]
    for domain in bar(remaining, desc=f"{strategy.name} domains", progress=progress):
        t0, c0 = time.perf_counter(), time.process_time()
        stats = strategy.learn(domain)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        result.seconds["learn"] += seconds
        result.seconds["learn_cpu"] += cpu
        kept = {k: v for k, v in (stats or {}).items() if k in ("bytes", "kind")}
        if isinstance((stats or {}).get("stats"), dict):  # scalars only (not per-step traces)
            kept["stats"] = {k: v for k, v in stats["stats"].items() if isinstance(v, (int, float, str))}
        result.learn_stats.append({"domain": domain.name, "seconds": seconds, "cpu_seconds": cpu, **kept})
        result.storage = strategy.storage()
        evaluate_all(f"after {domain.name}")
    result.storage = strategy.storage()
    result.seconds["total"] = result.seconds["learn"] + result.seconds["eval"]
    return result
