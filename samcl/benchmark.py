"""`samcl benchmark`: the continual protocol (`samcl.protocol`) for every method (`samcl.baselines`), several
seeds, one budget; results.json, results.md and plots.

    samcl benchmark --out bench                          # embedded suite, shipped tiny SAM, all methods, seeds 0,1,2
    samcl benchmark --quick --out bench-quick            # a few minutes on 2 CPU cores (CI)
    samcl benchmark --base sam_vit_b_01ec64.pth --domain polyps=data/kvasir --domain camo=data/camo --out bench

Protocol. The target domains are learned in order; every method is evaluated on every domain (and on the extra
domains: the base model's own "general" domain and unseen ones) before learning and after each step, with the
fixed test points, SAM-style resize (longest side + pad) and scores at the original image size. SAMCL (and its
ablations) learn the general domain first as the "base" class (SAM without a module), as the reference does with
COCO; no other method learns it.

Budget. Every method trains with the same loop, epochs and batch size (`samcl.trainer`); the learning rate is
chosen per method family on the first domain only: the family's module is trained on the first 75% of that
domain's training split of seed 0 with each rate of the grid and scored (IoU) on the remaining 25%. Methods whose
first step trains the same module share the choice (the first step of EWC, LwF, replay, joint and SAMCL is plain
AugModule training). Choices are cached in the state folder.

Runs are single-threaded (`torch.set_num_threads(1)`), seeded and deterministic, so `--jobs` (parallel
(method, seed) runs) changes nothing but the wall time. Resumable: after every step a run's strategy state
(safetensors + JSON; SAMCL as a module store) and its results so far are written atomically to
STATE/<method>/seed-<s>/; a rerun of the same command skips what is done and continues each unfinished run
from its last finished step.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__
from .io import SamclError, atomic_write_bytes, atomic_write_json
from .protocol import DomainData, ProtocolResult, SamclStrategy, Strategy, run_protocol
from .selector import SelectorConfig, SelectorNet
from .trainer import TrainConfig


# ---------------------------------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class Method:
    description: str
    family: str | None  # module trained in the first step (shares the learning-rate choice); None: no training


METHODS: dict[str, Method] = {
    "zero-shot": Method("the base SAM, never adapted", None),
    "sequential": Method("one AugModule fine-tuned on the domains in turn", "augmodule"),
    "sequential-lora": Method("one LoRA on the attention qkv (as PEFT), fine-tuned in turn", "lora-qkv"),
    "ewc": Method("sequential AugModule + EWC (diagonal Fisher per domain)", "augmodule"),
    "lwf": Method("sequential AugModule + distillation to the previous module (LwF)", "augmodule"),
    "replay": Method("sequential AugModule + image replay, stated byte budget", "augmodule"),
    "replay-matched": Method("image replay with SAMCL's storage in bytes", "augmodule"),
    "o-lora": Method("a new qkv LoRA per domain, orthogonal to the earlier ones, summed", "lora-qkv"),
    "samcl": Method("SAMCL: one AugModule per domain + Module Selector", "augmodule"),
    "samcl-lora": Method("SAMCL ablation: plain LoRA (one A per block) instead of SLoRA", "augmodule-per-block-a"),
    "samcl-noprompt": Method("SAMCL ablation: no prompt augmentation", "augmodule-no-prompt"),
    "samcl-oracle": Method("SAMCL ablation: oracle selection (true domain's module)", "augmodule"),
    "joint": Method("upper bound: a fresh AugModule on all domains so far", "augmodule"),
}

#: AugModuleConfig fields of each family (see `samcl.augmodule`).
FAMILIES: dict[str, dict] = {
    "augmodule": {},
    "lora-qkv": {"shared_down": False, "prompt_augmentation": False, "target": "qkv"},
    "augmodule-per-block-a": {"shared_down": False},
    "augmodule-no-prompt": {"prompt_augmentation": False},
}


def family_config(backbone, family: str, rank: int):
    """The AugModuleConfig a family trains (`lora-qkv` checks that the backbone supports it)."""
    from .baselines import lora_config

    if family == "lora-qkv":
        return lora_config(backbone, rank)
    return replace(backbone.augmodule_config(rank=rank), **FAMILIES[family])


@dataclass(frozen=True)
class BenchmarkSize:
    """train/test: images per domain (embedded suite; real folders use all). buffer: N_e. replay_bytes: the stated
    replay budget. lr_grid: learning rates tried per family."""

    train: int
    test: int
    epochs: int
    batch_size: int
    buffer: int
    replay_bytes: int
    lr_grid: tuple[float, ...] = (3e-3, 1e-2, 3e-2)
    val_fraction: float = 0.25
    rank: int = 10
    selector_epochs: int = 25


#: The default run: about 2,000 CPU-seconds for all methods and 3 seeds (one core-second per CPU-second: under 20
#: minutes with --jobs 2 on 2 free cores). Images average about 40 KB as PNG (image + mask), so the stated replay
#: budget holds about 50 images (about 10 per domain at the end, a fifth of a domain's training set).
FULL = BenchmarkSize(train=48, test=32, epochs=8, batch_size=4, buffer=48, replay_bytes=2 * 2**20)
QUICK = BenchmarkSize(train=12, test=6, epochs=3, batch_size=4, buffer=12, replay_bytes=2**20)


# ---------------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class SuiteSpec:
    """How to build the domains (each worker process builds its own): the embedded synthetic suite, or folders.
    domains: (name, folder) in learning order; extra: evaluated, never learned; general: the base model's own
    domain (SAMCL's base class, evaluated for every method)."""

    embedded: bool = True
    domains: tuple[tuple[str, str], ...] = ()
    extra: tuple[tuple[str, str], ...] = ()
    general: tuple[str, str] | None = None

    def build(self, size: BenchmarkSize, seed: int) -> "Suite":
        """The domains for `seed` (the embedded suite's images depend on the seed; generated once per process)."""
        key = (self, size.train, size.test, seed)
        if key not in _SUITES:
            _SUITES.clear()  # one suite at a time: a worker runs one seed's jobs after another
            _SUITES[key] = self._build(size, seed)
        return _SUITES[key]

    def _build(self, size: BenchmarkSize, seed: int) -> "Suite":
        if self.embedded:
            from .data import synthetic

            make = lambda name: DomainData(name, synthetic.generate(name, size.train, seed, "train"),  # noqa: E731
                                           synthetic.generate(name, size.test, seed, "test"))
            general = make(synthetic.GENERAL)
            return Suite([make(n) for n in synthetic.TARGET_DOMAINS], [make(n) for n in synthetic.UNSEEN_DOMAINS],
                         general)
        from .data.folders import FolderDataset, resolve_split

        make = lambda name, path: DomainData(  # noqa: E731
            name, FolderDataset(resolve_split(path, "train"), seed=seed),
            FolderDataset(resolve_split(path, "test"), seed=seed))
        return Suite([make(*d) for d in self.domains], [make(*d) for d in self.extra],
                     make(*self.general) if self.general else None)

    def describe(self) -> dict:
        if self.embedded:
            from .data import synthetic

            return {"suite": "embedded synthetic (samcl.data.synthetic)", "domains": list(synthetic.TARGET_DOMAINS),
                    "extra": list(synthetic.UNSEEN_DOMAINS), "general": synthetic.GENERAL}
        return {"suite": "folders", "domains": [list(d) for d in self.domains], "extra": [list(d) for d in self.extra],
                "general": list(self.general) if self.general else None}


_SUITES: dict = {}


@dataclass
class Suite:
    domains: list[DomainData]
    unseen: list[DomainData]
    general: DomainData | None

    @property
    def extra(self) -> list[DomainData]:
        return ([self.general] if self.general is not None else []) + self.unseen


# ---------------------------------------------------------------------------------------------------- strategies
def make_strategy(method: str, backbone, lr: float | None, size: BenchmarkSize, suite: Suite, seed: int,
                  replay_matched_bytes: int, device=None) -> Strategy:
    from . import baselines as b

    train = TrainConfig(epochs=size.epochs, batch_size=size.batch_size, lr=lr or 0.0, seed=seed, progress=False)
    selector = SelectorConfig(samples_per_domain=size.buffer, epochs=size.selector_epochs)
    rank = size.rank
    samcl = lambda **kw: SamclStrategy(backbone, train, selector, rank=rank, base_domain=suite.general,  # noqa: E731
                                       device=device, **kw)
    factories: dict[str, Callable[[], Strategy]] = {
        "zero-shot": lambda: b.ZeroShotStrategy(backbone, device),
        "sequential": lambda: b.SequentialStrategy(backbone, train, rank, device),
        "sequential-lora": lambda: b.sequential_lora(backbone, train, rank, device),
        "ewc": lambda: b.EwcStrategy(backbone, train, rank, device),
        "lwf": lambda: b.LwfStrategy(backbone, train, rank, device),
        "replay": lambda: b.ReplayStrategy(backbone, train, size.replay_bytes, rank, device),
        "replay-matched": lambda: b.ReplayStrategy(backbone, train, replay_matched_bytes, rank, device),
        "o-lora": lambda: b.OLoraStrategy(backbone, train, rank, device),
        "samcl": lambda: samcl(),
        "samcl-lora": lambda: samcl(variant=FAMILIES["augmodule-per-block-a"]),
        "samcl-noprompt": lambda: samcl(variant=FAMILIES["augmodule-no-prompt"]),
        "samcl-oracle": lambda: samcl(oracle=True),
        "joint": lambda: b.JointStrategy(backbone, train, suite.domains, rank, device),
    }
    strategy = factories[method]()
    strategy.name = method
    return strategy


def samcl_storage_bytes(backbone, size: BenchmarkSize, train_sizes: list[int], base_size: int | None) -> int:
    """SAMCL's bytes after learning domains of `train_sizes` images (and a base class of `base_size`): modules,
    selector and buffer, as `SAMCL.storage` counts them (float32)."""
    aug = backbone.augmodule_config(rank=size.rank)
    classes = len(train_sizes) + (base_size is not None)
    net = SelectorNet(aug.dim, classes)
    selector = sum(t.numel() * (4 if t.is_floating_point() else t.element_size()) for t in net.state_dict().values())
    counts = [min(size.buffer, n) for n in train_sizes + ([base_size] if base_size is not None else [])]
    return aug.num_parameters * 4 * len(train_sizes) + selector + sum(counts) * (aug.dim * 4 + 8)


# ---------------------------------------------------------------------------------------------------- workers
_BACKBONES: dict[str, object] = {}
_WORKER: dict = {}


class BenchmarkStopped(Exception):
    """--max-steps reached: every finished step is saved; rerun to continue."""


def _backbone(base: str | None):
    from .backbone import load_backbone

    key = str(base)
    if key not in _BACKBONES:
        _BACKBONES[key] = load_backbone(base)
    return _BACKBONES[key]


def _init_worker(events, counter, max_steps) -> None:
    """One thread per run and deterministic kernels: a run's numbers do not depend on --jobs or on other runs."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, should a GPU be used
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    _WORKER.update(events=events, counter=counter, max_steps=max_steps)


def _init_pool_worker(events, counter, max_steps) -> None:
    """A worker process leaves Ctrl-C to the parent, which stops every worker at once (`_Executor.close`)."""
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tqdm.set_lock(threading.RLock())  # workers draw no bars; tqdm's default inter-process lock would outlive a kill
    _init_worker(events, counter, max_steps)


def _step_done(label: str, counts: bool = True) -> None:
    """Report one finished unit of work (to the progress bar); stop when --max-steps protocol steps (`counts`)
    have been done in this invocation."""
    events, counter, max_steps = _WORKER.get("events"), _WORKER.get("counter"), _WORKER.get("max_steps")
    if events is not None:
        events.put(label)
    elif _WORKER.get("bar") is not None:
        _WORKER["bar"].update()
        _WORKER["bar"].set_postfix_str(label, refresh=False)
    if counter is None or not counts:
        return
    with counter.get_lock():
        counter.value += 1
        reached = max_steps is not None and counter.value >= max_steps
    if reached:
        raise BenchmarkStopped(label)


@dataclass(frozen=True)
class Job:
    """One (method, seed) protocol run."""

    method: str
    seed: int
    lr: float | None
    size: BenchmarkSize
    suite: SuiteSpec
    base: str | None
    state: str
    replay_matched_bytes: int
    identity: str  # sha256 of the base weights
    device: str | None = None

    @property
    def folder(self) -> Path:
        return Path(self.state) / self.method / f"seed-{self.seed}"

    def fingerprint(self) -> dict:
        from . import baselines as b

        return _as_json({"method": self.method, "seed": self.seed, "lr": self.lr, "size": asdict(self.size),
                "suite": self.suite.describe(), "base_weights": self.identity,
                "replay_matched_bytes": self.replay_matched_bytes, "samcl_version": __version__,
                "strengths": {"ewc": b.EWC_STRENGTH, "lwf": b.LWF_STRENGTH, "lwf_temperature": b.LWF_TEMPERATURE,
                              "o-lora": b.OLORA_STRENGTH}})


PROGRESS = "progress.json"


def _as_json(value):
    """`value` as it reads back from JSON (tuples become lists), so fingerprints compare equal after a restart."""
    return json.loads(json.dumps(value))


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SamclError(f"{path}: unreadable ({exc}); delete it to start that run again") from None


def _units_done(job: Job) -> int:
    """Evaluations (zero-shot + steps) a job's saved progress already holds (0 if none or from another config)."""
    try:
        progress = _read_json(job.folder / PROGRESS)
    except SamclError:
        return 0
    if progress is None or progress.get("fingerprint") != job.fingerprint():
        return 0
    return len(progress["result"]["rows"])


def run_job(job: Job) -> dict:
    """Run (or resume, or just read back) one (method, seed) protocol; returns the result's raw fields."""
    folder, fingerprint = job.folder, job.fingerprint()
    progress = _read_json(folder / PROGRESS)
    if progress is not None and progress.get("fingerprint") != fingerprint:
        raise SamclError(f"{folder / PROGRESS}: made with another configuration (method, seed, sizes, learning rate "
                         "or base); use another --state folder or delete this one")
    if progress is not None and progress.get("done"):
        return {**progress["result"], "code": progress.get("code")}
    backbone = _backbone(job.base)
    torch.manual_seed(job.seed)
    suite = job.suite.build(job.size, job.seed)
    strategy = make_strategy(job.method, backbone, job.lr, job.size, suite, job.seed, job.replay_matched_bytes,
                             job.device)
    resume = None
    if progress is not None:
        resume = ProtocolResult.from_raw(progress["result"])
        if progress.get("snapshot"):
            strategy.load_state(folder / progress["snapshot"])
    snapshot = progress.get("snapshot") if progress else None

    def on_step(result: ProtocolResult) -> None:
        nonlocal snapshot
        step = result.steps_done
        if step > 0:
            snapshot = f"step-{step}"
            if (folder / snapshot).exists():  # a crash after writing it, before progress.json named it
                shutil.rmtree(folder / snapshot)
            strategy.save_state(folder / snapshot)
        atomic_write_json(folder / PROGRESS, {"fingerprint": fingerprint, "result": result.raw(),
                                              "snapshot": snapshot, "done": False, "code": code_digest()})
        for old in folder.glob("step-*"):
            if old.name != snapshot and old.is_dir():
                shutil.rmtree(old)
        _step_done(f"{job.method} seed {job.seed} step {step}")

    result = run_protocol(strategy, suite.domains, suite.extra, progress=False, resume=resume, on_step=on_step)
    atomic_write_json(folder / PROGRESS, {"fingerprint": fingerprint, "result": result.raw(), "snapshot": snapshot,
                                          "done": True, "code": code_digest()})
    return {**result.raw(), "code": code_digest()}


def code_digest() -> str:
    """sha256 of the samcl package's Python sources: results reproduce only with the same code (and base weights,
    which the fingerprint holds). Recorded per run, so a run resumed across a code change shows in the report."""
    if "code" not in _WORKER_CODE:
        digest = hashlib.sha256()
        root = Path(__file__).resolve().parent
        for path in sorted(root.rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
        _WORKER_CODE["code"] = digest.hexdigest()
    return _WORKER_CODE["code"]


_WORKER_CODE: dict[str, str] = {}


# ---------------------------------------------------------------------------------------------------- learning rates
@dataclass(frozen=True)
class GridJob:
    family: str
    lr: float
    size: BenchmarkSize
    suite: SuiteSpec
    base: str | None
    device: str | None = None


def run_grid_job(job: GridJob) -> float:
    """IoU on the held-out part of the first domain's training split (seed 0) after training the family's module
    with `job.lr` on the rest."""
    from .baselines import _SingleModule
    from .trainer import train_module

    backbone = _backbone(job.base)
    suite = job.suite.build(job.size, 0)
    first = suite.domains[0]
    fit, val = split_for_validation(first.train, job.size.val_fraction)
    runner = _SingleModule(backbone, job.size.rank, job.device)
    config = family_config(backbone, job.family, job.size.rank)
    train = TrainConfig(epochs=job.size.epochs, batch_size=job.size.batch_size, lr=job.lr, seed=0, progress=False)
    module, _, _ = train_module(backbone, config, fit, runner.samcl.selector_block, train, runner.samcl.device)
    runner.use(module)
    score = runner.evaluate(val)["iou"]
    _step_done(f"lr {job.family} {job.lr:g}", counts=False)
    return score


def split_for_validation(samples, fraction: float) -> tuple[list, list]:
    """The first (1 - fraction) of the samples to fit, the rest (at least one) to validate."""
    count = len(samples)
    held = min(max(1, round(count * fraction)), count - 1)
    if count < 2:
        raise SamclError("the first domain needs at least 2 training images to choose learning rates")
    return [samples[i] for i in range(count - held)], [samples[i] for i in range(count - held, count)]


# ---------------------------------------------------------------------------------------------------- running
class _Executor:
    """Runs jobs in this process (jobs = 1) or in `jobs` single-threaded worker processes, with one progress bar
    over units (learning-rate trials, protocol steps). On an error or Ctrl-C the workers are stopped at once:
    every finished step is already saved, and a killed step is redone on resume."""

    def __init__(self, jobs: int, total: int, progress: bool, max_steps: int | None):
        self.jobs = jobs
        self.bar = tqdm(total=total, desc="benchmark", unit="step", disable=not progress)
        ctx = multiprocessing.get_context("spawn")
        self.counter = ctx.Value("l", 0)
        self.events = ctx.Queue() if jobs > 1 else None
        self.max_steps = max_steps
        self.pool = None
        if jobs > 1:
            self.pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_pool_worker,
                                            initargs=(self.events, self.counter, max_steps))

    def map(self, fn, items: list) -> list:
        if self.pool is None:
            threads = torch.get_num_threads()
            _init_worker(None, self.counter, self.max_steps)
            _WORKER["bar"] = self.bar
            try:
                return [fn(item) for item in items]
            finally:
                torch.set_num_threads(threads)
                _WORKER.clear()
        futures = [self.pool.submit(fn, item) for item in items]
        while not all(f.done() for f in futures):
            self._drain(timeout=0.5)
            failed = next((f for f in futures if f.done() and f.exception() is not None), None)
            if failed is not None:  # an error (or --max-steps) in one run stops the others now (see close)
                failed.result()
        self._drain()
        return [f.result() for f in futures]

    def _drain(self, timeout: float | None = None) -> None:
        import queue

        try:
            while True:
                label = self.events.get(timeout=timeout) if timeout else self.events.get_nowait()
                self.bar.update()
                self.bar.set_postfix_str(label, refresh=False)
                timeout = None
        except queue.Empty:
            pass

    def close(self, stop: bool = False) -> None:
        """stop: terminate the workers now (after an error or Ctrl-C) instead of letting them finish."""
        self.bar.close()
        if self.pool is None:
            return
        if not stop:
            self.pool.shutdown(wait=True)
        elif hasattr(self.pool, "terminate_workers"):  # Python 3.14+
            self.pool.terminate_workers()
        else:  # no public way before 3.14: the executor's own process table
            for worker in list((getattr(self.pool, "_processes", None) or {}).values()):
                worker.terminate()
            self.pool.shutdown(wait=True, cancel_futures=True)  # the pool sees its workers gone and cleans up


def choose_learning_rates(families: list[str], size: BenchmarkSize, suite: SuiteSpec, base: str | None,
                          identity: str, state: Path, executor: _Executor, device=None) -> dict[str, dict]:
    """{family: {"grid": {lr: val IoU}, "lr": chosen}}; cached in STATE/learning_rates.json by configuration."""
    cache_path = state / "learning_rates.json"
    key = _as_json({"size": asdict(size), "suite": suite.describe(), "base_weights": identity,
                    "samcl_version": __version__})
    cache = _read_json(cache_path) or {}
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


@dataclass
class BenchmarkConfig:
    out: Path
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    quick: bool = False
    base: str | None = None
    suite: SuiteSpec = SuiteSpec()
    jobs: int = 1
    state: Path | None = None
    max_steps: int | None = None
    progress: bool = True
    device: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    command: str = ""
    sizes: BenchmarkSize | None = None  # instead of FULL / QUICK (tests)

    @property
    def size(self) -> BenchmarkSize:
        size = self.sizes or (QUICK if self.quick else FULL)
        if self.epochs is not None:
            size = replace(size, epochs=self.epochs)
        if self.batch_size is not None:
            size = replace(size, batch_size=self.batch_size)
        return size

    @property
    def state_dir(self) -> Path:
        return self.state if self.state is not None else self.out / "state"


def check_methods(methods: list[str]) -> list[str]:
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise SamclError(f"unknown method {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        raise SamclError("a method is listed twice")
    return methods


def run_benchmark(config: BenchmarkConfig) -> dict:
    """Run (or resume) the whole benchmark and write results.json, results.md and the plots to `config.out`.
    Raises BenchmarkStopped when --max-steps stops it early (everything finished so far is saved)."""
    from .backbone import resolve_base

    check_methods(config.methods)
    size, state = config.size, config.state_dir
    probe = config.suite.build(size, config.seeds[0])  # validates the folders before any work
    backbone = _backbone(config.base)
    identity = backbone.identity()["weights_sha256"]
    if len(probe.domains) < 2:
        raise SamclError("the benchmark needs at least two domains to learn")
    names = [d.name for d in probe.domains + probe.extra]
    if len(set(names)) != len(names):
        raise SamclError(f"domain names must be distinct: {', '.join(names)}")
    matched = samcl_storage_bytes(backbone, size, [len(d.train) for d in probe.domains],
                                  len(probe.general.train) if probe.general is not None else None)
    matched -= backbone.augmodule_config(rank=size.rank).num_parameters * 4  # replay keeps one module too
    families = sorted({METHODS[m].family for m in config.methods} - {None})
    steps = len(probe.domains) + 1
    total = len(families) * len(size.lr_grid) + len(config.methods) * len(config.seeds) * steps
    start = time.perf_counter()
    executor = _Executor(config.jobs, total, config.progress, config.max_steps)
    try:
        rates = choose_learning_rates(families, size, config.suite, config.base, identity, state, executor,
                                      config.device)
        jobs = [Job(method, seed, rates[METHODS[method].family]["lr"] if METHODS[method].family else None, size,
                    config.suite, config.base, str(state), matched, identity, config.device)
                for seed in config.seeds for method in config.methods]
        executor.bar.update(sum(_units_done(job) for job in jobs))  # a resumed run's bar starts where it stopped
        raws = executor.map(run_job, jobs)
    except BaseException:
        executor.close(stop=True)
        raise
    executor.close()
    codes = sorted({raw.pop("code", None) or "unknown" for raw in raws})
    results = {job: ProtocolResult.from_raw(raw) for job, raw in zip(jobs, raws)}
    report = build_report(config, size, rates, results, matched, resolve_base(config.base))
    report["config"]["code_sha256"] = codes[0] if len(codes) == 1 else codes
    if len(codes) > 1:
        report["warnings"] = ["runs were made with different samcl code (resumed across a code change): "
                              "delete the state folder and run again for a consistent table"]
    report["seconds"] = time.perf_counter() - start
    write_outputs(config.out, report)
    return report


# ---------------------------------------------------------------------------------------------------- report
def _mean_std(values: list[float]) -> dict:
    clean = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not clean:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(clean)), "std": float(np.std(clean, ddof=1)) if len(clean) > 1 else 0.0,
            "n": len(clean)}


