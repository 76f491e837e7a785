"""SAMCL inference cost against bare SAM, as ratios measured in the same run (random weights, no download).

    python benchmarks/latency.py                          # SAM ViT-B config (1024 px), batch 1, 3 repeats
    python benchmarks/latency.py --size 512 --repeats 5   # a quicker look: same model, smaller input
    python benchmarks/latency.py --json                   # one JSON object instead of the table
    nice -n 10 python benchmarks/latency.py --precision --repeats 1   # 5. only: precisions, ViT-B at 1024 px
    python benchmarks/latency.py --precision --size 512 --repeats 1   # 5. quick mode

Prints, each as time of SAMCL / time of its baseline, both measured interleaved in this run (median and min of
the repeats), in wall time and in this process's CPU time (on cores shared with other work, wall time swings
with their load; CPU time, with one thread, much less):
  1. latency, batch 1: `SAMCL.segment` (prefix, selection from its pooled output, suffix with the chosen
     module and the prompt heat, decoder) / bare SAM (`SamBackbone.encode` + `decode` with no module). Both
     include the same preprocessing and the upscaling of the mask to the original size.      goal <= 1.05
  2. throughput, batch B: single-module batch / mixed-domain batch (every image its own module, one pass).
                                                                                              goal >= 0.90
  3. predictor, after `set_image`: prompt-only re-run (`predict`) / full run (`set_image` + `predict`), for an
     image whose domain has a module (the suffix depends on the points) and for the base model (decoder only).
  4. bytes per module as the store saves it, float32 vs float16.
  5. (--precision, alone) SAMCL in each inference precision (float32, bfloat16; int8 dynamic quantisation of the
     encoder's linear layers with --int8, an experiment) / transformers' own `SamModel` forward in float32, and
     the predictor's prompt-only re-run in each precision / the same; with the max logit difference and the IoU
     between float32's masks and each other precision's.                                goal bfloat16 <= 0.30
and, to show where SAMCL's extra time goes, the cost of selection, heat rendering and picking module rows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import SamConfig

from samcl import SAMCL, Prompt, SelectorConfig
from samcl.backbone import SamBackbone
from samcl.inference import InputPrompt
from samcl.method import AugModule, AugModuleSize, config_for
from samcl.selector import FeatureBuffer, MlpSelector, SelectorNet
from samcl.store import DomainEntry


def vit_b_backbone(size: int | None = None, seed: int = 0) -> SamBackbone:
    """SAM ViT-B (transformers' SamConfig defaults) with random weights; `size` overrides the input size."""
    config = SamConfig()
    if size is not None:
        prompt = {k: v for k, v in config.prompt_encoder_config.to_dict().items() if k != "image_embedding_size"}
        config = SamConfig(vision_config={**config.vision_config.to_dict(), "image_size": size},
                           prompt_encoder_config={**prompt, "image_size": size},  # derives the embedding size
                           mask_decoder_config=config.mask_decoder_config.to_dict())
    return SamBackbone.from_config(config, seed=seed).eval()


def random_module(samcl: SAMCL, seed: int, scale: float = 0.02) -> AugModule:
    """An AugModule with every tensor moved off its initial value (so none is a no-op zero)."""
    generator = torch.Generator().manual_seed(seed)
    module = AugModule(samcl.aug_config, generator=generator)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * scale)
    return module.requires_grad_(False)


