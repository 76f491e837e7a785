"""The inference engine: the one data path from images and prompts to masks, for `SAMCL.segment`, the predictor,
the baselines and the benchmark.

    images -> prefix (blocks 0..s, cached)  -> pooled -> selector -> class k per image (or a forced one, or
           base where no learned domain fits: the open-set fallback)
           -> heat(prompts) -> suffix (blocks s+1.., module rows of each image's class) -> decode per image

A batch may mix classes: the suffix runs once with per-sample module rows from the bank (`samcl.bank`), and
decoding is per image, so each result equals segmenting that image alone. Prompts are converted to the
model-input frame once (`InputPrompt`) and used by both the heat and the decoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .augmodule import Injection
from .backbone import tokens as batch_ops
from .bank import ModuleBank
from .metrics import mask_scores, mean_scores
from .moduleset import ModuleSet
from .prefix_cache import Identity, PrefixCache
from .progress import bar
from .prompts import render_reference_heat
from .types import Prediction, Prompt


@dataclass
class InputPrompt:
    """One image's prompt in model-input pixels: points 1 x N x 2, labels 1 x N, box 1 x 4 (each or None)."""

    points: torch.Tensor | None
    labels: torch.Tensor | None
    box: torch.Tensor | None

    @classmethod
    def of(cls, prompt: Prompt, geometry, device) -> "InputPrompt":
        points = labels = box = None
        if prompt.points is not None:
            points = geometry.coords_to_input(prompt.points)[None].to(device)
            labels = torch.from_numpy(prompt.labels)[None].to(device)
        if prompt.box is not None:
            box = geometry.boxes_to_input(prompt.box)[None].to(device)
        return cls(points, labels, box)


