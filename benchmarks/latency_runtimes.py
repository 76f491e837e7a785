"""SAMCL on every runtime against transformers' float32 `SamModel` and bare SAM on OpenVINO, side by side in one
run, one thread, CPU time (random ViT-B weights, no download).

    nice -n 10 python benchmarks/latency_runtimes.py --size 512 --repeats 2   # quicker
    nice -n 10 python benchmarks/latency_runtimes.py                          # ViT-B at 1024 px, 1 repeat

Rows, each timed interleaved with the others after one warm-up call, batch 1, a 3:4 image with three points:
  transformers SamModel float32        its own encoder, attention and decoder (what users run)
  bare SAM on OpenVINO                  the same weights as one encoder graph + Meta's decoder graph, no module,
                                        OpenVINO's default precision on this CPU (bf16 where native)
  samcl <runtime> <precision>           `SAMCL.segment` with a module selected among two (prefix, selection, suffix
                                        with the module's rows and the heat, decoder), on torch float32 and
                                        bfloat16, ONNX Runtime float32 and OpenVINO
  ... prompt-only re-run                the predictor's `predict` after `set_image` (suffix + decoder)
and the export time (the three graphs, once per base). Ratios: each row's CPU time / transformers' full forward,
and samcl on OpenVINO / bare SAM on OpenVINO (goal <= 1.05).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import add_random_domains, interleaved, test_image, vit_b_backbone  # noqa: E402
from latency_precision import transformers_sam  # noqa: E402

from samcl import SAMCL, Prompt  # noqa: E402
from samcl.inference.precision import cpu_name, native_bf16  # noqa: E402
from samcl.method import config_for  # noqa: E402
from samcl.runtime import installed  # noqa: E402
from samcl.runtime.export import cached_graphs  # noqa: E402


class BareEncoder(torch.nn.Module):
    """SAM's whole image encoder, no module: the peer's graph."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, pixels):
        return self.backbone.encode(pixels)


def bare_openvino(backbone, folder: Path, threads: int):
    """Bare SAM on OpenVINO: the encoder graph and the decoder graph (Meta's interface), OpenVINO's default hint."""
    import openvino as ov

    from samcl.runtime.backbone import meta_prompt
    from samcl.runtime.graphs import export_decoder

    size = backbone.image_size
    with torch.no_grad():
        torch.onnx.export(BareEncoder(backbone).eval(), (torch.zeros(1, 3, size, size),), str(folder / "encoder.onnx"),
                          input_names=["pixels"], output_names=["image_embeddings"], opset_version=17, dynamo=False)
    export_decoder(backbone, folder / "decoder.onnx")
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    encoder = core.compile_model(core.read_model(str(folder / "encoder.onnx")), "CPU", config)
    decoder = core.compile_model(core.read_model(str(folder / "decoder.onnx")), "CPU", config)
    hint = encoder.get_property("INFERENCE_PRECISION_HINT")

    def run(image, prompt):
        pixels, geometry = backbone.preprocess(image)
        embedding = encoder(pixels[None].numpy())[0]
        coords, labels = meta_prompt(1, geometry.coords_to_input(prompt.points)[None],
                                     torch.from_numpy(prompt.labels)[None], None)
        low = 4 * embedding.shape[-1]
        out = decoder({"image_embeddings": embedding, "point_coords": coords, "point_labels": labels,
                       "mask_input": np.zeros((1, 1, low, low), np.float32), "has_mask_input": np.zeros(1, np.float32),
                       "orig_im_size": np.array(geometry.original, np.float32)})
        return out[0][0, 0] > 0

    return run, str(hint)


def samcl_sets(size: int | None, runtimes: list[str]) -> dict:
    """`SAMCL` with two random domains per runtime and precision (the same seeds: the same modules and selector;
    the graph runtimes find the graphs in the cache)."""
    sets = {}
    for name in runtimes:
        runtime, precision = name.split(" ")
        samcl = SAMCL.create(vit_b_backbone(size), None, device="cpu")
        add_random_domains(samcl, 2, samples_per_domain=4)
        if runtime == "torch":
            samcl.set_precision(precision)
        else:
            samcl.set_runtime(runtime, precision)
        sets[name] = samcl
    return sets


def quality(sets: dict, image, prompt) -> dict:
    """Each runtime's predictor logits at the original size against torch float32's: the largest difference and
    the IoU of the masks."""
    logits = {}
    for name, samcl in sets.items():
        predictor = samcl.predictor()
        predictor.set_image(image, force=samcl.domains[0])
        logits[name] = predictor.predict(prompt.points, prompt.labels, return_logits=True)[0][0]
    reference = logits["torch float32"]
    out = {}
    for name, value in logits.items():
        a, b = reference > 0, value > 0
        out[name] = {"max_logit_diff": float(np.abs(value - reference).max()),
                     "max_abs_logit": float(np.abs(reference).max()),
                     "mask_iou": float((a & b).sum() / max((a | b).sum(), 1)), "foreground": float(a.mean())}
    return out


