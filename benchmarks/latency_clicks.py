"""What a click costs: each refinement strategy against bare SAM's decoder-only click and its full forward, on
torch float32, torch bfloat16 (where the CPU multiplies it natively) and OpenVINO, side by side in one run, one
thread, CPU time (SAM ViT-B config at 1024 px, random weights, no download).

    nice -n 10 python benchmarks/latency_clicks.py --repeats 2              # ViT-B at 1024 px
    nice -n 10 python benchmarks/latency_clicks.py --size 256 --repeats 1   # a quick check

Rows per runtime, each timed interleaved with the others after one warm-up call (a 3:4 image):
  bare SAM full forward         preprocess, the whole encoder, the decoder (no module): torch's `encode` + decode;
                                on OpenVINO Meta's encoder and decoder graphs (`latency_runtimes.bare_openvino`)
  bare SAM click                the decoder alone on the kept embedding (the predictor on the base model)
  samcl first click             `set_image` + `predict` with a module (prefix, selection, suffix with the heat,
                                decoder): what the first click of an image costs
  samcl click [all]             a further click under "all": suffix + decoder
  samcl click [first]           a further click under "first": the decoder alone (the first click's embedding)
  samcl click [outside] near    under "outside", a click within the first click's heat: the decoder alone
  samcl click [outside] far     under "outside", a click outside it: suffix + decoder
Ratios: each click / bare SAM's click (goal for the default strategy's refinement click <= 1.5) and the first click
/ bare SAM's full forward (goal <= 1.05).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import bare_sam, interleaved, test_image, vit_b_backbone  # noqa: E402
from latency_runtimes import bare_openvino, cpu_name, samcl_sets  # noqa: E402

from samcl import Prompt  # noqa: E402
from samcl.inference.precision import native_bf16  # noqa: E402
from samcl.runtime import installed  # noqa: E402


def clicks(image, size: int) -> tuple[Prompt, Prompt, Prompt]:
    """The first click near the centre, a second one within its heat (2 % of the side away), one far from it."""
    height, width = image.shape[:2]
    first = np.array([[width * 0.5, height * 0.5]])
    near = np.array([[width * 0.5 + size * 0.02, height * 0.5]])
    far = np.array([[width * 0.1, height * 0.15]])
    return (Prompt.of(first), Prompt.of(np.concatenate([first, near]), [1, 0]),
            Prompt.of(np.concatenate([first, far]), [1, 0]))


def later(predictor) -> dict:
    """Forget what a timed click kept beyond the first click's embedding, so each repetition is that click again
    (a far click under "outside" would otherwise find its own embedding kept by the warm-up call)."""
    heated = predictor._prepared.heated
    while heated is not None and len(heated) > 1:
        heated.popitem(last=True)
    return {}


def functions_for(name: str, samcl, image, size: int) -> dict:
    """The rows of one runtime (`name`: "torch float32", ...) on its opened set."""
    first, near, far = clicks(image, size)
    domain = samcl.domains[0]
    out = {}
    base = samcl.predictor()
    base.set_image(image, force="base")
    out["bare SAM click"] = lambda: base.predict(near.points, near.labels, multimask_output=False)

    def first_click():
        predictor = samcl.predictor()
        predictor.set_image(image, force=domain)
        predictor.predict(first.points, first.labels, multimask_output=False)

    out["samcl first click"] = first_click
    for strategy, label, prompt in [("all", "[all]", near), ("first", "[first]", near),
                                    ("outside", "[outside] near", near), ("outside", "[outside] far", far)]:
        predictor = samcl.predictor(refine=strategy)
        predictor.set_image(image, force=domain)
        predictor.predict(first.points, first.labels, multimask_output=False)  # the first click, kept
        out[f"samcl click {label}"] = (lambda p=predictor, q=prompt:
                                       p.predict(q.points, q.labels, multimask_output=False, **later(p)))
    return {f"{name}: {row}": f for row, f in out.items()}


def run(args) -> dict:
    torch.set_num_threads(1)
    os.environ["SAMCL_CACHE_DIR"] = tempfile.mkdtemp(prefix="samcl-bench-cache-")
    runtimes = ["torch float32"] + (["torch bfloat16"] if native_bf16() else [])
    if installed("openvino"):
        runtimes.append(f"openvino {'bfloat16' if native_bf16() else 'float32'}")
    reference = vit_b_backbone(args.size)
    size = reference.image_size
    image, _ = test_image(reference, 0)
    first = clicks(image, size)[0]
    sets = samcl_sets(args.size, runtimes)
    functions = {"torch float32: bare SAM full forward": lambda: bare_sam(reference, [image], [first])}
    if "torch bfloat16" in sets:
        half = sets["torch bfloat16"].backbone  # the bfloat16 encoder of that set: bare SAM at bfloat16
        functions["torch bfloat16: bare SAM full forward"] = lambda: bare_sam(half, [image], [first])
    report = {"config": {"image_size": size, "threads": 1, "repeats": args.repeats, "torch": torch.__version__,
                         "native_bf16": native_bf16(), "cpu": cpu_name(), "runtimes": runtimes,
                         "load_before": os.getloadavg()}}
    folder = tempfile.mkdtemp(prefix="samcl-bare-ov-")
    try:
        if installed("openvino"):
            bare, hint = bare_openvino(reference, Path(folder), 1)
            report["config"]["openvino_bare_hint"] = hint
            functions[f"{runtimes[-1]}: bare SAM full forward"] = lambda: bare(image, first)
        for name, samcl in sets.items():
            functions.update(functions_for(name, samcl, image, size))
        times = interleaved(functions, args.repeats)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report["seconds"] = times
    cpu = {k: statistics.median(v["cpu"]) for k, v in times.items()}
    ratios = {}
    for name in runtimes:
        click, full = cpu[f"{name}: bare SAM click"], cpu[f"{name}: bare SAM full forward"]
        ratios[name] = {row.split(": ", 1)[1]: {"cpu_s": value, "to_bare_click": value / click,
                                                 "to_bare_full": value / full}
                        for row, value in cpu.items() if row.startswith(name + ":")}
    report["ratios"] = ratios
    report["config"]["load_after"] = os.getloadavg()
    return report


def show(report: dict) -> None:
    c = report["config"]
    print(f"CPU: {c['cpu']}; SAM ViT-B config, {c['image_size']} px, random weights; 1 thread; {c['repeats']} timed "
          f"call(s) after a warm-up, interleaved; torch {c['torch']}; native bf16: {c['native_bf16']}; "
          f"load {c['load_before']} -> {c['load_after']}\n")
    print(f"{'':<44}{'CPU s':>9}{'/ bare click':>14}{'/ bare full':>13}")
    for name, rows in report["ratios"].items():
        for row, r in rows.items():
            print(f"{name + ': ' + row:<44}{r['cpu_s']:>9.3f}{r['to_bare_click']:>14.2f}{r['to_bare_full']:>13.3f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=None, help="input size in pixels (default: ViT-B's 1024)")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per row (after one warm-up)")
    parser.add_argument("--out", type=Path, default=None, help="write latency_clicks.json here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        report = run(args)
    finally:
        shutil.rmtree(os.environ.get("SAMCL_CACHE_DIR", ""), ignore_errors=True)
    if args.out is not None:
        from samcl.io import atomic_write_json

        report["command"] = "python benchmarks/latency_clicks.py " + " ".join(argv if argv is not None else sys.argv[1:])
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out / "latency_clicks.json", report)
    print(json.dumps(report)) if args.json else show(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