class Engine:
    """Runs a `ModuleSet` on its frozen backbone. Holds the module bank and the prefix cache; reads no file."""

    def __init__(self, backbone, module_set: ModuleSet, device: torch.device):
        self.backbone, self.module_set, self.device = backbone, module_set, device
        config = module_set.aug_config
        #: modules imported from the authors' code run their forward: stretched input, their heat (`samcl.reference`)
        self.reference = config is not None and config.heat_mode == "reference"
        self.cache = PrefixCache(backbone, module_set.selector_block, device, stretch=self.reference)
        self._bank: ModuleBank | None = None
        self.fallback = True  # the open-set answer: an image no learned domain fits runs on the base
        #: what runs the encoder and decoder: "torch" (the backbone's modules) or a graph runtime (`samcl.runtime`)
        self.runtime = "torch"

    def use_backbone(self, backbone, runtime: str) -> None:
        """Run the encoder and decoder on `backbone` (a `samcl.runtime.backbone.GraphBackbone`, which offers the
        calls made here); everything else on the path stays as it is. Cached prefixes were the old backbone's."""
        self.backbone, self.runtime = backbone, runtime
        self.cache_prefixes(self.cache.budget)

    @property
    def start_block(self) -> int:
        """The first block after the selector block: where the suffix starts."""
        return self.module_set.selector_block + 1

    def cache_prefixes(self, max_bytes: int) -> None:
        """Keep the prefix of images segmented again later (keyed by the image object, held while cached) within
        `max_bytes`; 0 turns the cache off. The protocol evaluates the same test images after every step."""
        self.cache = PrefixCache(self.backbone, self.module_set.selector_block, self.device, max_bytes,
                                 stretch=self.reference)

    # ------------------------------------------------------------------ classes and module rows
    def bank(self, indices: Sequence[int] = ()) -> ModuleBank:
        """All modules resident as stacked tensors: built once, rebuilt only when the set changed (a class
        added, or a module in `indices` replaced). Never reads a file."""
        bank, classes = self._bank, self.module_set
        if (bank is None or len(bank.owners) != len(classes.domains)
                or not all(bank.is_current(i, classes.module_for(i)) for i in set(indices) if i >= 0)):
            dtype = self.backbone.dtype if self.backbone.dtype.is_floating_point else torch.float32
            modules = [classes.module_for(i) for i in range(len(classes.domains))]
            bank = self._bank = ModuleBank(classes.aug_config, modules, self.device, dtype)
        return bank

    def forget_bank(self) -> None:
        """Rebuild the bank on next use (after the set was rolled back or replaced)."""
        self._bank = None

    @torch.no_grad()
    def select(self, pooled: torch.Tensor, fallback: bool | None = None) -> tuple[list[int], list[float | None]]:
        """B x 2D pooled features -> class index per image (-1: base: nothing learned yet, or no learned domain
        fits (the open-set fallback, unless `fallback` is False; None: the engine's `fallback`)) and the
        selector's score."""
        classes = self.module_set
        if classes.selector is None or not classes.domains:
            return [-1] * pooled.shape[0], [None] * pooled.shape[0]
        return classes.selector.choose(pooled, self.fallback if fallback is None else fallback)

    def resolve(self, domain: str | Sequence[str | None] | None, count: int) -> list[int | None]:
        """`segment`'s `domain` -> per image a forced class index, or None where the selector chooses."""
        if domain is None or isinstance(domain, str):
            return [None if domain is None else self.module_set.index_of(domain)] * count
        if len(domain) != count:
            raise ValueError(f"{count} images but {len(domain)} domains")
        return [None if d is None else self.module_set.index_of(d) for d in domain]

    def injection(self, indices: list[int], heat: torch.Tensor) -> Injection | None:
        """The adapter for a batch whose images chose `indices`: one module's rows of the bank (a view), or
        per-sample rows gathered for a mixed batch (base = the zero row). None if no image uses a module."""
        bank = self.bank(indices)
        rows = [bank.row(i) for i in indices]
        if not any(rows):
            return None
        return Injection(self.module_set.aug_config, bank.params(rows), heat)

    # ------------------------------------------------------------------ the data path
    def prefix(self, images: Sequence):
        """(prefix tokens of the batch, their resize geometries), from the cache where possible."""
        prefixes = self.cache.lookup([Identity(image) for image in images], lambda key: (key.obj, None))
        return PrefixCache.stack(prefixes), [p.geometry for p in prefixes]

    def choose(self, tokens, forced: list[int | None], fallback: bool | None = None
               ) -> tuple[list[int], list[float | None]]:
        """Each image's class: the forced one, else the selector's choice from the pooled prefix; and the
        selector's score (None where forced)."""
        chosen, scores = list(forced), [None] * len(forced)
        open_ = [j for j, k in enumerate(chosen) if k is None]
        if open_:
            pooled = self.backbone.pool_stats(tokens)
            picks, picked = self.select(pooled if len(open_) == len(chosen) else pooled[open_], fallback)
            for j, pick, score in zip(open_, picks, picked):
                chosen[j], scores[j] = pick, score
        return chosen, scores

    def heat(self, prompts: Sequence[InputPrompt]) -> torch.Tensor:
        """B x rows x cols heat of the batch's prompts (points padded with label -10, which paints nothing)."""
        count = max((p.points.shape[1] for p in prompts if p.points is not None), default=0)
        points = torch.zeros(len(prompts), count, 2, device=self.device)
        labels = torch.full((len(prompts), count), -10, dtype=torch.long, device=self.device)
        boxes = torch.full((len(prompts), 4), -1e6, device=self.device)  # far outside: paints nothing
        for j, prompt in enumerate(prompts):
            if prompt.points is not None:
                points[j, : prompt.points.shape[1]] = prompt.points[0]
                labels[j, : prompt.points.shape[1]] = prompt.labels[0]
            if prompt.box is not None:
                boxes[j] = prompt.box[0]
        if self.reference:  # the authors' rendering: points only, labels ignored
            return render_reference_heat(points, labels, self.backbone.grid, self.backbone.site.stride)
        has_box = any(p.box is not None for p in prompts)
        return self.backbone.heat(points, labels, boxes if has_box else None)

    def suffix(self, tokens, chosen: list[int], prompts: Sequence[InputPrompt]):
        """The image embeddings of the batch, each image through its class's module rows."""
        return self.backbone.suffix(tokens, self.start_block, self.injection(chosen, self.heat(prompts)))

    def decode(self, embedding, prompt: InputPrompt, geometry, multimask_output: bool, domain: str,
               return_logits: bool = False) -> Prediction:
        """One image's prompt through the decoder (per image, so results never depend on batch padding)."""
        low_res, iou = self.backbone.decode(embedding, prompt.points, prompt.labels, prompt.box, multimask_output)
        return self._prediction(low_res[0], iou[0], geometry, domain, return_logits)

    def decode_many(self, embeddings, prompts: Sequence[InputPrompt], geometries, multimask_output: bool,
                    domains: Sequence[str]) -> list[Prediction]:
        """`decode` for a batch (the server's): images whose prompts have the same shape (point count, box or not)
        go through the decoder together, so nothing is padded and each result equals its own `decode` up to float
        rounding (about 1e-5 in the logits); on a CPU a batch of 16 decodes in a third of the time."""
        groups: dict[tuple, list[int]] = {}
        for j, prompt in enumerate(prompts):
            shape = (0 if prompt.points is None else prompt.points.shape[1], prompt.box is not None)
            groups.setdefault(shape, []).append(j)
        out: list = [None] * len(prompts)
        for members in groups.values():
            def joined(name):
                parts = [getattr(prompts[j], name) for j in members]
                return None if parts[0] is None else torch.cat(parts)
            low_res, iou = self.backbone.decode(batch_ops.map_batch(lambda t: t[members], embeddings),
                                                joined("points"), joined("labels"), joined("box"), multimask_output)
            for k, j in enumerate(members):
                out[j] = self._prediction(low_res[k], iou[k], geometries[j], domains[j])
        return out

    @staticmethod
    def _prediction(low_res, iou, geometry, domain: str, return_logits: bool = False) -> Prediction:
        """One image's decoder output (M x h x w logits, M IoU) at its original size."""
        full = geometry.logits_to_original(low_res[None].float())[0]
        return Prediction(masks=(full > 0).cpu().numpy(), scores=iou.float().cpu().numpy(), domain=domain,
                          low_res=low_res, logits=full.cpu().numpy() if return_logits else None)

    @torch.no_grad()
    def segment(self, images: Sequence, prompts: Sequence[Prompt], multimask_output: bool = False,
                domain: str | Sequence[str | None] | None = None, return_logits: bool = False,
                fallback: bool | None = None) -> list[Prediction]:
        """See `SAMCL.segment`."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        forced = self.resolve(domain, len(images))
        tokens, geometries = self.prefix(images)
        chosen, scores = self.choose(tokens, forced, fallback)
        inputs = [InputPrompt.of(p, g, self.device) for p, g in zip(prompts, geometries)]
        embeddings = self.suffix(tokens, chosen, inputs)
        results = [self.decode(batch_ops.take(embeddings, slice(j, j + 1)), inputs[j], geometries[j],
                               multimask_output, self.module_set.domain_name(chosen[j]), return_logits)
                   for j in range(len(images))]
        for result, score in zip(results, scores):
            result.selector_score = score
        return results

    def evaluate(self, samples: Sequence, domain: str | None = None, batch_size: int = 8, progress: bool = False,
                 force: str | None = None) -> dict:
        """Mean IoU / F1 / MAE over `samples` with their fixed points; `domain` (the true class's name, "base"
        for the base class) also gives selector accuracy; `force` runs one class for every image (oracle)."""
        scores, correct, chosen = [], 0, {}
        for start in bar(range(0, len(samples), batch_size), desc=f"eval {domain or ''}".strip(),
                          progress=progress, leave=False):
            batch = [samples[i] for i in range(start, min(start + batch_size, len(samples)))]
            prompts = [Prompt.of(s.points, s.labels) for s in batch]
            for sample, result in zip(batch, self.segment([s.image for s in batch], prompts, domain=force)):
                scores.append(mask_scores(result.masks[0], sample.mask))
                chosen[result.domain] = chosen.get(result.domain, 0) + 1
                correct += result.domain == domain
        out = {**mean_scores(scores), "images": len(scores), "chosen": chosen}
        if domain is not None and force is None:
            out["selector_accuracy"] = correct / max(len(scores), 1)
        return out