def quality_only(args) -> dict:
    torch.set_num_threads(args.threads)
    os.environ.setdefault("SAMCL_CACHE_DIR", tempfile.mkdtemp(prefix="samcl-bench-cache-"))
    runtimes = ["torch float32", "torch bfloat16", "onnxruntime float32"]
    if installed("openvino"):
        runtimes += ["openvino float32", "openvino bfloat16"]
    sets = samcl_sets(args.size, runtimes)
    image, prompt = test_image(sets["torch float32"].backbone, 0)
    return {"config": {"image_size": sets["torch float32"].backbone.image_size, "cpu": cpu_name()},
            "quality": quality(sets, image, prompt)}


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    # a fresh cache: the export below is timed from scratch, and every graph runtime then reuses its graphs
    os.environ["SAMCL_CACHE_DIR"] = tempfile.mkdtemp(prefix="samcl-bench-cache-")
    runtimes = ["torch float32", "torch bfloat16", "onnxruntime float32"]
    if installed("openvino"):
        runtimes.append(f"openvino {'bfloat16' if native_bf16() else 'float32'}")
    reference = vit_b_backbone(args.size)
    image, prompt = test_image(reference, 0)
    start = time.perf_counter()
    cached_graphs(reference, config_for(reference.site), reference.default_selector_block)
    export_seconds = time.perf_counter() - start
    sets = samcl_sets(args.size, runtimes)
    functions = {"transformers SamModel float32": lambda: transformers_sam(reference.model, image, prompt,
                                                                           reference.preprocess)}
    report = {"config": {"image_size": reference.image_size, "threads": args.threads, "repeats": args.repeats,
                         "torch": torch.__version__, "native_bf16": native_bf16(), "cpu": cpu_name(),
                         "load_before": os.getloadavg()}, "export_seconds": export_seconds}
    if installed("openvino"):
        with tempfile.TemporaryDirectory() as folder:
            bare, hint = bare_openvino(reference, Path(folder), args.threads)
            report["config"]["openvino_bare_hint"] = hint
            functions["bare SAM on OpenVINO"] = lambda: bare(image, prompt)
    functions.update({f"samcl {name}": (lambda s=s: s.segment([image], [prompt])) for name, s in sets.items()})
    predictors = {name: s.predictor() for name, s in sets.items()}
    other = Prompt.of(prompt.points[:1] + 5)
    for name, predictor in predictors.items():
        predictor.set_image(image, force=sets[name].domains[0])
        functions[f"samcl {name} prompt-only re-run"] = lambda p=predictor: p.predict(other.points, other.labels)
    times = interleaved(functions, args.repeats)
    report["seconds"] = times
    base = statistics.median(times["transformers SamModel float32"]["cpu"])
    report["cpu_ratio_to_transformers"] = {k: statistics.median(v["cpu"]) / base for k, v in times.items()}
    if "bare SAM on OpenVINO" in times:
        bare_cpu = statistics.median(times["bare SAM on OpenVINO"]["cpu"])
        report["cpu_ratio_to_bare_openvino"] = {k: statistics.median(v["cpu"]) / bare_cpu for k, v in times.items()
                                                if k.startswith("samcl openvino")}
    report["config"]["load_after"] = os.getloadavg()
    return report


def show(report: dict) -> None:
    c = report["config"]
    print(f"CPU: {c['cpu']}")
    print(f"SAM ViT-B config, {c['image_size']} px, random weights; {c['threads']} thread(s); {c['repeats']} timed "
          f"call(s) after a warm-up, interleaved; torch {c['torch']}; native bf16: {c['native_bf16']}; "
          f"bare OpenVINO hint: {c.get('openvino_bare_hint', '-')}; load {c['load_before']} -> {c['load_after']}")
    print(f"export of the three graphs (once per base, into an empty cache): {report['export_seconds']:.1f} s wall\n")
    print(f"{'':<48}{'CPU s':>9}{'wall s':>9}{'/ transformers':>16}")
    for name, t in report["seconds"].items():
        print(f"{name:<48}{statistics.median(t['cpu']):>9.2f}{statistics.median(t['wall']):>9.2f}"
              f"{report['cpu_ratio_to_transformers'][name]:>16.3f}")
    for name, value in report.get("cpu_ratio_to_bare_openvino", {}).items():
        print(f"{name} / bare SAM on OpenVINO: {value:.3f}" + ("  (goal <= 1.05)" if "re-run" not in name else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=None, help="input size in pixels (default: ViT-B's 1024)")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per row (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quality", action="store_true", help="only the logits of each runtime against torch "
                        "float32's (predictor, one prompt): max difference and mask IoU")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.quality:
        report = quality_only(args)
        print(json.dumps(report) if args.json else f"CPU: {report['config']['cpu']}, {report['config']['image_size']}"
              " px, against torch float32:\n" + "\n".join(
                  f"  {name:<22} max logit diff {q['max_logit_diff']:.4f} (max |logit| {q['max_abs_logit']:.2f}), "
                  f"mask IoU {q['mask_iou']:.4f}" for name, q in report["quality"].items()))
        return 0
    try:
        report = run(args)
    finally:  # the fresh graph cache `run` made
        shutil.rmtree(os.environ["SAMCL_CACHE_DIR"], ignore_errors=True)
    print(json.dumps(report)) if args.json else show(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
