"""The continual loop: learn domains one after another, select a module per image, segment, evaluate.

    samcl = SAMCL.create(load_backbone("sam_vit_b_01ec64.pth"), "my-store")
    samcl.learn("polyps", FolderDataset("kvasir/train"))
    result = samcl.segment([image], [Prompt.of(points=[[120, 80]])])[0]   # result.domain: the module that ran
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed
from .augmodule import AugModule, AugModuleConfig, Injection, config_for
from .bank import ModuleBank
from .backbone import load_backbone
from .backbone import tokens as batch_ops
from .backbone.preprocess import ResizeGeometry
from .data.sample import Sample
from .io import SamclError
from .metrics import mask_scores, mean_scores
from .selector import EmbeddingBuffer, SelectorConfig, SelectorNet, train_selector
from .store import BASE_CLASS, DomainEntry, ModuleStore, StoreState
from .trainer import TrainConfig, default_device, train_module

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class Prediction:
    """One image's result. masks: M x H x W bool at the original size; scores: M predicted IoU;
    low_res_logits: M x h x w; domain: the module that ran ("base" = SAM without a module)."""

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: np.ndarray
    domain: str
    logits: np.ndarray | None = None  # M x H x W at the original size


@dataclass
class Prompt:
    """Prompts for one image in original pixels: points N x 2 (x, y), labels N (1/0), box (x0, y0, x1, y1)."""

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None

    @classmethod
    def of(cls, points=None, labels=None, box=None) -> "Prompt":
        pts = None if points is None or len(points) == 0 else np.asarray(points, dtype=np.float32).reshape(-1, 2)
        lab = None if pts is None else (np.ones(len(pts), np.int64) if labels is None
                                        else np.asarray(labels, dtype=np.int64).reshape(-1))
        if pts is not None and len(lab) != len(pts):
            raise ValueError(f"{len(pts)} points but {len(lab)} labels")
        return cls(pts, lab, None if box is None else np.asarray(box, dtype=np.float32).reshape(4))


class SAMCL:
    """A frozen SAM backbone with a set of AugModules and the Module Selector, optionally persisted in a store."""

    def __init__(self, backbone, state: StoreState, store: ModuleStore | None = None, device=None):
        self.backbone = backbone
        self.state = state
        self.store = store
        self.device = torch.device(device) if device is not None else default_device()
        self.backbone.to(self.device)
        for module in state.modules.values():
            if next(module.parameters()).device != self.device:  # a thousand no-op .to() calls cost 0.2 s
                module.to(self.device)
        if state.selector is not None:
            state.selector.to(self.device)
        self._bank: ModuleBank | None = None
        self._prefix_cache: dict[int, tuple] | None = None  # see cache_prefixes
        self._prefix_budget = 0
        self.bank()  # every module resident from the start: switching is choosing rows

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, backbone, store: str | Path | None = None, rank: int = 10,
               adapted_blocks: tuple[int, ...] | None = None, selector: SelectorConfig = SelectorConfig(),
               dtype: str = "float32", base_hint: str | None = None, device=None) -> "SAMCL":
        """A new, empty module set on `backbone` (saved to `store` if given; it must not exist yet)."""
        block = backbone.default_selector_block if selector.block is None else selector.block
        aug = config_for(backbone.site, rank=rank, adapted_blocks=adapted_blocks)
        if block >= min(aug.adapted_blocks):
            raise SamclError(f"selector block {block} must come before the first adapted block "
                             f"{min(aug.adapted_blocks)}: selection must not compute a block twice")
        if dtype not in ("float32", "float16"):
            raise SamclError(f"unsupported storage dtype {dtype!r} (float32 or float16)")
        state = StoreState(backbone=backbone.identity(), selector_config=selector, selector_block=block,
                           aug_config=aug, dtype=dtype, base_hint=base_hint)
        module_store = None
        if store is not None:
            module_store = ModuleStore(store)
            if module_store.exists():
                raise SamclError(f"{store}: a store already exists here")
        return cls(backbone, state, module_store, device)

    @classmethod
    def open(cls, store: str | Path, base=None, device=None) -> "SAMCL":
        """Open a saved store. `base`: a backbone, a path, or None (the base recorded in the store)."""
        module_store = ModuleStore(store)
        manifest = module_store.read_manifest()
        if base is None:
            hint = manifest.get("base_hint")
            if not hint:
                raise SamclError(f"{store}: the store does not record its base model; pass --base")
            base = hint
            if not hint.startswith("builtin:") and not Path(hint).exists():
                raise SamclError(f"{store}: its base model {hint} is no longer there; pass --base with its new path")
        backbone = base if hasattr(base, "identity") else load_backbone(base)
        state = module_store.load(identity=backbone.identity(), lazy_buffer=True)  # the buffer is read to learn
        return cls(backbone, state, module_store, device)

    # ------------------------------------------------------------------ properties
    @property
    def domains(self) -> list[str]:
        return self.state.names

    @property
    def aug_config(self) -> AugModuleConfig:
        if self.state.aug_config is None:
            self.state.aug_config = config_for(self.backbone.site)
        return self.state.aug_config

    @property
    def selector_block(self) -> int:
        return self.state.selector_block

    # ------------------------------------------------------------------ learning
    def learn(self, name: str, samples: Sequence[Sample], config: TrainConfig = TrainConfig(),
              base: bool = False) -> dict:
        """Learn one domain: train its AugModule (or none if `base`), add N_e embeddings, retrain the selector,
        save. Returns a report (losses, seconds, sizes).

        Under torch.distributed (torchrun) every rank calls this with the same arguments: the module trains data
        parallel, rank 0 alone writes the store, and all ranks end with the same state (`samcl.distributed`)."""
        if not _NAME.match(name):
            raise SamclError(f"domain name {name!r}: use letters, digits, '_', '.', '-' (max 64)")
        if name in self.domains:
            raise SamclError(f"domain {name!r} is already in the module set")
        if base and any(d.kind == "base" for d in self.state.domains):
            raise SamclError("the module set already has a base class")
        if len(samples) == 0:
            raise SamclError(f"domain {name!r}: no training samples")
        ctx = distributed.current()
        with self._rollback_on_error():
            if self.store is None or (ctx is not None and not ctx.is_main):
                return self._learn(name, samples, config, base, ctx)
            with self.store.lock():
                if self.store.exists() and self.store.read_manifest().get("generation") != self.state.generation:
                    raise SamclError(f"{self.store.path}: the store changed since it was opened; open it again")
                return self._learn(name, samples, config, base, ctx)

    @contextmanager
    def _rollback_on_error(self):
        """A learn step that fails (bad data, interrupt, disk full) leaves the in-memory set as it was, as the
        store on disk is: no half-learned domain, buffer rows or selector weights."""
        state = self.state
        domains, modules, generation = list(state.domains), dict(state.modules), state.generation
        selector = None if state.selector is None else {k: v.clone() for k, v in state.selector.state_dict().items()}
        buffer = None if state.buffer is None or not state.buffer.is_loaded else \
            (state.buffer.embeddings, state.buffer.labels)
        had_buffer = state.buffer is not None
        try:
            yield
        except BaseException:
            state.domains[:], state.modules, state.generation = domains, modules, generation
            if selector is None:
                state.selector = None
            else:
                head = state.selector.head
                if head.out_features != len(selector["head.weight"]):
                    state.selector.head = torch.nn.Linear(head.in_features, len(selector["head.weight"])).to(
                        head.weight.device)
                state.selector.load_state_dict(selector)
            if not had_buffer:
                state.buffer = None
            elif buffer is not None:
                state.buffer._set(*buffer)
            self._bank = None
            raise

    def _learn(self, name: str, samples: Sequence[Sample], config: TrainConfig, base: bool,
               ctx: distributed.DistContext | None = None) -> dict:
        report: dict = {"domain": name, "kind": "base" if base else "module", "train": config.to_dict()}
        pooled: dict[int, torch.Tensor] = {}
        entry = DomainEntry(name=name, kind="base" if base else "module")
        if self.state.buffer is not None:
            self.state.buffer.load()  # a deferred buffer is read and verified before any training
        if ctx is not None:
            distributed.check_ready(ctx, self, name, len(samples), base)
        if not base:
            module, stats, pooled = train_module(self.backbone, self.aug_config, samples, self.selector_block,
                                                 config, self.device, desc=f"learn {name}",
                                                 shard=ctx.shard if ctx else (0, 1), wrap=ctx.wrap if ctx else None)
            if ctx is not None:
                pooled, stats = distributed.merge_training(ctx, module, stats, pooled)
            self.state.modules[name] = module.to(self.device)
            report["stats"] = stats
        if ctx is not None and not ctx.is_main:
            return distributed.receive_result(ctx, self)  # rank 0 embeds, trains the selector and saves
        start = time.perf_counter()
        embeddings = self.embeddings_for(samples, config.seed, pooled, config.progress)
        label = len(self.state.domains)
        self.state.domains.append(entry)
        dim = embeddings.shape[1]
        if self.state.buffer is None:
            self.state.buffer = EmbeddingBuffer(dim)
            self.state.selector = SelectorNet(dim, 1).to(self.device).eval()
        self.state.buffer.add(embeddings, label)
        self.state.selector.grow(len(self.state.domains), torch.Generator().manual_seed(config.seed + label))
        self.state.selector.to(self.device)
        if len(self.state.domains) > 1:
            report["selector_losses"] = train_selector(self.state.selector, self.state.buffer,
                                                       self.state.selector_config, seed=config.seed + label,
                                                       progress=config.progress)
        report["selector_seconds"] = time.perf_counter() - start
        entry.info = {"train_samples": len(samples), "epochs": config.epochs, "seed": config.seed,
                      "buffer_samples": len(embeddings),
                      **{k: v for k, v in report.get("stats", {}).items() if not isinstance(v, list)}}
        if self.store is not None:
            self.store.save(self.state, written={name})
        report["bytes"] = entry.bytes
        if ctx is not None:
            distributed.send_result(ctx, self, report)
        return report

    @torch.no_grad()
    def embeddings_for(self, samples: Sequence[Sample], seed: int, known: dict[int, torch.Tensor] | None = None,
                       progress: bool = False, batch_size: int = 8) -> torch.Tensor:
        """N_e pooled selector-block embeddings of a seeded subset of `samples` (reusing ones already computed)."""
        count = min(self.state.selector_config.samples_per_domain, len(samples))
        chosen = sorted(np.random.default_rng(seed).choice(len(samples), size=count, replace=False).tolist())
        known = known or {}
        missing = [i for i in chosen if i not in known]
        for start in tqdm(range(0, len(missing), batch_size), desc="embed", disable=not progress, leave=False):
            part = missing[start:start + batch_size]
            pixels = torch.stack([self.backbone.preprocess(samples[i].image)[0] for i in part]).to(self.device)
            pooled = self.backbone.pool(self.backbone.prefix(pixels, self.selector_block)).cpu()
            known.update(zip(part, pooled))
        return torch.stack([known[i] for i in chosen]).float()

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def select(self, pooled: torch.Tensor) -> list[int]:
        """B x D pooled embeddings -> class index per image (into `domains`)."""
        if self.state.selector is None or not self.state.domains:
            return [-1] * pooled.shape[0]
        if len(self.state.domains) == 1:
            return [0] * pooled.shape[0]
        logits = self.state.selector(pooled.to(self.device).float())
        return logits.argmax(dim=1).tolist()

    def module_for(self, index: int) -> AugModule | None:
        if index < 0:
            return None
        entry = self.state.domains[index]
        return self.state.modules.get(entry.name) if entry.kind == "module" else None

    def domain_name(self, index: int) -> str:
        return BASE_CLASS if index < 0 or self.state.domains[index].kind == "base" else self.state.domains[index].name

    def bank(self, indices: Sequence[int] = ()) -> ModuleBank:
        """All modules resident as stacked tensors (`samcl.bank`): built when the set is opened, rebuilt only
        when the set changed (a domain learned, or a module in `indices` replaced). Never reads a file."""
        bank = self._bank
        if (bank is None or len(bank.owners) != len(self.state.domains)
                or not all(bank.is_current(i, self.module_for(i)) for i in set(indices) if i >= 0)):
            dtype = self.backbone.dtype if self.backbone.dtype.is_floating_point else torch.float32
            modules = [self.module_for(i) for i in range(len(self.state.domains))]
            bank = self._bank = ModuleBank(self.aug_config, modules, self.device, dtype)
        return bank

    def injection(self, indices: list[int], heat: torch.Tensor) -> Injection | None:
        """The adapter for a batch whose images chose `indices`: one module's rows of the bank (a view), or
        per-sample rows gathered for a mixed batch (base = the zero row). None if no image uses a module."""
        bank = self.bank(indices)
        rows = [bank.row(i) for i in indices]
        if not any(rows):
            return None
        return Injection(self.aug_config, bank.params(rows), heat)

    def resolve_domain(self, domain: str | None) -> int | None:
        """A forced domain name -> class index (-1 for base); None -> let the selector choose."""
        if domain is None:
            return None
        if domain == BASE_CLASS and BASE_CLASS not in self.domains:
            return -1
        if domain not in self.domains:
            raise SamclError(f"unknown domain {domain!r}; learned: {', '.join(self.domains) or 'none'}")
        return self.domains.index(domain)

    def resolve_domains(self, domain: str | Sequence[str | None] | None, count: int) -> list[int | None]:
        """`segment`'s `domain` -> per image a forced class index, or None where the selector chooses."""
        if domain is None or isinstance(domain, str):
            return [self.resolve_domain(domain)] * count
        if len(domain) != count:
            raise ValueError(f"{count} images but {len(domain)} domains")
        return [self.resolve_domain(d) for d in domain]

    @torch.no_grad()
    def segment(self, images: Sequence, prompts: Sequence[Prompt], multimask_output: bool = False,
                domain: str | Sequence[str | None] | None = None, return_logits: bool = False) -> list[Prediction]:
        """Segment a batch of images (mixed domains allowed: each image gets its own module in one encoder pass).

        images: arrays or PIL images of any sizes; prompts: one `Prompt` per image in original pixels.
        domain: None (the selector chooses), one name for every image, or one name (or None) per image.
        Each image's result equals segmenting it alone: the prefix runs once for the batch, the selector reads
        its pooled output, the suffix runs once with per-sample module rows, and decoding is per image.
        """
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        backbone = self.backbone
        tokens, geometries = self._prefix(images)
        chosen = self.resolve_domains(domain, len(images))
        open_ = [j for j, forced in enumerate(chosen) if forced is None]
        if open_:
            pooled = backbone.pool(tokens)
            picks = self.select(pooled if len(open_) == len(chosen) else pooled[open_])
            for j, pick in zip(open_, picks):
                chosen[j] = pick
        heat = self.heat(prompts, list(geometries))
        embeddings = backbone.suffix(tokens, self.selector_block + 1, self.injection(chosen, heat))
        return [self.decode_one(batch_ops.take(embeddings, slice(j, j + 1)), prompts[j], geometries[j],
                                multimask_output, self.domain_name(chosen[j]), return_logits)
                for j in range(len(images))]

    def cache_prefixes(self, max_bytes: int) -> None:
        """Keep the prefix tokens of images segmented again later (the protocol evaluates the same test images
        after every step). The base is frozen, so an image's prefix never changes; entries are keyed by the
        image object itself (held, so its id cannot be reused). max_bytes = 0 turns the cache off."""
        self._prefix_cache = {} if max_bytes > 0 else None
        self._prefix_budget = max_bytes

    def _prefix(self, images: Sequence) -> tuple:
        """(prefix tokens for the batch, geometries), from the cache where possible."""
        cache, budget = self._prefix_cache, self._prefix_budget
        hits = {j: cache[id(image)] for j, image in enumerate(images)
                if cache is not None and id(image) in cache and cache[id(image)][0] is image}
        missing = [j for j in range(len(images)) if j not in hits]
        fresh = {}
        if missing:
            tensors, geometries = zip(*(self.backbone.preprocess(images[j]) for j in missing))
            tokens = self.backbone.prefix(torch.stack(tensors).to(self.device), self.selector_block)
            for k, j in enumerate(missing):
                fresh[j] = (images[j], batch_ops.take(tokens, k), geometries[k])
                size = batch_ops.nbytes(fresh[j][1])
                if cache is not None and budget >= size:
                    cache[id(images[j])] = fresh[j]
                    self._prefix_budget = budget = budget - size
            if not hits:
                return tokens, list(geometries)
        entries = [hits.get(j) or fresh[j] for j in range(len(images))]
        return batch_ops.stack([e[1] for e in entries]), [e[2] for e in entries]

    def heat(self, prompts: Sequence[Prompt], geometries: list[ResizeGeometry]) -> torch.Tensor:
        """B x rows x cols heat for the batch's prompts (points padded with label -10, which paints nothing)."""
        count = max((len(p.points) for p in prompts if p.points is not None), default=0)
        points = torch.zeros(len(prompts), count, 2)
        labels = torch.full((len(prompts), count), -10, dtype=torch.long)
        boxes = torch.full((len(prompts), 4), -1e6)  # far outside: paints nothing
        for j, (prompt, geometry) in enumerate(zip(prompts, geometries)):
            if prompt.points is not None:
                points[j, : len(prompt.points)] = geometry.coords_to_input(prompt.points)
                labels[j, : len(prompt.points)] = torch.from_numpy(prompt.labels)
            if prompt.box is not None:
                boxes[j] = geometry.boxes_to_input(prompt.box)
        has_box = any(p.box is not None for p in prompts)
        return self.backbone.heat(points.to(self.device), labels.to(self.device),
                                  boxes.to(self.device) if has_box else None)

    def decode_one(self, embedding: torch.Tensor, prompt: Prompt, geometry: ResizeGeometry, multimask_output: bool,
                domain: str, return_logits: bool) -> Prediction:
        """One image's prompts through the decoder (per image, so results never depend on batch padding)."""
        points = labels = box = None
        if prompt.points is not None:
            points = geometry.coords_to_input(prompt.points)[None].to(self.device)
            labels = torch.from_numpy(prompt.labels)[None].to(self.device)
        if prompt.box is not None:
            box = geometry.boxes_to_input(prompt.box)[None].to(self.device)
        low_res, iou = self.backbone.decode(embedding, points, labels, box, multimask_output)
        full = geometry.logits_to_original(low_res.float())[0]
        return Prediction(masks=(full > 0).cpu().numpy(), scores=iou[0].float().cpu().numpy(),
                          low_res_logits=low_res[0].float().cpu().numpy(), domain=domain,
                          logits=full.cpu().numpy() if return_logits else None)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, samples: Sequence[Sample], domain: str | None = None, batch_size: int = 8,
                 progress: bool = False, force: str | None = None) -> dict:
        """Mean IoU / F1 / MAE over `samples` with their fixed points; `domain` (the true one) also gives
        selector accuracy; `force` runs one named module for every image (oracle selection)."""
        scores, correct, chosen = [], 0, {}
        for start in tqdm(range(0, len(samples), batch_size), desc=f"eval {domain or ''}".strip(),
                          disable=not progress, leave=False):
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

    # ------------------------------------------------------------------ reporting
    def storage(self) -> dict:
        """Bytes: per module, selector, buffer, total."""
        value = 2 if self.state.dtype == "float16" else 4
        modules = {d.name: self.aug_config.num_parameters * value for d in self.state.domains if d.kind == "module"}
        selector = buffer = 0
        if self.state.selector is not None:
            selector = sum(t.numel() * (value if t.is_floating_point() else t.element_size())
                           for t in self.state.selector.state_dict().values())
            buffer = len(self.state.buffer) * (self.state.buffer.dim * value + 8)  # without reading a deferred one
        return {"modules": modules, "module_total": sum(modules.values()), "selector": selector,
                "buffer": buffer, "total": sum(modules.values()) + selector + buffer}

    def predictor(self) -> "SamclPredictor":
        from .predictor import SamclPredictor

        return SamclPredictor(self)
