"""Does int8 pay for the frozen base's prefix and suffix graphs on OpenVINO? Two NNCF variants of the two exported
encoder graphs (the decoder stays float32, as on every samcl graph path), against plain OpenVINO at its native
hint (bf16 where the CPU has it):
  + int8 weights   `nncf.compress_weights` (8-bit per-channel weights; activations stay at the hint)
  + int8 PTQ       `nncf.quantize` (int8 weights and activations), calibrated on samcl's own graph inputs
One run measures both sides of the issue's rule:

    nice -n 10 /work/venvs/h3-ov/bin/python benchmarks/int8_openvino.py --test 40 --size 512 --repeats 2

(a) quality: the embedded suite on the shipped tiny SAM (`precision_quality.py`'s code), each OpenVINO variant
    against torch float32: selector decisions identical on >= 99.5 % of test images, IoU within 0.5 point per
    domain;
(b) speed: ViT-B config (random weights), one thread, CPU time, interleaved (`latency_runtimes.py`'s code):
    transformers float32 and samcl on each OpenVINO variant, full segment and prompt-only re-run.
Kept only if (a) passes and (b) takes at most 0.95 of plain OpenVINO's CPU time on the full segment and the
prompt-only re-run; the verdicts are the last lines. PTQ is calibrated on the suite's training images (4 per
domain by default), never its test images. Needs openvino and nncf installed.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import precision_quality as quality  # noqa: E402
from latency import add_random_domains, interleaved, test_image, vit_b_backbone  # noqa: E402
from latency_precision import transformers_sam  # noqa: E402
from latency_runtimes import cpu_name  # noqa: E402

from samcl import SAMCL, Prompt, load_backbone  # noqa: E402
from samcl.bench import embedded_suite  # noqa: E402
from samcl.inference.precision import native_bf16  # noqa: E402

ENCODER_GRAPHS = ("prefix", "suffix")
MODES = ("", "+int8 weights", "+int8 PTQ")
#: A win must beat run-to-run spread: single samcl-on-OpenVINO timings move by several % between runs
#: (benchmarks/results/runtimes/README.md).
FASTER = 0.95


def compress_encoder(samcl: SAMCL) -> None:
    """Replace the prefix and suffix graphs of `samcl`'s OpenVINO sessions with NNCF int8-weight versions
    (compiled afresh on the next call)."""
    import nncf

    nncf.set_log_level(logging.ERROR)  # its per-graph bitwidth tables would bury the benchmark's output
    graphs = samcl.engine.backbone
    for name in ENCODER_GRAPHS:
        session = graphs.sessions[name]
        session.model = nncf.compress_weights(session.model, mode=nncf.CompressWeightsMode.INT8_ASYM)
        session.compiled.clear()


def recorded_feeds(samcl: SAMCL, images, prompts) -> dict[str, list[dict]]:
    """The prefix and suffix graphs' inputs while `samcl` segments `images` one at a time: calibration data."""
    sessions = samcl.engine.backbone.sessions
    feeds = {name: [] for name in ENCODER_GRAPHS}
    for name in ENCODER_GRAPHS:
        session, run = sessions[name], sessions[name].run
        session.run = lambda f, s=session, r=run, n=name: feeds[n].append(
            {k: v for k, v in f.items() if k in s.inputs}) or r(f)
    try:
        for image, prompt in zip(images, prompts):
            samcl.segment([image], [prompt])
    finally:
        for name in ENCODER_GRAPHS:
            del sessions[name].run  # the class's own again
    return feeds


def quantize_encoder(samcl: SAMCL, images, prompts) -> None:
    """NNCF post-training quantisation (int8 weights and activations) of the prefix and suffix graphs, calibrated
    on `samcl`'s own graph inputs for `images`."""
    import nncf

    nncf.set_log_level(logging.ERROR)
    feeds = recorded_feeds(samcl, images, prompts)
    for name in ENCODER_GRAPHS:
        session = samcl.engine.backbone.sessions[name]
        session.model = nncf.quantize(session.model, nncf.Dataset(feeds[name]), subset_size=len(feeds[name]),
                                      model_type=nncf.ModelType.TRANSFORMER)
        session.compiled.clear()


