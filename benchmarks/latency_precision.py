"""Part 5 of `benchmarks/latency.py` (run it as `latency.py --precision [--size 512] [--int8]`): SAMCL in each
inference precision against transformers' own `SamModel` in float32, measured in the same run, one thread.

    nice -n 10 python benchmarks/latency.py --precision --repeats 1          # SAM ViT-B config, 1024 px
    nice -n 10 python benchmarks/latency.py --precision --size 512 --int8    # quick mode, with the int8 experiment

CPU time (this process's) is the figure to read on shared cores. Ratios: SAMCL {float32, bfloat16, int8} segment
/ transformers float32 forward; the predictor's prompt-only re-run (adapted blocks, neck, decoder) in each
precision / the same transformers forward and / the float32 re-run; the quality of each precision's masks
against float32's (max logit difference, mask IoU) on the same image and points.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from latency import add_random_domains, interleaved, line, ratio, test_image, vit_b_backbone

from samcl import SAMCL, Prompt
from samcl.backbone import SamBackbone
from samcl.inference.precision import native_bf16


def int8_backbone(size: int | None, seed: int = 0) -> SamBackbone:
    """The ViT-B backbone with the image encoder's linear layers dynamically quantised to int8."""
    return quantize_encoder_int8(vit_b_backbone(size, seed))


def quantize_encoder_int8(backbone):
    """The image encoder's linear layers dynamically quantised to int8, in place (an experiment:
    `torch.ao.quantization.quantize_dynamic`, deprecated in PyTorch, is not part of samcl)."""
    import warnings

    backbone.identity()  # of the float32 weights, as `set_precision` does
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        backbone.model.vision_encoder = quantize_dynamic(backbone.model.vision_encoder, {torch.nn.Linear},
                                                         dtype=torch.qint8)
    backbone.precision = "int8"
    return backbone


@torch.no_grad()
def transformers_sam(model, image, prompt, processor=SamBackbone.preprocess):
    """transformers' own `SamModel` end to end (its own encoder and attention), float32: preprocess as SAMCL
    does, one forward with the points, the mask upscaled to the original size."""
    pixels, geometry = processor(image)
    points = geometry.coords_to_input(prompt.points)[None, None].to(pixels.device)
    labels = torch.from_numpy(prompt.labels)[None, None].to(pixels.device)
    out = model(pixel_values=pixels[None], input_points=points, input_labels=labels, multimask_output=False)
    return (geometry.logits_to_original(out.pred_masks[:, 0, 0:1].float().cpu())[0] > 0).numpy()


