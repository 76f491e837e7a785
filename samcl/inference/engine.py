"""The inference engine: the one data path from images and prompts to masks. `SAMCL.segment`, the predictor, the
server, the baselines and the benchmark are front ends over two calls:

    prepared = engine.prepare(images)            # prefix (blocks 0..s) and pooled features, from the cache
    results = engine.run(prepared, prompts)      # route, heat, suffix with each image's module rows, decode

    run: pooled -> selector -> domain k per image (or a forced one, or base where no learned domain fits: the
         open-set fallback) -> heat(prompts) -> suffix (blocks s+1.., module rows of each image's domain; an image
         without a module reuses its prompt-independent embedding) -> decode -> complete `Prediction`s

A batch may mix domains: the suffix runs once with per-sample module rows from the bank (`samcl.method.bank`), and
decoding is per image (or, for the server, per prompt shape), so each result equals segmenting that image
alone. Prompts are converted to the model-input frame once (`InputPrompt`) and used by the heat and the decoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..backbone import tokens as batch_ops
from ..io.progress import bar
from ..method.augmodule import Injection
from ..method.bank import ModuleBank
from ..method.prompts import render_reference_heat
from ..metrics import mask_scores, mean_scores
from ..store.moduleset import ModuleSet
from ..types import Prediction, Prompt
from .prefix_cache import ByObject, PrefixCache, PreparedImage
from .refine import check_refine, heat_prompt, prompt_key, prompt_of_key


@dataclass
class InputPrompt:
    """One image's prompt in model-input pixels: points 1 x N x 2, labels 1 x N, box 1 x 4, mask 1 x 1 x h x w
    (low-res logits of a previous prediction, SamPredictor's `mask_input`), each or None."""

    points: torch.Tensor | None
    labels: torch.Tensor | None
    box: torch.Tensor | None
    mask: torch.Tensor | None = None

    @classmethod
    def of(cls, prompt: Prompt, geometry, device, mask=None) -> "InputPrompt":
        points = labels = box = None
        if prompt.points is not None:
            points = geometry.coords_to_input(prompt.points)[None].to(device)
            labels = torch.from_numpy(prompt.labels)[None].to(device)
        if prompt.box is not None:
            box = geometry.boxes_to_input(prompt.box)[None].to(device)
        if mask is not None:
            mask = torch.as_tensor(mask, dtype=torch.float32).to(device)
            mask = mask.reshape(1, 1, *mask.shape[-2:])
        return cls(points, labels, box, mask)


class Engine:
    """Runs a `ModuleSet` on its frozen backbone. Holds the module bank and the prefix cache; reads no file."""

    def __init__(self, backbone, module_set: ModuleSet, device: torch.device):
        self.backbone, self.module_set, self.device = backbone, module_set, device
        config = module_set.aug_config
        #: modules imported from the authors' code run their forward: stretched input, their heat (`samcl.reference`)
        self.reference = config is not None and config.heat_mode == "reference"
        self.cache = PrefixCache(backbone, module_set.selector_block, device, stretch=self.reference, evict="lru")
        self._bank: ModuleBank | None = None
        self.fallback = True  # the open-set answer: an image no learned domain fits runs on the base
        #: what runs the encoder and decoder: "torch" (the backbone's modules) or a graph runtime (`samcl.runtime`)
        self.runtime = "torch"

    def use_backbone(self, backbone, runtime: str) -> None:
        """Run the encoder and decoder on `backbone` (a `samcl.runtime.backbone.GraphBackbone`, which offers the
        calls made here); everything else on the path stays as it is. Cached prefixes were the old backbone's."""
        self.backbone, self.runtime = backbone, runtime
        self.cache_prefixes(self.cache.budget, evict=self.cache.evict)

    @property
    def start_block(self) -> int:
        """The first block after the selector block: where the suffix starts."""
        return self.module_set.selector_block + 1

    def cache_prefixes(self, max_bytes: int, *, evict: str = "lru") -> None:
        """Keep prepared images for later calls within `max_bytes`; 0 keeps none. Images are keyed by `prepare`'s
        keys (default: the image object, held while cached). `evict`: "lru" (the least recently used make room),
        or "keep" (what is kept stays: for a fixed set of images visited in turn, such as the protocol's test
        images after every step, which lru would evict just before each is needed again)."""
        self.cache = PrefixCache(self.backbone, self.module_set.selector_block, self.device, max_bytes,
                                 stretch=self.reference, evict=evict)

    def adopt_cache(self, other: "Engine") -> None:
        """Take `other`'s prepared images when they are valid here (the same base at the same precision, the same
        selector block and input frame): a new generation of the same store keeps the server's uploads. What an
        entry holds depends on the base alone, never on the modules or the selector."""
        same_base = (other.module_set.backbone == self.module_set.backbone
                     and other.backbone.precision == self.backbone.precision
                     and getattr(other, "runtime", "torch") == getattr(self, "runtime", "torch"))
        if same_base and other.cache.stop_block == self.cache.stop_block and other.reference == self.reference:
            self.cache = other.cache
            self.cache.drop_heated()  # embeddings with the old set's modules

    # ------------------------------------------------------------------ domains and module rows
    def bank(self, indices: Sequence[int] = ()) -> ModuleBank:
        """All modules resident as stacked tensors: built once, rebuilt only when the set changed (a domain
        added, or a module in `indices` replaced). Never reads a file."""
        bank, module_set = self._bank, self.module_set
        if (bank is None or len(bank.owners) != len(module_set.domains)
                or not all(bank.is_current(i, module_set.module_for(i)) for i in set(indices) if i >= 0)):
            dtype = self.backbone.dtype if self.backbone.dtype.is_floating_point else torch.float32
            modules = [module_set.module_for(i) for i in range(len(module_set.domains))]
            bank = self._bank = ModuleBank(module_set.aug_config, modules, self.device, dtype)
        return bank

    def forget_bank(self) -> None:
        """Rebuild the bank on next use (after the set was rolled back or replaced)."""
        self._bank = None

    def resolve(self, force: str | Sequence[str | None] | None, count: int) -> list[int | None]:
        """`force` -> per image a forced domain index, or None where the selector chooses."""
        if force is None or isinstance(force, str):
            return [None if force is None else self.module_set.index_of(force)] * count
        if len(force) != count:
            raise ValueError(f"{count} images but {len(force)} domains")
        return [None if d is None else self.module_set.index_of(d) for d in force]

    @torch.no_grad()
    def route(self, pooled: torch.Tensor, forced: Sequence[int | None] | None = None,
              fallback: bool | None = None) -> tuple[list[int], list[float | None]]:
        """B x 2D pooled features -> each image's domain index (the forced one, else the selector's; -1: base:
        nothing learned yet, or no learned domain fits (the open-set fallback, unless `fallback` is False; None:
        the engine's `fallback`)) and the selector's score (None where forced or nothing was learned)."""
        forced = [None] * pooled.shape[0] if forced is None else list(forced)
        chosen, scores = list(forced), [None] * len(forced)
        open_ = [j for j, k in enumerate(chosen) if k is None]
        selector = self.module_set.selector
        if not open_:
            return chosen, scores
        if selector is None or not self.module_set.domains:
            return [-1 if k is None else k for k in chosen], scores
        picks, picked = selector.choose(pooled if len(open_) == len(chosen) else pooled[open_],
                                        self.fallback if fallback is None else fallback)
        for j, pick, score in zip(open_, picks, picked):
            chosen[j], scores[j] = pick, None if score is None else float(score)
        return chosen, scores

    def injection(self, indices: list[int], heat: torch.Tensor) -> Injection | None:
        """The adapter for a batch whose images chose `indices`: one module's rows of the bank (a view), or
        per-sample rows gathered for a mixed batch (base = the zero row). None if no image uses a module."""
        bank = self.bank(indices)
        rows = [bank.row(i) for i in indices]
        if not any(rows):
            return None
        return Injection(self.module_set.aug_config, bank.params(rows), heat)

    # ------------------------------------------------------------------ the data path
    def prepare(self, images: Sequence, keys: Sequence | None = None, *, keep: bool = True) -> list[PreparedImage]:
        """Each image's prefix, pooled features and geometry, in one prefix pass for those not cached.

        Arguments:
          images: H x W x 3 uint8 RGB arrays or PIL images, any sizes.
          keys: what the cache knows them by (default: the image objects themselves).
          keep: False computes them without caching (the caller holds them, as the predictor does).
        """
        if not keep:
            return self.cache.compute([(image, None) for image in images])
        keys = [ByObject(image) for image in images] if keys is None else list(keys)
        if len(keys) != len(images):
            raise ValueError(f"{len(images)} images but {len(keys)} keys")
        lookup = dict(zip(keys, images))
        return self.cache.lookup(keys, lambda key: (lookup[key], None))

    @torch.no_grad()
    def run(self, prepared: Sequence[PreparedImage], prompts: Sequence[Prompt], *, multimask_output: bool = False,
            force: str | Sequence[str | None] | None = None, fallback: bool | None = None,
            return_logits: bool = False, decode_by_shape: bool = False, mask_inputs: Sequence | None = None,
            refine: str = "all") -> list[Prediction]:
        """Prepared images and one prompt each -> one complete `Prediction` each (see `SAMCL.segment`).
        `decode_by_shape`: images whose prompts have the same shape go through the decoder together (the server:
        faster, equal to decoding alone up to float rounding, about 1e-5 in the logits). `mask_inputs`: per image
        a previous prediction's low-res logits (h x w, SamPredictor's `mask_input`) or None. `refine`: which part
        of each prompt heats the encoder (`samcl.inference.refine`); "all" (every point, the method as
        trained); another strategy keeps the embedding on the image, so a click that leaves its heat prompt
        unchanged runs the decoder alone."""
        if len(prepared) != len(prompts):
            raise ValueError(f"{len(prepared)} images but {len(prompts)} prompts")
        masks = [None] * len(prompts) if mask_inputs is None else list(mask_inputs)
        if len(masks) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(masks)} mask inputs")
        pooled = torch.stack([p.pooled for p in prepared])
        chosen, scores = self.route(pooled, self.resolve(force, len(prepared)), fallback)
        inputs = [InputPrompt.of(prompt, p.geometry, self.device, mask)
                  for prompt, p, mask in zip(prompts, prepared, masks)]
        embeddings = self.embed(prepared, chosen, prompts, refine)
        names = [self.module_set.domain_name(k) for k in chosen]
        if decode_by_shape:
            results = self.decode_many(embeddings, inputs, [p.geometry for p in prepared], multimask_output, names)
        else:
            results = [self.decode(embeddings[j], inputs[j], prepared[j].geometry, multimask_output, names[j],
                                   return_logits) for j in range(len(prepared))]
        for result, score in zip(results, scores):
            result.domain_score = score
        return results

    def embed(self, prepared: Sequence[PreparedImage], chosen: list[int], prompts: Sequence[Prompt],
              refine: str = "all") -> list:
        """Each image's embedding (a batch of one) for its domain and prompt: one suffix pass for the images that
        need one, each with its module rows (base: the zero row) and the heat of its heat prompt (`refine`).
        An image alone without a module reuses its prompt-independent embedding, computed once; under a
        strategy other than "all" an image with a module reuses the embedding of the same domain and heat
        prompt, kept on the image (`PrefixCache.attach_heated`)."""
        check_refine(refine)
        one = all(p is prepared[0] for p in prepared) and all(k == chosen[0] for k in chosen)
        if one and self.module_set.module_for(chosen[0]) is None:  # one image (or its prompts) on the base
            image = prepared[0]
            if image.unprompted_embedding is None:
                embedding = self.backbone.suffix(batch_ops.stack([image.tokens]), self.start_block, None)
                self.cache.attach_unprompted(image, embedding)
                return [embedding] * len(prepared)
            return [image.unprompted_embedding] * len(prepared)
        if refine == "all":
            inputs = [InputPrompt.of(prompt, p.geometry, self.device) for prompt, p in zip(prompts, prepared)]
            embeddings = self.suffix(PrefixCache.stack(prepared), chosen, inputs)
            return [batch_ops.take(embeddings, slice(j, j + 1)) for j in range(len(prepared))]
        out: list = [None] * len(prepared)
        missing: dict[tuple, list[int]] = {}
        prompts = list(prompts)
        for j, (image, k, prompt) in enumerate(zip(prepared, chosen, prompts)):
            owner = (k, id(self.module_set.module_for(k)))  # a replaced module's embeddings are never reused
            kept = [prompt_of_key(key[1]) for key in image.heated or () if key[0] == owner]
            heated = heat_prompt(prompt, refine, kept, self.heat_reach(image.geometry))
            key = (owner, prompt_key(heated))
            found = (image.heated or {}).get(key)
            if found is not None:
                image.heated.move_to_end(key)
                out[j] = found
            else:
                missing.setdefault((id(image), key), []).append(j)
                prompts[j] = heated
        if missing:
            first = [members[0] for members in missing.values()]
            inputs = [InputPrompt.of(prompts[j], prepared[j].geometry, self.device) for j in first]
            embeddings = self.suffix(PrefixCache.stack([prepared[j] for j in first]), [chosen[j] for j in first],
                                     inputs)
            for i, ((_, key), members) in enumerate(missing.items()):
                embedding = batch_ops.take(embeddings, slice(i, i + 1))
                if self.module_set.module_for(key[0][0]) is not None:
                    self.cache.attach_heated(prepared[members[0]], key, embedding)
                for j in members:
                    out[j] = embedding
        return out

    def heat_reach(self, geometry) -> float:
        """How far (original pixels, per axis) one point's heat reaches: the kernel's half width in grid cells."""
        cells = self.backbone.heat_config.kernel_size // 2 + 0.5
        scale = (geometry.resized[0] / geometry.original[0] + geometry.resized[1] / geometry.original[1]) / 2
        return cells * self.backbone.site.stride / scale

    def image_embeddings(self, prepared: Sequence[PreparedImage], chosen: list[int]) -> list:
        """Each image's embedding without a prompt (zero heat) under its domain in `chosen` (-1: base), a batch of one
        each: what automatic masks decode their point grid on (`samcl.inference.automatic`)."""
        return self.embed(prepared, chosen, [Prompt.of(None)] * len(prepared))

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
        """The image embeddings of the batch, each image through its domain's module rows."""
        return self.backbone.suffix(tokens, self.start_block, self.injection(chosen, self.heat(prompts)))

    def decode(self, embedding, prompt: InputPrompt, geometry, multimask_output: bool, domain: str,
               return_logits: bool = False) -> Prediction:
        """One image's prompt through the decoder (per image, so results never depend on batch padding)."""
        low_res, iou = self.backbone.decode(embedding, prompt.points, prompt.labels, prompt.box, multimask_output,
                                            **self._mask(prompt.mask))
        return self._prediction(low_res[0], iou[0], geometry, domain, return_logits)

    def decode_prompts(self, embedding, prompt: InputPrompt, geometry, multimask_output: bool
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A batch of prompts on one image (`embedding` B x ..., `prompt` with B first): (logits B x M x H x W at
        the original size, predicted IoU B x M, low-res logits B x M x h x w), as SamPredictor.predict_torch."""
        low_res, iou = self.backbone.decode(embedding, prompt.points, prompt.labels, prompt.box, multimask_output,
                                            **self._mask(prompt.mask))
        return geometry.logits_to_original(low_res.float()), iou, low_res

    def decode_many(self, embeddings: Sequence, prompts: Sequence[InputPrompt], geometries, multimask_output: bool,
                    domains: Sequence[str]) -> list[Prediction]:
        """`decode` for a batch: images whose prompts have the same shape (point count, box or not) go through the
        decoder together, so nothing is padded and each result equals its own `decode` up to float rounding
        (about 1e-5 in the logits); on a CPU a batch of 16 decodes in a third of the time."""
        groups: dict[tuple, list[int]] = {}
        for j, prompt in enumerate(prompts):
            shape = (0 if prompt.points is None else prompt.points.shape[1], prompt.box is not None,
                     prompt.mask is not None)
            groups.setdefault(shape, []).append(j)
        out: list = [None] * len(prompts)
        for members in groups.values():
            def joined(name):
                parts = [getattr(prompts[j], name) for j in members]
                return None if parts[0] is None else torch.cat(parts)
            batch = batch_ops.stack([batch_ops.take(embeddings[j], 0) for j in members])
            low_res, iou = self.backbone.decode(batch, joined("points"), joined("labels"), joined("box"),
                                                multimask_output, **self._mask(joined("mask")))
            for k, j in enumerate(members):
                out[j] = self._prediction(low_res[k], iou[k], geometries[j], domains[j])
        return out

    @staticmethod
    def _mask(mask) -> dict:
        """The decoder's `mask_input` keyword, only when there is one (a backbone of another helper's making
        may not take it)."""
        return {} if mask is None else {"mask_input": mask}

    @staticmethod
    def _prediction(low_res, iou, geometry, domain: str, return_logits: bool = False) -> Prediction:
        """One image's decoder output (M x h x w logits, M IoU) at its original size."""
        full = geometry.logits_to_original(low_res[None].float())[0]
        return Prediction(masks=(full > 0).cpu().numpy(), scores=iou.float().cpu().numpy(), domain=domain,
                          low_res=low_res, logits=full.cpu().numpy() if return_logits else None)

    def evaluate(self, samples: Sequence, *, truth: str | None = None, batch_size: int = 8, progress: bool = False,
                 force: str | None = None) -> dict:
        """Mean IoU / F1 / MAE over `samples` with their fixed points; `truth` (the true domain's name, "base"
        for the domain without a module) also gives selector accuracy; `force` runs one domain for every image
        (oracle)."""
        scores, correct, chosen = [], 0, {}
        for start in bar(range(0, len(samples), batch_size), desc=f"eval {truth or ''}".strip(),
                          progress=progress, leave=False):
            batch = [samples[i] for i in range(start, min(start + batch_size, len(samples)))]
            prompts = [Prompt.of(s.points, s.labels) for s in batch]
            results = self.run(self.prepare([s.image for s in batch]), prompts, force=force)
            for sample, result in zip(batch, results):
                scores.append(mask_scores(result.masks[0], sample.mask))
                chosen[result.domain] = chosen.get(result.domain, 0) + 1
                correct += result.domain == truth
        out = {**mean_scores(scores), "images": len(scores), "chosen": chosen}
        if truth is not None and force is None:
            out["selector_accuracy"] = correct / max(len(scores), 1)
        return out