def on_openvino(samcl: SAMCL, precision: str, mode: str, calibration=None) -> SAMCL:
    """`samcl` on OpenVINO at `precision`; mode "" (as exported), "+int8 weights" or "+int8 PTQ"."""
    samcl.set_runtime("openvino", precision)
    if mode == "+int8 weights":
        compress_encoder(samcl)
    elif mode == "+int8 PTQ":
        quantize_encoder(samcl, *calibration)
    return samcl


def quality_run(args) -> dict:
    """precision_quality's measurement with `openvino:<hint>` and `openvino:<hint>+int8` against torch float32."""
    suite = embedded_suite(args.train, args.test, args.seed)
    trained = quality.learn_suite(suite, args)
    hint = "bfloat16" if native_bf16() else "float32"
    names = ["float32", *(f"openvino:{hint}{mode}" for mode in MODES)]
    # PTQ's calibration: the shipped synthetic suite's training images (a few per domain), never its test images
    train = [s for d in [suite.general, *suite.domains] for s in list(d.train)[:args.calibration]]
    calibration = ([s.image for s in train], [Prompt.of(s.points, s.labels) for s in train])
    sets = {"float32": trained}
    for name, mode in zip(names[1:], MODES):
        fresh = SAMCL(load_backbone("builtin:tiny-sam"), trained.module_set, device="cpu")
        sets[name] = on_openvino(fresh, hint, mode, calibration)
    rows, decisions = {}, {name: [] for name in names}
    for domain in [suite.general, *suite.domains, *suite.unseen]:
        runs = {name: quality.run_domain(s, domain.test) for name, s in sets.items()}
        reference = runs["float32"]
        rows[domain.name] = {}
        for name, (ious, chosen, _) in runs.items():
            same = [a == b for a, b in zip(chosen, reference[1])]
            decisions[name] += same
            rows[domain.name][name] = (statistics.fmean(ious),
                                       100 * (statistics.fmean(ious) - statistics.fmean(reference[0])),
                                       statistics.fmean(same))
    verdicts = {name: (statistics.fmean(decisions[name]),
                       all(abs(row[name][1]) <= quality.IOU_POINTS for row in rows.values())) for name in names[1:]}
    return {"names": names, "rows": rows, "verdicts": verdicts, "count": len(decisions["float32"])}


def show_quality(report: dict, args) -> None:
    names = report["names"]
    print(f"(a) embedded suite, shipped tiny SAM: {args.train} train / {args.test} test images per domain, "
          f"{args.epochs} epochs, seed {args.seed}; decisions and IoU against torch float32's")
    print(f"{'domain':<18}" + "".join(f"{n + ' IoU':>36}{'d pts':>8}{'same sel':>10}" for n in names))
    for domain, row in report["rows"].items():
        print(f"{domain:<18}" + "".join(f"{row[n][0]:>36.4f}{row[n][1]:>+8.2f}{row[n][2]:>10.3f}" for n in names))
    for name, (agreement, within) in report["verdicts"].items():
        print(f"{name}: selector decisions identical on {100 * agreement:.2f} % of {report['count']} test images "
              f"(goal >= {100 * quality.AGREEMENT:.1f} %); IoU within {quality.IOU_POINTS} point on every domain: "
              f"{within} -> {'PASS' if agreement >= quality.AGREEMENT and within else 'FAIL'}")


