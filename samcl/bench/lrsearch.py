"""The learning-rate search: each method family's module is trained on the first 75% of the first domain's
training split (seed 0) with each rate of the grid and scored (IoU) on the remaining 25%; the best rate (ties:
the smaller) is every method of that family's rate. Choices are cached in STATE/learning_rates.json by
configuration."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .. import SamclError, TrainConfig, __version__
from ..io import atomic_write_json
from .baselines import score_fresh_module
from .executor import Executor, WorkerContext
from .jobs import as_json, backbone_for, read_json
from .methods import BENCHMARK_PROMPTS, BenchmarkSize, family_config
from .suite import SuiteSpec


@dataclass(frozen=True)
class GridJob:
    family: str
    lr: float
    size: BenchmarkSize
    suite: SuiteSpec
    base: str | None
    device: str | None = None


def run_grid_job(job: GridJob, context: WorkerContext) -> float:
    """IoU on the held-out part of the first domain's training split (seed 0) after training the family's module
    with `job.lr` on the rest."""
    backbone = backbone_for(job.base)
    suite = job.suite.build(job.size.train, job.size.test, 0)
    fit, val = split_for_validation(suite.domains[0].train, job.size.val_fraction)
    config = family_config(backbone, job.family, job.size.rank)
    train = TrainConfig(epochs=job.size.epochs, batch_size=job.size.batch_size, lr=job.lr, seed=0, progress=False,
                        prompts=BENCHMARK_PROMPTS)
    score = score_fresh_module(backbone, config, fit, val, train, job.size.rank, job.device)
    context.step_done(f"lr {job.family} {job.lr:g}", counts=False)
    return score


def split_for_validation(samples, fraction: float) -> tuple[list, list]:
    """The first (1 - fraction) of the samples to fit, the rest (at least one) to validate."""
    count = len(samples)
    held = min(max(1, round(count * fraction)), count - 1)
    if count < 2:
        raise SamclError("the first domain needs at least 2 training images to choose learning rates")
    return [samples[i] for i in range(count - held)], [samples[i] for i in range(count - held, count)]


def choose_learning_rates(families: list[str], size: BenchmarkSize, suite: SuiteSpec, base: str | None,
                          identity: str, state: Path, executor: Executor, device=None) -> dict[str, dict]:
    """{family: {"grid": {lr: val IoU}, "lr": chosen}}; cached in STATE/learning_rates.json by configuration."""
    cache_path = state / "learning_rates.json"
    key = as_json({"size": asdict(size), "suite": suite.describe(), "base_weights": identity,
                   "samcl_version": __version__})
    cache = read_json(cache_path) or {}
    choices = cache.get("choices", {}) if cache.get("key") == key else {}
    todo = [GridJob(f, lr, size, suite, base, device) for f in families if f not in choices for lr in size.lr_grid]
    executor.bar.update(len(families) * len(size.lr_grid) - len(todo))  # cached trials count as done
    scores = executor.map(run_grid_job, todo) if todo else []
    for job, score in zip(todo, scores):
        choices.setdefault(job.family, {"grid": {}})["grid"][repr(job.lr)] = score
    for family in families:
        grid = choices[family]["grid"]
        choices[family]["lr"] = float(max(grid, key=lambda lr: (grid[lr], -float(lr))))  # ties: the smaller rate
    atomic_write_json(cache_path, {"key": key, "choices": choices})
    return {f: choices[f] for f in families}