def precision_comparison(args, show) -> dict:
    """5. SAMCL per precision / transformers' SamModel float32, batch 1, with a module selected; the same
    for the predictor's prompt-only re-run; the quality of each precision's masks against float32's."""
    torch.set_num_threads(args.threads)
    variants = {"float32": vit_b_backbone(args.size)}
    variants["bfloat16"] = vit_b_backbone(args.size)
    variants["bfloat16"].set_precision("bfloat16")  # the weights cast once, here
    if args.int8:
        variants["int8"] = int8_backbone(args.size)
    sets = {}
    for name, backbone in variants.items():
        sets[name] = SAMCL.create(backbone, None, device="cpu")
        add_random_domains(sets[name], 2, samples_per_domain=4)  # same seeds: the same modules and selector
    reference = variants["float32"]
    image, prompt = test_image(reference, 0)
    report = {"config": {"image_size": reference.image_size, "threads": args.threads, "repeats": args.repeats,
                         "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                         "native_bf16": native_bf16(), "load_before": os.getloadavg()}}
    functions = {"transformers SamModel float32": lambda: transformers_sam(reference.model, image, prompt,
                                                                           reference.preprocess)}
    functions.update({f"SAMCL {name}": (lambda s=s: s.segment([image], [prompt])) for name, s in sets.items()})
    times = interleaved(functions, args.repeats, warmup=args.size is not None and args.size <= 512)
    report["segment"] = {"seconds": times, "ratio": {name: ratio(times, f"SAMCL {name}", "transformers SamModel "
                                                                  "float32") for name in sets}}
    show(report, "precision segment")

    predictors = {name: s.predictor() for name, s in sets.items()}
    for predictor in predictors.values():
        predictor.set_image(image, force=sets["float32"].domains[0])
    other = Prompt.of(prompt.points[:1] + 5)
    functions = {f"prompt-only {name}": (lambda p=p: p.predict(other.points, other.labels))
                 for name, p in predictors.items()}
    times_prompt = interleaved(functions, args.repeats, warmup=False)
    times_prompt["transformers SamModel float32"] = times["transformers SamModel float32"]
    report["prompt only"] = {"seconds": times_prompt,
                             "ratio": {name: ratio(times_prompt, f"prompt-only {name}", "transformers SamModel float32")
                                       for name in sets},
                             "ratio_to_float32": {name: ratio(times_prompt, f"prompt-only {name}", "prompt-only float32")
                                                  for name in sets}}
    show(report, "precision prompt")

    logits = {name: p.predict(prompt.points, prompt.labels, return_logits=True)[0][0]
              for name, p in predictors.items()}
    quality = {}
    for name, value in logits.items():
        a, b = logits["float32"] > 0, value > 0
        quality[name] = {"max_logit_diff": float(np.abs(value - logits["float32"]).max()),
                         "max_abs_logit": float(np.abs(logits["float32"]).max()),
                         "mask_iou": float((a & b).sum() / max((a | b).sum(), 1)),
                         "foreground": float(a.mean())}
    report["quality"] = quality
    report["augmodule_ms"] = augmodule_cost(sets["float32"], reference)
    report["config"]["load_after"] = os.getloadavg()
    show(report, "precision quality")
    return report


def augmodule_cost(samcl: SAMCL, backbone) -> dict:
    """Milliseconds of one adapted block's SLoRA delta on the full token grid, with the module's math in float32
    and in bfloat16 (the input arrives in the encoder's dtype either way), against one whole encoder block."""
    from latency import per_call

    from samcl.method import Injection

    rows, cols = backbone.grid
    x = torch.randn(1, rows * cols, backbone.hidden_size)
    heat = torch.zeros(1, rows, cols)
    block = samcl.aug_config.adapted_blocks[0]
    out = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        params = {k: v.to(dtype) for k, v in samcl.engine.bank([0]).params([1]).items()}
        injection = Injection(samcl.aug_config, params, heat)
        out[name] = per_call(lambda i=injection: i.block_delta(block, x.to(torch.bfloat16)), calls=5) * 1000
    layer = backbone.model.vision_encoder.layers[block]
    hidden = x.view(1, rows, cols, -1)
    with torch.no_grad():
        out["encoder block float32"] = per_call(lambda: backbone._run_block(layer, hidden, block, None), calls=1) * 1000
    return out


def print_precision(report: dict, key: str) -> None:
    c = report["config"]
    if key == "precision segment":
        print(f"5. precision, SAM ViT-B config at {c['image_size']} px, batch 1, {c['threads']} thread(s), "
              f"{c['repeats']} timed call(s); torch {c['torch']}, CPU capability {c['cpu_capability']}, native "
              f"bfloat16: {c['native_bf16']}; load average before {c['load_before'][0]:.2f}")
        for name, r in report["segment"]["ratio"].items():
            line(f"   segment, SAMCL {name}", {k: v for k, v in report["segment"]["seconds"].items()
                                            if k in (f"SAMCL {name}", "transformers SamModel float32")},
                 r, "SAMCL / transformers SamModel float32", "(goal bfloat16 <= 0.30)" if name == "bfloat16" else "")
    elif key == "precision prompt":
        p = report["prompt only"]
        for name, r in p["ratio"].items():
            line(f"   prompt-only re-run, {name}", {k: v for k, v in p["seconds"].items()
                                                   if k in (f"prompt-only {name}", "transformers SamModel float32")},
                 r, "re-run / transformers SamModel float32 (full)")
            print(f"{'':<34} re-run {name} / re-run float32: CPU median {p['ratio_to_float32'][name]['cpu median']:.3f}")
    else:
        for name, q in report["quality"].items():
            print(f"   {name} vs float32 masks: max |logit diff| {q['max_logit_diff']:.4g} (max |logit| "
                  f"{q['max_abs_logit']:.4g}), mask IoU {q['mask_iou']:.4f}, foreground {q['foreground']:.3f}")
        a = report["augmodule_ms"]
        print(f"   AugModule delta of one block: float32 {a['float32']:.2f} ms, bfloat16 {a['bfloat16']:.2f} ms "
              f"(one float32 encoder block {a['encoder block float32']:.0f} ms)")
        print(f"   load average after {c['load_after'][0]:.2f}")
