"""The benchmark's files for people: results.md (every table, with the definitions) and the plots (accuracy vs
storage, forgetting, final IoU per domain), written next to results.json."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..io import atomic_write_bytes, atomic_write_json
from .methods import BENCHMARK_PROMPTS
from .plots import label_points, pyplot, save_figure
from .report import human_bytes, pm


#: How results.md names the training prompts of its rows (`TrainConfig.prompts`).
PROMPTS_TEXT = {"reference": "3 positive points per image and epoch (the reference's prompt regime)",
                "mix": "SAM's mix of prompts (points, negative points, boxes, none)"}


def format_markdown(report: dict) -> str:
    cfg, methods = report["config"], report["methods"]
    learned, extra = cfg["order"], cfg["extra"]
    size = cfg["size"]
    samcl_total = methods.get("samcl", {}).get("aggregate", {}).get("storage", {}).get("total", {}).get("mean")
    lines = [
        "# samcl benchmark",
        "",
        f"Suite: {cfg['suite']['suite']}; learned in order: {', '.join(learned)}; also evaluated (never learned by "
        f"any method except SAMCL, which learns the base's own domain without a module): {', '.join(extra)}. Base: `{cfg['base']}`.",
        f"Seeds {', '.join(map(str, cfg['seeds']))}; every method: {size['epochs']} epochs, batch {size['batch_size']}, "
        f"rank {size['rank']}, trained on {PROMPTS_TEXT[BENCHMARK_PROMPTS]}"
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
        lines.append(f"| {name} | {pm(iou['AA'])} | {pm(iou['FM_reference'])} | {pm(iou['FM_best'])} | "
                     f"{pm(iou['FT'])} | {pm(agg['final_mean']['f1'])} | {pm(agg['final_mean']['mae'], digits=2)} | "
                     f"{pm(agg['selector_accuracy'])} | {human_bytes(total)} | {ratio} |")
    for metric, title, digits in (("iou", "IoU", 1), ("f1", "F1", 1), ("mae", "MAE", 2)):
        lines += ["", f"## Final {title} per domain (after the last step; * = never learned)", "",
                  "| method | " + " | ".join(learned + [f"{n}*" for n in extra]) + " |",
                  "|---|" + "---|" * (len(learned) + len(extra))]
        for name, data in methods.items():
            final = data["aggregate"]["final"]
            lines.append(f"| {name} | " + " | ".join(pm(final[n][metric], digits=digits) for n in learned + extra) + " |")
    lines += ["", "## Selector accuracy per domain (SAMCL; the general domain counts 'base' as right)", "",
              "| method | " + " | ".join(learned + extra[:1]) + " |", "|---|" + "---|" * (len(learned) + 1)]
    for name, data in methods.items():
        final = data["aggregate"]["final"]
        if final[learned[0]]["selector_accuracy"]["mean"] is not None:
            lines.append(f"| {name} | " + " | ".join(pm(final[n]["selector_accuracy"]) for n in learned + extra[:1]) + " |")
    lines += open_set_section(methods, learned, extra)
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
        lines.append(f"| {name} | {pm(sec['learn'], 1, 1)} | {pm(sec['learn_cpu'], 1, 1)} | {pm(sec['eval'], 1, 1)} |")
    code = cfg.get("code_sha256")
    lines += ["", f"Digest of every reproducible number: `{report['metrics_sha256']}` (samcl sources sha256 "
              f"`{code if isinstance(code, str) else ', '.join(code or [])}`; torch {cfg['torch']}; {cfg['machine']}).", ""]
    for warning in report.get("warnings", []):
        lines += [f"**Warning:** {warning}", ""]
    if report.get("command"):
        lines += ["Made with:", "", "```bash", report["command"], "```", ""]
    return "\n".join(lines)


def open_set_section(methods: dict, learned: list[str], extra: list[str]) -> list[str]:
    """The open-set figure: per SAMCL variant, the share of each never-learned domain's images that ran on the base
    (sent to base, or to the domain without a module) and their IoU against zero-shot; and the false rejects on
    learned domains (their images sent to base)."""
    unseen = extra[1:]  # extra[0] is the general domain (learned by SAMCL without a module)
    rows = {n: d for n, d in methods.items() if d["aggregate"]["final"][learned[0]].get("to_base", {}).get("mean")
            is not None}
    if not rows or not unseen:
        return []
    zero = methods.get("zero-shot", {}).get("aggregate", {}).get("final", {})
    lines = ["", "## Open set: never-learned domains (share run on base; IoU, zero-shot in brackets)", "",
             "| method | " + " | ".join(f"{n} → base | {n} IoU" for n in unseen)
             + " | false rejects (learned domains → base) |", "|---|" + "---|---|" * len(unseen) + "---|"]
    for name, data in rows.items():
        final = data["aggregate"]["final"]
        cells = []
        for n in unseen:
            zs = f" ({pm(zero[n]['iou'])})" if n in zero else ""
            cells += [pm(final[n].get("to_base")), pm(final[n]["iou"]) + zs]
        rejects = [final[n]["to_base"]["mean"] for n in learned if final[n].get("to_base", {}).get("mean") is not None]
        cells.append(f"{100 * sum(rejects) / len(rejects):.1f}" if rejects else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def write_outputs(out: Path, report: dict) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    files = write_plots(out, report)
    report["plots"] = files
    atomic_write_json(out / "results.json", report)
    atomic_write_bytes(out / "results.md", format_markdown(report).encode())
    return files


def accuracy_vs_storage(report: dict) -> tuple:
    """AA (mean ± std over seeds) against storage, one labelled point per method (methods at one point share a
    label). Returns (the figure, the Text of each label: `label_points`)."""
    plt = pyplot()
    methods = report["methods"]
    names = list(methods)
    colors = {name: plt.cm.tab20(i % 20) for i, name in enumerate(names)}
    fig, ax = plt.subplots(figsize=(8, 5.5))
    totals = [methods[n]["aggregate"]["storage"]["total"]["mean"] or 0 for n in names]
    floor = 10 ** math.floor(math.log10(min([t for t in totals if t > 0] or [1e3]) / 4))
    labels: list[list] = []  # [x, y, text, colour]: points that coincide share one label
    for name, total in zip(names, totals):
        aa = methods[name]["aggregate"]["continual"]["iou"]["AA"]
        x, y = (total if total > 0 else floor), 100 * aa["mean"]
        ax.errorbar([x], [y], yerr=[100 * aa["std"]], fmt="o" if total > 0 else "s", capsize=3, color=colors[name])
        near = next((item for item in labels if abs(math.log10(item[0] / x)) < 0.06 and abs(item[1] - y) < 0.4), None)
        if near is not None:
            near[2] += f" / {name}"
        else:
            labels.append([x, y, name + ("" if total > 0 else " (0 B)"), colors[name]])
    ax.set_xscale("log")
    ax.autoscale_view()
    ax.set_xlabel("storage beyond the frozen base (bytes, log scale)")
    ax.set_ylabel("AA: final mean IoU over learned domains (%)")
    ax.grid(alpha=0.3, which="both")
    ax.set_title("Accuracy vs storage (mean ± std over seeds)")
    texts = label_points(ax, [(x, y, text) for x, y, text, _ in labels], [colour for *_, colour in labels])
    return fig, texts


def write_plots(out: Path, report: dict) -> list[str]:
    plt = pyplot()
    methods = report["methods"]
    names = list(methods)
    files = []

    fig, _ = accuracy_vs_storage(report)
    files.append(save_figure(fig, out, "accuracy_vs_storage.png"))

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
    files.append(save_figure(fig, out, "forgetting.png"))

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
    files.append(save_figure(fig, out, "final_iou.png"))
    return files