def add_random_domains(samcl: SAMCL, count: int, samples_per_domain: int = 1, seed: int = 0,
                       spread: float = 1.0) -> None:
    """`count` domains with random modules, a buffer of `samples_per_domain` embeddings each (class centres
    spread apart by `spread`, unit noise) and an untrained selector over them."""
    dim = samcl.backbone.hidden_size
    generator = torch.Generator().manual_seed(seed)
    start = len(samcl.module_set.domains)
    for k in range(start, start + count):
        name = f"domain{k:04d}"
        samcl.module_set.modules[name] = random_module(samcl, seed + k)
        samcl.module_set.domains.append(DomainEntry(name, "module"))
    total = len(samcl.module_set.domains)
    centres = torch.randn(total, dim, generator=generator) * spread
    labels = torch.arange(total).repeat_interleave(samples_per_domain)
    embeddings = centres[labels] + torch.randn(len(labels), dim, generator=generator)
    torch.manual_seed(seed)
    config = SelectorConfig(kind="mlp", samples_per_domain=samcl.module_set.selector_config.samples_per_domain)
    samcl.module_set.selector_config = config  # the paper's MLP and its buffer: the selector these figures time
    samcl.module_set.selector = MlpSelector(config, dim, SelectorNet(dim, total).eval(),
                                            FeatureBuffer(dim, embeddings, labels))


def test_image(backbone: SamBackbone, seed: int) -> tuple[np.ndarray, Prompt]:
    """A random non-square image (3:4, so the padding path runs) and three points inside it."""
    rng = np.random.default_rng(seed)
    width = backbone.image_size
    height = width * 3 // 4
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    points = np.stack([rng.uniform(0, width, 3), rng.uniform(0, height, 3)], 1)
    return image, Prompt.of(points)


@torch.no_grad()
def bare_sam(backbone: SamBackbone, images, prompts) -> list[np.ndarray]:
    """SAM without SAMCL: preprocess, encode, decode (per image, as segment does), masks at the original size; on
    the backbone's device (the decoder in float32, as segment runs it)."""
    device = next(backbone.parameters()).device
    tensors, geometries = zip(*(backbone.preprocess(image) for image in images))
    embeddings = backbone.encode(torch.stack(tensors).to(device)).float()
    out = []
    for j, (prompt, geometry) in enumerate(zip(prompts, geometries)):
        points = geometry.coords_to_input(prompt.points)[None].to(device)
        labels = torch.from_numpy(prompt.labels)[None].to(device)
        low_res, _ = backbone.decode(embeddings[j:j + 1], points, labels)
        out.append((geometry.logits_to_original(low_res.float().cpu())[0] > 0).numpy())
    return out