def speed_run(args) -> dict:
    """transformers float32, samcl OpenVINO and samcl OpenVINO + int8 weights, interleaved, one thread."""
    torch.set_num_threads(1)
    hint = "bfloat16" if native_bf16() else "float32"
    reference = vit_b_backbone(args.size)
    image, prompt = test_image(reference, 0)
    functions = {"transformers SamModel float32": lambda: transformers_sam(reference.model, image, prompt,
                                                                           reference.preprocess)}
    other = Prompt.of(prompt.points[:1] + 5)
    # PTQ's calibration here: a few test images (random weights: the speed, not the ranges, is what is measured)
    calibration = [test_image(reference, seed) for seed in range(1, 1 + args.calibration // 2)]
    calibration = ([c[0] for c in calibration], [c[1] for c in calibration])
    for mode in MODES:
        label = f"samcl openvino {hint}{mode.replace('+', ' + ')}"
        samcl = SAMCL.create(vit_b_backbone(args.size), None, device="cpu")
        add_random_domains(samcl, 2, samples_per_domain=4)
        start = time.perf_counter()
        on_openvino(samcl, hint, mode, calibration)
        print(f"  {label}: graphs ready in {time.perf_counter() - start:.1f} s wall", flush=True)
        functions[label] = lambda s=samcl: s.segment([image], [prompt])
        predictor = samcl.predictor()
        predictor.set_image(image, force=samcl.domains[0])
        functions[f"{label} prompt-only re-run"] = lambda p=predictor: p.predict(other.points, other.labels)
    times = interleaved(functions, args.repeats)
    base = statistics.median(times["transformers SamModel float32"]["cpu"])
    return {"size": reference.image_size, "hint": hint, "times": times,
            "ratio": {k: statistics.median(v["cpu"]) / base for k, v in times.items()}}


def show_speed(report: dict, args) -> None:
    print(f"(b) CPU: {cpu_name()}; SAM ViT-B config, {report['size']} px, random weights; 1 thread; {args.repeats} "
          f"timed call(s) after a warm-up, interleaved; native bf16: {native_bf16()}; load {os.getloadavg()}")
    print(f"{'':<56}{'CPU s':>9}{'wall s':>9}{'/ transformers':>16}")
    for name, t in report["times"].items():
        print(f"{name:<56}{statistics.median(t['cpu']):>9.2f}{statistics.median(t['wall']):>9.2f}"
              f"{report['ratio'][name]:>16.3f}")
    ratio, plain = report["ratio"], f"samcl openvino {report['hint']}"
    for mode in MODES[1:]:
        label = f"{plain}{mode.replace('+', ' + ')}"
        rerun = ratio[f"{label} prompt-only re-run"] / ratio[f"{plain} prompt-only re-run"]
        print(f"{label} / {plain}: {ratio[label] / ratio[plain]:.3f} (prompt-only re-run: {rerun:.3f})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=48, help="training images per domain (and N_e)")
    parser.add_argument("--test", type=int, default=40, help="test images per domain")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=None, help="speed: input size in pixels (default ViT-B's 1024)")
    parser.add_argument("--calibration", type=int, default=4, help="PTQ: calibration images per domain (quality; "
                        "half as many for the speed run)")
    parser.add_argument("--repeats", type=int, default=1, help="speed: timed calls per row (after one warm-up)")
    args = parser.parse_args(argv)
    args.device = "cpu"
    torch.set_num_threads(1)
    os.environ["SAMCL_CACHE_DIR"] = tempfile.mkdtemp(prefix="samcl-int8-cache-")
    try:
        start = time.perf_counter()
        q = quality_run(args)
        show_quality(q, args)
        print(f"({time.perf_counter() - start:.0f} s)", flush=True)
        s = speed_run(args)
        show_speed(s, args)
    finally:
        shutil.rmtree(os.environ["SAMCL_CACHE_DIR"], ignore_errors=True)
    for mode in MODES[1:]:
        agreement, within = q["verdicts"][f"openvino:{s['hint']}{mode}"]
        passes = agreement >= quality.AGREEMENT and within
        plain, label = f"samcl openvino {s['hint']}", f"samcl openvino {s['hint']}{mode.replace('+', ' + ')}"
        faster = all(s["ratio"][label + run] <= FASTER * s["ratio"][plain + run] for run in ("", " prompt-only re-run"))
        print(f"verdict {mode[1:]}: quality {'PASS' if passes else 'FAIL'}, at most {FASTER} of {plain}'s CPU time "
              f"(full segment and re-run): {faster} -> {'KEEP' if passes and faster else 'NOT KEPT'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
