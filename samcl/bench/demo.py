"""`samcl demo`: SAMCL end to end on the shipped tiny SAM and the synthetic domain suite, on a CPU.

Learns the target domains in order (the general domain is learned first without a module: SAM itself, as the
reference does with COCO), evaluates every domain before learning and after each step, and
compares with one AugModule fine-tuned on the domains in sequence (no selector) to show the forgetting that
SAMCL avoids. Writes results.json and plots.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import Prompt, SelectorConfig, TrainConfig, load_backbone
from ..backbone import BUILTIN_TINY_SAM
from ..data.synthetic import GENERAL
from ..io import atomic_write_json, print_json
from ..metrics import mask_scores
from .methods import BENCHMARK_PROMPTS
from .plots import pyplot, save_figure
from .protocol import DomainData, ProtocolResult, SamclStrategy, run_protocol
from .suite import embedded_suite


@dataclass(frozen=True)
class DemoSize:
    train: int
    test: int
    epochs: int
    batch_size: int
    lr: float
    buffer: int  # N_e: pooled features per domain in the selector's buffer
    selector_epochs: int  # the reference's 25 epochs assume N_e = 300; small buffers need more passes


FULL = DemoSize(train=128, test=48, epochs=4, batch_size=4, lr=0.005, buffer=128, selector_epochs=200)
QUICK = DemoSize(train=48, test=16, epochs=3, batch_size=4, lr=0.005, buffer=48, selector_epochs=300)


def run_demo(out: Path, quick: bool = False, seed: int = 0, progress: bool = True, baseline: bool = True,
             device=None, base=None) -> dict:
    from .baselines import SequentialStrategy

    if base is None:  # the tiny SAM: one intra-op thread is faster than several (and far faster on busy cores)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return run_demo(out, quick, seed, progress, baseline, device, base=BUILTIN_TINY_SAM)
        finally:
            torch.set_num_threads(threads)
    torch.manual_seed(seed)
    start = time.perf_counter()
    size = QUICK if quick else FULL
    backbone = load_backbone(base)
    suite = embedded_suite(size.train, size.test, seed)  # the benchmark's suite: general, targets, unseen
    general, targets, extra = suite.general, suite.domains, suite.extra
    train = TrainConfig(epochs=size.epochs, batch_size=size.batch_size, lr=size.lr, seed=seed, progress=progress,
                        prompts=BENCHMARK_PROMPTS)
    selector = SelectorConfig(samples_per_domain=size.buffer, epochs=size.selector_epochs, max_steps=None)
    samcl = SamclStrategy(backbone, train, selector, base_domain=general, device=device)
    result = run_protocol(samcl, targets, extra, progress=progress)
    results = {"config": {"quick": quick, "seed": seed, "size": size.__dict__, "base": str(base),
                          "resize": "longest side + pad (SAM's convention), scored at original size",
                          "fm_definitions": "FM_reference divides by t+1 (reference code); FM_best uses the "
                                            "best earlier score and divides by t"},
               "samcl": result.to_dict()}
    if baseline:
        sequential = run_protocol(SequentialStrategy(backbone, train, device=device), targets, extra,
                                  progress=progress)
        results["sequential"] = sequential.to_dict()
    out.mkdir(parents=True, exist_ok=True)
    results["seconds"] = time.perf_counter() - start
    results["plots"] = write_plots(out, result, samcl, targets + extra)
    atomic_write_json(out / "results.json", results)
    return results


def format_report(results: dict) -> str:
    """The demo's printed table: the IoU matrix, AA/FM/FT, selector accuracy and storage."""
    res = results["samcl"]
    order, extra = res["order"], res["extra"]
    names = order + extra
    width = max(len(n) for n in names + ["zero-shot"]) + 2
    column = max(len(n) for n in names) + 2
    lines = [f"IoU after each step (rows) on each domain (columns; * = not learned at that step; {GENERAL} is "
             "learned first, without a module):",
             "".ljust(width) + "".join(n.rjust(column) for n in names)]
    for s, row in enumerate(res["rows"]):
        label = "zero-shot" if s == 0 else f"+{order[s - 1]}"
        learned = set(order[:s]) | {GENERAL}
        cells = [f"{row[n]['iou']:.3f}{' ' if n in learned else '*'}".rjust(column) for n in names]
        lines.append(label.ljust(width) + "".join(cells))
    lines.append("")
    summary = res["summary"]
    iou = summary["iou"]
    lines.append(f"SAMCL       AA {iou['AA']:.4f}  FM(reference) {iou['FM_reference']:.4f}  "
                 f"FM(best earlier) {iou['FM_best']:.4f}  FT {iou['FT']:.4f}  "
                 f"selector accuracy {summary.get('selector_accuracy', float('nan')):.3f}")
    if "sequential" in results:
        seq = results["sequential"]["summary"]["iou"]
        lines.append(f"sequential  AA {seq['AA']:.4f}  FM(reference) {seq['FM_reference']:.4f}  "
                     f"FM(best earlier) {seq['FM_best']:.4f}  FT {seq['FT']:.4f}  (one AugModule, no selector)")
    gains = {n: summary["final"][n]["iou"] - summary["zero_shot"][n] for n in order}
    lines.append("gain over zero-shot: " + ", ".join(f"{n} {g:+.3f}" for n, g in gains.items()))
    st = res["storage"]
    per_module = sorted(set(st["modules"].values()))
    lines.append(f"storage: {len(st['modules'])} modules x {per_module[0] if per_module else 0:,} B, "
                 f"selector {st['selector']:,} B, buffer {st['buffer']:,} B, total {st['total']:,} B "
                 f"({st['total'] / 2**20:.3f} MiB)")
    lines.append(f"wall time {results['seconds']:.0f} s")
    return "\n".join(lines)


