"""The continual protocol (`protocol`), the competing methods (`baselines/`), `samcl benchmark` (every method,
several seeds, one budget; results.json, results.md and plots) and `samcl demo` (`demo`, with its `plots`).

    samcl benchmark --out bench                          # embedded suite, shipped tiny SAM, all methods, seeds 0,1,2
    samcl benchmark --quick --out bench-quick            # a few minutes on 2 CPU cores (CI)
    samcl benchmark --base sam_vit_b_01ec64.pth --data polyps=data/kvasir --data camo=data/camo --out bench

Protocol. The target domains are learned in order; every method is evaluated on every domain (and on the extra
domains: the base model's own "general" domain and unseen ones) before learning and after each step, with the
fixed test points, SAM-style resize (longest side + pad) and scores at the original image size. SAMCL (and its
ablations) learn the general domain first without a module (SAM itself), as the reference does with
COCO; no other method learns it.

Budget. Every method trains with the same loop, epochs and batch size (`samcl.learning.trainer`); the learning rate is
chosen per method family on the first domain only: the family's module is trained on the first 75% of that
domain's training split of seed 0 with each rate of the grid and scored (IoU) on the remaining 25%. Methods whose
first step trains the same module share the choice (the first step of EWC, LwF, replay, joint and SAMCL is plain
AugModule training). Choices are cached in the state folder.

Runs are single-threaded (`torch.set_num_threads(1)`), seeded and deterministic, so `--jobs` (parallel
(method, seed) runs) changes nothing but the wall time. Resumable: after every step a run's strategy state
(safetensors + JSON; SAMCL as a module store) and its results so far are written atomically to
STATE/<method>/seed-<s>/; a rerun of the same command skips what is done and continues each unfinished run
from its last finished step.

The package, one concern a module: `protocol` (the `Strategy` interface, SAMCL's strategy, the continual loop of
learn and evaluate), `baselines/` (the competing methods), `registry` (the methods by name), `methods` (family
configs, sizes, strategy factory), `suite` (the domains; the demo uses it too), `executor` (worker processes, progress,
--max-steps, Ctrl-C), `jobs` (resumable (method, seed) runs), `lrsearch` (the learning-rate grid), `runner` (one
whole run), `report` (results.json's content, digest, summary), `render` (results.md, plots), `cli` (the
command), `demo` and `plots` (`samcl demo`). Public names load on first use (the benchmark's modules import
torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

_WHERE = {
    "canonical_command": ".cli", "main_benchmark": ".cli", "BenchmarkStopped": ".executor",
    "PROGRESS": ".jobs", "code_digest": ".jobs",
    "choose_learning_rates": ".lrsearch", "run_grid_job": ".lrsearch", "split_for_validation": ".lrsearch",
    "FAMILIES": ".methods", "FULL": ".methods", "METHODS": ".registry", "QUICK": ".methods",
    "BenchmarkSize": ".methods", "Method": ".registry", "family_config": ".methods", "make_strategy": ".methods",
    "build_report": ".report", "metrics_digest": ".report", "BenchmarkConfig": ".runner", "run_benchmark": ".runner",
    "Suite": ".suite", "SuiteSpec": ".suite", "embedded_suite": ".suite",
    "DomainData": ".protocol", "ProtocolResult": ".protocol", "SamclStrategy": ".protocol", "Strategy": ".protocol",
    "run_protocol": ".protocol", "EVAL_PREFIX_CACHE_BYTES": ".protocol",
    "main_demo": ".demo", "run_demo": ".demo", "baselines": ".baselines",
    "click_ious": ".clicks", "evaluate_clicks": ".clicks", "next_click": ".clicks", "summarize_clicks": ".clicks",
}
__all__ = ["BenchmarkConfig", "BenchmarkSize", "BenchmarkStopped", "DomainData", "EVAL_PREFIX_CACHE_BYTES",
           "FAMILIES", "FULL", "METHODS", "Method", "PROGRESS", "ProtocolResult", "QUICK", "SamclStrategy",
           "Strategy", "Suite", "SuiteSpec", "baselines", "build_report", "canonical_command",
           "choose_learning_rates", "click_ious", "code_digest", "embedded_suite", "evaluate_clicks",
           "family_config", "main_benchmark", "main_demo", "make_strategy", "metrics_digest", "next_click",
           "run_benchmark", "run_demo", "run_grid_job", "run_protocol", "split_for_validation", "summarize_clicks"]
__getattr__, __dir__ = lazy_names(__name__, _WHERE)

if TYPE_CHECKING:
    from . import baselines
    from .cli import canonical_command, main_benchmark
    from .clicks import click_ious, evaluate_clicks, next_click, summarize_clicks
    from .demo import main_demo, run_demo
    from .executor import BenchmarkStopped
    from .jobs import PROGRESS, code_digest
    from .lrsearch import choose_learning_rates, run_grid_job, split_for_validation
    from .methods import FAMILIES, FULL, QUICK, BenchmarkSize, family_config, make_strategy
    from .registry import METHODS, Method
    from .protocol import EVAL_PREFIX_CACHE_BYTES, DomainData, ProtocolResult, SamclStrategy, Strategy, run_protocol
    from .report import build_report, metrics_digest
    from .runner import BenchmarkConfig, run_benchmark
    from .suite import Suite, SuiteSpec, embedded_suite