def _clean(value):
    """NaN -> None, recursively (results.json is strict JSON)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def build_report(config: BenchmarkConfig, size: BenchmarkSize, rates: dict, results: dict, matched: int,
                 base: str) -> dict:
    from . import baselines as b

    methods: dict[str, dict] = {}
    first = next(iter(results.values()))
    learned, extra = first.order, first.extra
    for method in config.methods:
        runs = {job.seed: r for job, r in results.items() if job.method == method}
        seeds = {}
        for seed, result in runs.items():
            summary = result.summary()
            final = summary["final"]
            seeds[str(seed)] = {
                "continual": {metric: summary[metric] for metric in ("iou", "f1", "mae")},
                "final": {name: {k: final[name][k] for k in ("iou", "f1", "mae", "selector_accuracy") if k in final[name]}
                          for name in learned + extra},
                "selector_accuracy": summary.get("selector_accuracy"),
                "matrix_iou": [[row[name]["iou"] for name in learned + extra] for row in result.rows],
                "storage": result.storage,
                "seconds": result.seconds,
                "learn": result.learn_stats,
            }
        agg = {
            "continual": {metric: {key: _mean_std([s["continual"][metric][key] for s in seeds.values()])
                                   for key in ("AA", "FM_reference", "FM_best", "FT")} for metric in ("iou", "f1", "mae")},
            "final": {name: {k: _mean_std([s["final"][name].get(k) for s in seeds.values()])
                             for k in ("iou", "f1", "mae", "selector_accuracy")} for name in learned + extra},
            "final_mean": {k: _mean_std([float(np.mean([s["final"][n][k] for n in learned])) for s in seeds.values()])
                           for k in ("iou", "f1", "mae")},
            "selector_accuracy": _mean_std([s["selector_accuracy"] for s in seeds.values()]),
            "storage": {k: _mean_std([s["storage"].get(k, 0) for s in seeds.values()])
                        for k in ("module_total", "selector", "buffer", "replay", "fisher", "total")},
            "seconds": {k: _mean_std([s["seconds"].get(k) for s in seeds.values()])
                        for k in ("learn", "eval", "learn_cpu", "eval_cpu")},
        }
        family = METHODS[method].family
        methods[method] = {"description": METHODS[method].description, "family": family,
                           "lr": rates[family]["lr"] if family else None, "seeds": seeds, "aggregate": agg}
    report = {
        "command": config.command,
        "config": {
            "suite": config.suite.describe(), "base": base, "size": asdict(size), "methods": config.methods,
            "seeds": config.seeds, "order": learned, "extra": extra,
            "replay_bytes": {"replay": size.replay_bytes, "replay-matched": matched},
            "strengths": {"ewc": b.EWC_STRENGTH, "lwf": b.LWF_STRENGTH, "lwf_temperature": b.LWF_TEMPERATURE,
                          "o-lora": b.OLORA_STRENGTH},
            "resize": "longest side + pad (SAM's convention), scored at the original size",
            "fm_definitions": {"FM_reference": "sum_{i<t} (a[i][i] - a[t][i]) / (t + 1) (the reference code)",
                               "FM_best": "mean_{i<t} (max_{i<=s<t} a[s][i] - a[t][i]) (best score since learned, / t)"},
            "std": "sample standard deviation over seeds (ddof = 1)",
            "threads": "1 per run", "torch": torch.__version__, "samcl": __version__,
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        },
        "learning_rates": rates,
        "methods": methods,
    }
    report["metrics_sha256"] = metrics_digest(report)
    return _clean(report)


def metrics_digest(report: dict) -> str:
    """sha256 over every reproducible number (scores of every step, storage), rounded to 6 decimals: the same
    seeds on the same machine type give the same digest (timings are left out)."""
    def rounded(value):
        if isinstance(value, float):
            return None if math.isnan(value) else round(value, 6)
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in sorted(value.items())}
        if isinstance(value, list):
            return [rounded(v) for v in value]
        return value

    body = {m: {s: {"matrix_iou": d["matrix_iou"], "final": d["final"], "storage": d["storage"]}
                for s, d in data["seeds"].items()} for m, data in report["methods"].items()}
    return hashlib.sha256(json.dumps(rounded(body), sort_keys=True).encode()).hexdigest()


def _pm(stat: dict, scale: float = 100.0, digits: int = 1) -> str:
    """"mean ± std"; the mean alone from a single run (a spread over one seed would read as zero)."""
    if stat is None or stat.get("mean") is None:
        return "–"
    if stat.get("n", 2) < 2:
        return f"{stat['mean'] * scale:.{digits}f}"
    return f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}"


def _bytes(value: float | None) -> str:
    if not value:
        return "0"
    for unit, factor in (("MiB", 2**20), ("KiB", 2**10)):
        if value >= factor:
            return f"{value / factor:.2f} {unit}"
    return f"{value:.0f} B"


def format_markdown(report: dict) -> str:
    cfg, methods = report["config"], report["methods"]
    learned, extra = cfg["order"], cfg["extra"]
    size = cfg["size"]
    samcl_total = methods.get("samcl", {}).get("aggregate", {}).get("storage", {}).get("total", {}).get("mean")
    lines = [
        "# samcl benchmark",
        "",
        f"Suite: {cfg['suite']['suite']}; learned in order: {', '.join(learned)}; also evaluated (never learned by "
        f"any method except SAMCL's base class): {', '.join(extra)}. Base: `{cfg['base']}`.",
        f"Seeds {', '.join(map(str, cfg['seeds']))}; every method: {size['epochs']} epochs, batch {size['batch_size']}, "
        f"rank {size['rank']}"
        + (f", {size['train']} train / {size['test']} test images per domain" if cfg["suite"]["suite"].startswith("embedded") else "")
        + f"; SAMCL buffer N_e = {size['buffer']} per domain. "
        + ("Mean ± std (ddof 1) over seeds." if len(cfg["seeds"]) > 1 else "One seed: no spread shown."),
        f"Resize: {cfg['resize']}. IoU, F1 and MAE in %.",
        "",
        "## Continual metrics (IoU)",
        "",
        "AA: mean IoU over the learned domains after the last step. FM (ref.): the reference code's forgetting, "
        "sum over earlier domains of (score just after learning it - final score) / T. FM (best): mean over earlier "
        "domains of (best score since it was learned - final score). FT: mean IoU on each domain just before it is "
        "learned. "
        "Storage: bytes kept beyond the frozen base (float32 modules, selector and buffer; replayed images as PNG).",
        "",
        "| method | AA | FM (ref.) | FM (best) | FT | final F1 | final MAE | selector acc. | storage | × SAMCL |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, data in methods.items():
        agg = data["aggregate"]
        iou = agg["continual"]["iou"]
        total = agg["storage"]["total"]["mean"]
        ratio = f"{total / samcl_total:.2f}" if samcl_total and total else "–"
        lines.append(f"| {name} | {_pm(iou['AA'])} | {_pm(iou['FM_reference'])} | {_pm(iou['FM_best'])} | "
                     f"{_pm(iou['FT'])} | {_pm(agg['final_mean']['f1'])} | {_pm(agg['final_mean']['mae'], digits=2)} | "
                     f"{_pm(agg['selector_accuracy'])} | {_bytes(total)} | {ratio} |")
    for metric, title, digits in (("iou", "IoU", 1), ("f1", "F1", 1), ("mae", "MAE", 2)):
        lines += ["", f"## Final {title} per domain (after the last step; * = never learned)", "",
                  "| method | " + " | ".join(learned + [f"{n}*" for n in extra]) + " |",
                  "|---|" + "---|" * (len(learned) + len(extra))]
        for name, data in methods.items():
            final = data["aggregate"]["final"]
            lines.append(f"| {name} | " + " | ".join(_pm(final[n][metric], digits=digits) for n in learned + extra) + " |")
    lines += ["", "## Selector accuracy per domain (SAMCL; the general domain counts 'base' as right)", "",
              "| method | " + " | ".join(learned + extra[:1]) + " |", "|---|" + "---|" * (len(learned) + 1)]
    for name, data in methods.items():
        final = data["aggregate"]["final"]
        if final[learned[0]]["selector_accuracy"]["mean"] is not None:
            lines.append(f"| {name} | " + " | ".join(_pm(final[n]["selector_accuracy"]) for n in learned + extra[:1]) + " |")
    lines += ["", "## Storage after the last step (bytes)", "",
              "| method | modules | selector | buffer | replayed images | EWC Fisher + weights | total |",
              "|---|---|---|---|---|---|---|"]
    for name, data in methods.items():
        st = data["aggregate"]["storage"]
        lines.append(f"| {name} | " + " | ".join(f"{st[k]['mean']:,.0f}" if st[k]["mean"] else "0"
                                                for k in ("module_total", "selector", "buffer", "replay", "fisher", "total")) + " |")
    budgets = cfg["replay_bytes"]
    lines += ["", f"Replay budgets: `replay` {budgets['replay']:,} B (stated); `replay-matched` {budgets['replay-matched']:,} B "
              "(SAMCL's total storage minus one module, so that module + memory equals SAMCL's total).",
              "", "## Learning rates (chosen on the first domain, seed 0: IoU on a held-out 25% of its training split)", "",
              "| family | methods | " + " | ".join(f"lr {lr:g}" for lr in size["lr_grid"]) + " | chosen |",
              "|---|---|" + "---|" * len(size["lr_grid"]) + "---|"]
    for family, choice in report["learning_rates"].items():
        users = ", ".join(m for m, d in methods.items() if d["family"] == family)
        lines.append(f"| {family} | {users} | " + " | ".join(f"{100 * choice['grid'][repr(lr)]:.1f}"
                                                             for lr in size["lr_grid"]) + f" | {choice['lr']:g} |")
    strengths = cfg["strengths"]
    lines += ["", f"Fixed strengths: EWC λ = {strengths['ewc']:g}; LwF λ = {strengths['lwf']:g} (T = "
              f"{strengths['lwf_temperature']:g}); O-LoRA λ = {strengths['o-lora']:g}.",
              "", "## Time per run (this machine; the only numbers that vary between reruns)", "",
              "| method | learn (s) | learn CPU (s) | eval (s) |", "|---|---|---|---|"]
    for name, data in methods.items():
        sec = data["aggregate"]["seconds"]
        lines.append(f"| {name} | {_pm(sec['learn'], 1, 1)} | {_pm(sec['learn_cpu'], 1, 1)} | {_pm(sec['eval'], 1, 1)} |")
    code = cfg.get("code_sha256")
    lines += ["", f"Digest of every reproducible number: `{report['metrics_sha256']}` (samcl sources sha256 "
              f"`{code if isinstance(code, str) else ', '.join(code or [])}`; torch {cfg['torch']}; {cfg['machine']}).", ""]
    for warning in report.get("warnings", []):
        lines += [f"**Warning:** {warning}", ""]
    if report.get("command"):
        lines += ["Made with:", "", "```bash", report["command"], "```", ""]
    return "\n".join(lines)


def write_outputs(out: Path, report: dict) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    files = write_plots(out, report)
    report["plots"] = files
    atomic_write_json(out / "results.json", report)
    atomic_write_bytes(out / "results.md", format_markdown(report).encode())
    return files


def write_plots(out: Path, report: dict) -> list[str]:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig, name: str) -> str:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        atomic_write_bytes(out / name, buffer.getvalue())
        return name

    methods = report["methods"]
    names = list(methods)
    colors = {name: plt.cm.tab20(i % 20) for i, name in enumerate(names)}
    files = []

    fig, ax = plt.subplots(figsize=(8, 5.5))
    totals = [methods[n]["aggregate"]["storage"]["total"]["mean"] or 0 for n in names]
    floor = 10 ** math.floor(math.log10(min([t for t in totals if t > 0] or [1e3]) / 4))
    labels: list[list] = []  # [x, y, text]: points that coincide share one label
    for name, total in zip(names, totals):
        aa = methods[name]["aggregate"]["continual"]["iou"]["AA"]
        x, y = (total if total > 0 else floor), 100 * aa["mean"]
        ax.errorbar([x], [y], yerr=[100 * aa["std"]], fmt="o" if total > 0 else "s", capsize=3, color=colors[name])
        near = next((item for item in labels if abs(math.log10(item[0] / x)) < 0.06 and abs(item[1] - y) < 0.4), None)
        if near is not None:
            near[2] += f" / {name}"
        else:
            labels.append([x, y, name + ("" if total > 0 else " (0 B)")])
    ax.set_xscale("log")
    ax.autoscale_view()
    points_per_pixel = 72 / fig.dpi
    placed: list[tuple[float, float]] = []  # label anchors in display pixels: crowded labels step down a line
    for x, y, text in sorted(labels, key=lambda item: -item[1]):
        px, py = ax.transData.transform((x, y))
        offset = 3.0
        while any(abs(qx - px) < 90 and abs(qy - (py + offset / points_per_pixel)) < 11 / points_per_pixel
                  for qx, qy in placed):
            offset -= 10.0
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(6, offset), fontsize=8)
        placed.append((px, py + offset / points_per_pixel))
    ax.set_xlabel("storage beyond the frozen base (bytes, log scale)")
    ax.set_ylabel("AA: final mean IoU over learned domains (%)")
    ax.grid(alpha=0.3, which="both")
    ax.set_title("Accuracy vs storage (mean ± std over seeds)")
    files.append(save(fig, "accuracy_vs_storage.png"))

    fig, ax = plt.subplots(figsize=(max(8, 0.7 * len(names) + 2), 4.5))
    xs = np.arange(len(names))
    for offset, key, label in ((-0.2, "FM_best", "FM (best score since learned, / t)"),
                               (0.2, "FM_reference", "FM (reference, / (t + 1))")):
        stats = [methods[n]["aggregate"]["continual"]["iou"][key] for n in names]
        ax.bar(xs + offset, [100 * (s["mean"] or 0) for s in stats], 0.4, yerr=[100 * (s["std"] or 0) for s in stats],
               capsize=2, label=label)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(xs, names, rotation=35, ha="right")
    ax.set_ylabel("forgetting (IoU points)")
    ax.set_title("Forgetting per method (mean ± std over seeds; lower is better)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    files.append(save(fig, "forgetting.png"))

    columns = report["config"]["order"] + report["config"]["extra"]
    matrix = np.array([[100 * (methods[n]["aggregate"]["final"][c]["iou"]["mean"] or 0) for c in columns] for n in names])
    fig, ax = plt.subplots(figsize=(1.1 * len(columns) + 3, 0.45 * len(names) + 1.5))
    image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(columns)), [c if c in report["config"]["order"] else c + "*" for c in columns],
                  rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    for (r, c), value in np.ndenumerate(matrix):
        ax.text(c, r, f"{value:.0f}", ha="center", va="center", color="white" if value < 60 else "black", fontsize=7)
    ax.set_title("Final IoU per domain (%, mean over seeds; * = never learned)")
    fig.colorbar(image, ax=ax, fraction=0.03)
    files.append(save(fig, "final_iou.png"))
    return files


# ---------------------------------------------------------------------------------------------------- CLI
def parse_list(text: str, kind=str) -> list:
    try:
        return [kind(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SamclError(f"cannot read {text!r} as a comma-separated list") from None


def main_benchmark(args) -> int:
    methods = check_methods(parse_list(args.methods)) if args.methods else list(METHODS)
    seeds = parse_list(args.seeds, int) if args.seeds else ([0] if args.quick else [0, 1, 2])
    if not seeds or len(set(seeds)) != len(seeds):
        raise SamclError(f"--seeds {args.seeds!r}: give distinct integers")
    if args.jobs < 1:
        raise SamclError("--jobs must be at least 1")
    if not args.domain and (args.extra or args.general):
        raise SamclError("--extra and --general go with --domain (the embedded suite has its own)")
    suite = SuiteSpec()
    if args.domain:
        suite = SuiteSpec(False, tuple(args.domain), tuple(args.extra or ()), args.general)
    config = BenchmarkConfig(out=args.out, methods=methods, seeds=seeds, quick=args.quick, base=args.base,
                             suite=suite, jobs=args.jobs, state=args.state, max_steps=args.max_steps,
                             progress=not args.json, device=args.device, epochs=args.epochs, batch_size=args.batch_size,
                             command=canonical_command(args, methods, seeds))
    try:
        report = run_benchmark(config)
    except BenchmarkStopped:
        print(f"samcl: stopped after --max-steps {args.max_steps}; everything finished is saved in "
              f"{config.state_dir}; run the same command again to continue", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"samcl: interrupted; every finished step is saved in {config.state_dir}; run the same command "
              "again to continue", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps({"results": str(args.out / "results.json"), "metrics_sha256": report["metrics_sha256"],
                          "methods": {m: d["aggregate"]["continual"]["iou"] for m, d in report["methods"].items()}}))
    else:
        print(format_summary(report))
        print(f"\nresults in {args.out}/: results.json, results.md, {', '.join(report['plots'])}")
    return 0


def canonical_command(args, methods: list[str], seeds: list[int]) -> str:
    """The command line that reproduces this run (what results.md records)."""
    import shlex

    parts = ["samcl", "benchmark", "--out", str(args.out)]
    if args.quick:
        parts.append("--quick")
    if methods != list(METHODS):
        parts += ["--methods", ",".join(methods)]
    parts += ["--seeds", ",".join(map(str, seeds))]
    if args.base:
        parts += ["--base", str(args.base)]
    for flag, items in (("--domain", args.domain), ("--extra", args.extra)):
        for name, path in items or ():
            parts += [flag, f"{name}={path}"]
    if args.general:
        parts += ["--general", "=".join(args.general)]
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size)):
        if value is not None:
            parts += [flag, str(value)]
    if args.jobs != 1:
        parts += ["--jobs", str(args.jobs)]
    return " ".join(shlex.quote(p) for p in parts)


def format_summary(report: dict) -> str:
    rows = []
    for name, data in report["methods"].items():
        agg = data["aggregate"]
        iou = agg["continual"]["iou"]
        rows.append([name, _pm(iou["AA"]), _pm(iou["FM_best"]), _pm(iou["FT"]), _pm(agg["selector_accuracy"]),
                     _bytes(agg["storage"]["total"]["mean"]), f"{data['lr']:g}" if data["lr"] else "–"])
    header = ["method", "AA (IoU %)", "FM best", "FT", "selector", "storage", "lr"]
    cells = [header, *rows]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"digest {report['metrics_sha256'][:16]}  ({report['seconds']:.0f} s)")
    return "\n".join(lines)