def write_plots(out: Path, result: ProtocolResult, strategy: SamclStrategy, domains: list[DomainData]) -> list[str]:
    plt = pyplot()
    files = []
    order, names = result.order, result.order + result.extra
    matrix = np.array([[row[n]["iou"] for n in names] for row in result.rows])
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 2, 0.6 * len(result.rows) + 1.5))
    image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(result.rows)), ["zero-shot"] + [f"after {n}" for n in order])
    for (r, c), value in np.ndenumerate(matrix):
        ax.text(c, r, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black", fontsize=8)
    ax.set_title(f"SAMCL continual IoU matrix a[t][i] (extra columns: {GENERAL} = learned without a module, "
                 "the others never learned)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.03).set_label("IoU")
    files.append(save_figure(fig, out, "continual_matrix.png"))

    fig, ax = plt.subplots(figsize=(10, 4.5))
    steps = range(len(result.rows))
    for n in names:
        role = "" if n in order else " (no module)" if n == GENERAL else " (never learned)"
        ax.plot(steps, [row[n]["iou"] for row in result.rows], marker="o", label=n + role,
                linestyle="-" if n in order else ":" if n == GENERAL else "--")
    ax.set_xticks(list(steps), ["zero-shot"] + [f"+{n}" for n in order], rotation=20)
    ax.set_ylabel("IoU")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the data
    ax.set_title("Per-domain IoU across learning steps (SAMCL)")
    fig.tight_layout()
    files.append(save_figure(fig, out, "iou_per_step.png"))

    fig, axes = plt.subplots(len(domains), 4, figsize=(10, 2.4 * len(domains)), squeeze=False)
    for r, domain in enumerate(domains):
        sample, pred, iou, caption = typical_example(strategy.samcl, domain)
        panels = [(sample.image, f"{domain.name}: {caption}"), (sample.mask, "ground truth"),
                  (pred.masks[0], f"prediction (module: {pred.domain}), IoU {iou:.2f}"), (None, "overlay")]
        for c, (data, title) in enumerate(panels):
            ax = axes[r, c]
            if data is None:
                overlay = sample.image.astype(float) / 255
                overlay[pred.masks[0]] = 0.5 * overlay[pred.masks[0]] + 0.5 * np.array([1.0, 0.2, 0.2])
                ax.imshow(overlay)
            else:
                ax.imshow(data, cmap="gray" if data.ndim == 2 else None)
            if c in (0, 3) and sample.points is not None:
                ax.scatter(sample.points[:, 0], sample.points[:, 1], c="yellow", s=18, edgecolors="black")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.suptitle("One typical test image per domain: the median IoU among the images the selector routed right",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))  # room for the title above the first row
    files.append(save_figure(fig, out, "examples.png"))
    return files


def typical_example(samcl, domain: DomainData, batch_size: int = 16):
    """(sample, prediction, IoU, caption) of a median-IoU test image among those routed to the domain's own module
    (`base` for the domain without a module and never-learned domains); all test images when none was routed right."""
    module_set = samcl.module_set
    wanted = module_set.domain_name(module_set.index_of(domain.name)) if domain.name in samcl.domains else "base"
    runs = []
    for start in range(0, len(domain.test), batch_size):
        batch = [domain.test[i] for i in range(start, min(start + batch_size, len(domain.test)))]
        predictions = samcl.segment([s.image for s in batch], [Prompt.of(s.points, s.labels) for s in batch])
        runs += [(s, p, mask_scores(p.masks[0], s.mask)["iou"]) for s, p in zip(batch, predictions)]
    right = [run for run in runs if run[1].domain == wanted]
    pool = sorted(right or runs, key=lambda run: run[2])
    sample, pred, iou = pool[(len(pool) - 1) // 2]
    if right:
        caption = f"median of {len(right)}/{len(runs)} routed to {wanted}"
    else:
        caption = f"none of {len(runs)} routed to {wanted}: median of all"
    return sample, pred, iou, caption


def main_demo(out: Path, quick: bool, seed: int, as_json: bool, device=None, base=None) -> int:
    results = run_demo(out, quick=quick, seed=seed, progress=not as_json, device=device, base=base)
    if as_json:
        print_json({k: results[k] for k in ("config", "seconds")} |
                   {"summary": results["samcl"]["summary"], "storage": results["samcl"]["storage"]})
    else:
        print(format_report(results))
        print(f"results and plots in {out}/ ({', '.join(['results.json', *results['plots']])})")
    return 0
