"""The benchmark's methods: each family's AugModule config, how to build each method's `Strategy`, and the
benchmark's sizes (BenchmarkSize, FULL, QUICK); the registry of names (METHODS) is `registry`'s. Adding a method is
one entry in METHODS and one in `make_strategy`'s table."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable

from .. import SamclError, SelectorConfig, TrainConfig
from ..method import config_for
from ..selector import DEFAULT_KIND, SelectorNet
from . import baselines as b
from .protocol import SamclStrategy, Strategy
from .registry import METHODS

if TYPE_CHECKING:
    from .suite import Suite


#: AugModuleConfig fields of each family (see `samcl.method.augmodule`).
FAMILIES: dict[str, dict] = {
    "augmodule": {},
    "lora-qkv": {"shared_down": False, "prompt_augmentation": False, "target": "qkv"},
    "augmodule-per-block-a": {"shared_down": False},
    "augmodule-no-prompt": {"prompt_augmentation": False},
}


def family_config(backbone, family: str, rank: int):
    """The AugModuleConfig a family trains (`lora-qkv` checks that the backbone supports it)."""
    if family == "lora-qkv":
        return b.lora_config(backbone, rank)
    return replace(config_for(backbone.site, rank=rank), **FAMILIES[family])


def check_methods(methods: list[str]) -> list[str]:
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise SamclError(f"unknown method {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        raise SamclError("a method is listed twice")
    return methods


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
#: The training prompts of every benchmark method, SAMCL's rows and the baselines alike (and of the demo): the
#: paper's 3 positive points per image and epoch, pinned so the committed results keep their numbers whatever
#: `TrainConfig.prompts` defaults to (`benchmarks/prompt_kinds.py` measures the mix against it).
BENCHMARK_PROMPTS = "reference"

FULL = BenchmarkSize(train=48, test=32, epochs=8, batch_size=4, buffer=48, replay_bytes=2 * 2**20)
QUICK = BenchmarkSize(train=12, test=6, epochs=3, batch_size=4, buffer=12, replay_bytes=2**20)


def make_strategy(method: str, backbone, lr: float | None, size: BenchmarkSize, suite: Suite, seed: int,
                  replay_matched_bytes: int, device=None) -> Strategy:
    train = TrainConfig(epochs=size.epochs, batch_size=size.batch_size, lr=lr or 0.0, seed=seed, progress=False,
                        prompts=BENCHMARK_PROMPTS)
    selector = SelectorConfig(samples_per_domain=size.buffer, epochs=size.selector_epochs)
    rank = size.rank
    samcl = lambda kind=DEFAULT_KIND, features=None, **kw: SamclStrategy(  # noqa: E731
        backbone, train, replace(selector, kind=kind, features=features), rank=rank, base_domain=suite.general,
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
        "samcl-mlp": lambda: samcl("mlp"),
        "samcl-mlp-std": lambda: samcl("mlp", features="mean_std"),
        "samcl-ncm": lambda: samcl("ncm"),
        "samcl-ranpac": lambda: samcl("ranpac"),
        "samcl-lora": lambda: samcl(variant=FAMILIES["augmodule-per-block-a"]),
        "samcl-noprompt": lambda: samcl(variant=FAMILIES["augmodule-no-prompt"]),
        "samcl-oracle": lambda: samcl(oracle=True),
        "joint": lambda: b.JointStrategy(backbone, train, suite.domains, rank, device),
    }
    strategy = factories[method]()
    strategy.name = method
    return strategy


def samcl_storage_bytes(backbone, size: BenchmarkSize, train_sizes: list[int], base_size: int | None) -> int:
    """SAMCL-with-the-paper's-selector's bytes after learning domains of `train_sizes` images (and a domain
    without a module of `base_size`): modules, MLP selector and buffer, as `SAMCL.storage` counts them (float32).
    The replay-matched budget keeps this meaning across selector kinds."""
    aug = config_for(backbone.site, rank=size.rank)
    domains = len(train_sizes) + (base_size is not None)
    net = SelectorNet(aug.dim, domains)
    selector = sum(t.numel() * (4 if t.is_floating_point() else t.element_size()) for t in net.state_dict().values())
    counts = [min(size.buffer, n) for n in train_sizes + ([base_size] if base_size is not None else [])]
    return aug.num_parameters * 4 * len(train_sizes) + selector + sum(counts) * (aug.dim * 4 + 8)


def strengths() -> dict:
    """The fixed strengths of the regularised baselines (part of every run's fingerprint and of the report)."""
    return {"ewc": b.EWC_STRENGTH, "lwf": b.LWF_STRENGTH, "lwf_temperature": b.LWF_TEMPERATURE,
            "o-lora": b.OLORA_STRENGTH}