def interleaved(functions: dict[str, callable], repeats: int, warmup: bool = True) -> dict[str, dict]:
    """Wall and CPU seconds per call of each function, alternating between them (one warm-up call each first).
    CPU time (this process's) hardly moves when other processes take the cores; wall time does."""
    for function in functions.values() if warmup else ():
        function()
    times = {name: {"wall": [], "cpu": []} for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            wall, cpu = time.perf_counter(), time.process_time()
            function()
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
    return times


def ratio(times: dict[str, dict], numerator: str, denominator: str) -> dict:
    """Ratios of medians and of minima, for wall and for CPU time."""
    return {f"{clock} {stat.__name__}": stat(times[numerator][clock]) / stat(times[denominator][clock])
            for clock in ("wall", "cpu") for stat in (statistics.median, min)}


def per_call(function, calls: int = 50) -> float:
    function()
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls


def module_bytes(backbone: SamBackbone) -> dict:
    """Save one random module with the store's own save path in float32 and in float16."""
    out = {"parameters": config_for(backbone.site).num_parameters}
    with tempfile.TemporaryDirectory() as folder:
        for dtype in ("float32", "float16"):
            samcl = SAMCL.create(backbone, Path(folder) / dtype, dtype=dtype, device="cpu")
            add_random_domains(samcl, 1)
            with samcl.store.lock():
                manifest = samcl.store.save(samcl.module_set)
            entry = manifest["domains"][0]
            out[dtype] = {"bytes": entry["bytes"], "file_bytes": (Path(folder) / dtype / entry["file"]).stat().st_size}
    size = AugModuleSize.of(config_for(backbone.site))
    out["bytes_without_layernorm"] = size.bytes_without_layernorm
    return out


def run(args, show=lambda report, key: None) -> dict:
    """Measure every part; `show(report, key)` is called as each part completes."""
    torch.set_num_threads(args.threads)
    backbone = vit_b_backbone(args.size)
    samcl = SAMCL.create(backbone, None, device="cpu")
    add_random_domains(samcl, max(args.batch, 2), samples_per_domain=4)
    names = samcl.domains
    image, prompt = test_image(backbone, 0)
    report = {"config": {"image_size": backbone.image_size, "hidden_size": backbone.hidden_size,
                         "blocks": backbone.num_blocks, "selector_block": samcl.selector_block,
                         "adapted_blocks": list(samcl.aug_config.adapted_blocks), "threads": args.threads,
                         "repeats": args.repeats, "batch": args.batch, "torch": torch.__version__}}
    show(report, "config")

    # 1. batch-1 latency; the selector picks among len(names) random modules
    times = interleaved({"bare SAM": lambda: bare_sam(backbone, [image], [prompt]),
                         "SAMCL": lambda: samcl.segment([image], [prompt])}, args.repeats)
    report["latency"] = {"seconds": times, "ratio": ratio(times, "SAMCL", "bare SAM")}

    # where SAMCL's extra work goes (each part outside the encoder, timed alone)
    tokens = backbone.prefix(backbone.preprocess(image)[0][None], samcl.selector_block)
    geometry = backbone.preprocess(image)[1]
    inputs = [InputPrompt.of(prompt, geometry, samcl.device)]
    heat = samcl.engine.heat(inputs)
    rows = list(range(args.batch))
    report["parts_seconds"] = {
        "pool + select": per_call(lambda: samcl.engine.route(backbone.pool_stats(tokens))),
        "heat rendering": per_call(lambda: samcl.engine.heat(inputs)),
        "module rows + heat features, 1 image": per_call(lambda: samcl.engine.injection([0], heat)),
        f"the same, {args.batch} images mixed": per_call(
            lambda: samcl.engine.injection(rows, heat.expand(args.batch, -1, -1))),
    }
    show(report, "latency")

    # 4. storage
    report["module_bytes"] = module_bytes(backbone)
    show(report, "module_bytes")

    # 3. predictor caching
    predictor = samcl.predictor()
    other = Prompt.of(prompt.points[:1] + 5)
    for domain in (names[0], "base"):
        def full(domain=domain):
            predictor.set_image(image, force=domain)
            predictor.predict(other.points, other.labels)

        times = interleaved({"full": full, "prompt only": lambda: predictor.predict(prompt.points, prompt.labels)},
                            args.repeats)
        key = f"predictor ({'module' if domain != 'base' else 'base class'})"
        report[key] = {"seconds": times, "ratio": ratio(times, "prompt only", "full")}
        show(report, key)

    # 2. batch throughput: every image its own module vs one module for all
    batch_samcl = samcl
    if args.batch_image_size not in (0, None, backbone.image_size):
        batch_samcl = SAMCL.create(vit_b_backbone(args.batch_image_size), None, device="cpu")
        add_random_domains(batch_samcl, max(args.batch, 2), samples_per_domain=4)
    images, prompts = zip(*(test_image(batch_samcl.backbone, seed) for seed in range(args.batch)))
    mixed = [names[j % len(names)] for j in range(args.batch)]
    times = interleaved({"single-module batch": lambda: batch_samcl.segment(images, prompts, force=names[0]),
                         "mixed-domain batch": lambda: batch_samcl.segment(images, prompts, force=mixed)},
                        args.batch_repeats, warmup=batch_samcl is not samcl)
    report["batch"] = {"seconds": times, "image_size": batch_samcl.backbone.image_size,
                       "throughput_ratio": ratio(times, "single-module batch", "mixed-domain batch")}
    show(report, "batch")
    return report


def line(label, times, ratio, kind="ratio", goal=""):
    """Wall and CPU medians (and minima) of each timed function, then their ratio."""
    for clock in ("wall", "cpu"):
        parts = "  ".join(f"{name} {statistics.median(t[clock]) * 1000:8.1f} ms (min {min(t[clock]) * 1000:.1f})"
                          for name, t in times.items())
        print(f"{label if clock == 'wall' else '':<34} {clock:>4}: {parts}")
    print(f"{'':<34} {kind}: wall median {ratio['wall median']:.3f}, min {ratio['wall min']:.3f}; "
          f"CPU median {ratio['cpu median']:.3f}, min {ratio['cpu min']:.3f}  {goal}")


def print_part(report: dict, key: str) -> None:
    c = report["config"]
    if key == "config":
        print(f"SAM config: {c['image_size']} px, D = {c['hidden_size']}, {c['blocks']} blocks, selector block "
              f"{c['selector_block']}, adapted blocks {c['adapted_blocks']}; random weights; torch {c['torch']}, "
              f"{c['threads']} threads; {c['repeats']} timed calls after a warm-up call (batch part: see there)\n")
    elif key == "latency":
        line("1. latency, batch 1", report["latency"]["seconds"], report["latency"]["ratio"],
             "SAMCL / bare SAM", "(goal <= 1.05)")
        print("   SAMCL's parts outside the encoder: " + ", ".join(
            f"{name} {seconds * 1000:.2f} ms" for name, seconds in report["parts_seconds"].items()))
    elif key == "module_bytes":
        m = report["module_bytes"]
        f32, f16 = m["float32"], m["float16"]
        print(f"4. bytes per module ({m['parameters']:,} parameters): float32 {f32['bytes']:,} B (file "
              f"{f32['file_bytes']:,} B), float16 {f16['bytes']:,} B (file {f16['file_bytes']:,} B)\n"
              f"   float16 / float32 = {f16['bytes'] / f32['bytes']:.3f} (files "
              f"{f16['file_bytes'] / f32['file_bytes']:.3f}); without LayerNorms (the paper's count) "
              f"{m['bytes_without_layernorm']:,} B in float32")
    elif key.startswith("predictor"):
        line(f"3. {key}", report[key]["seconds"], report[key]["ratio"], "prompt-only re-run / full run")
    elif key == "batch":
        b = report["batch"]
        line(f"2. batch of {c['batch']}, {b['image_size']} px ({len(next(iter(b['seconds'].values()))['wall'])} "
             "timed)",
             b["seconds"], b["throughput_ratio"], "throughput mixed / single", "(goal >= 0.90)")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--size", type=int, default=None, help="input size in pixels (default: the config's, 1024)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per variant (after one warm-up)")
    parser.add_argument("--batch", type=int, default=8, help="batch size for the mixed vs single comparison")
    parser.add_argument("--batch-repeats", type=int, default=None, help="repeats for the batch part (default: "
                                                                          "--repeats, at most 2)")
    parser.add_argument("--batch-image-size", type=int, default=512,
                        help="input size for the batch part (default 512: a batch of 8 at 1024 px holds about 12 GB "
                             "of attention maps and takes minutes per call on a CPU); 0 = --size")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (on cores shared with other "
                        "work 1 is much faster: threads wait for each other)")
    parser.add_argument("--precision", action="store_true", help="run only part 5, the precision comparison")
    parser.add_argument("--int8", action="store_true", help="with --precision: int8 dynamic quantisation too")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.precision:  # part 5 alone (its own file: benchmarks/latency_precision.py)
        from latency_precision import precision_comparison, print_precision

        report = precision_comparison(args, show=(lambda report, key: None) if args.json else print_precision)
        if args.json:
            print(json.dumps(report))
        return 0
    if args.batch_repeats is None:
        args.batch_repeats = min(args.repeats, 2)
    report = run(args, show=(lambda report, key: None) if args.json else print_part)
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
