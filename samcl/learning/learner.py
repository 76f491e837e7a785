"""The continual loop: create or open a module set, learn domains one after another into it.

    samcl = SAMCL.create("sam_vit_b_01ec64.pth", "my-store")
    samcl.learn("polyps", FolderDataset("kvasir/train"))
    result = samcl.segment([image], [Prompt.of(points=[[120, 80]])])[0]   # result.domain: whose module ran

Inference is `samcl.inference.engine` (`SAMCL.segment` and the predictor run it); files are `samcl.store.files`.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..backbone import is_hub_id, load_backbone
from ..backbone.base import FrozenBackbone
from ..data.sample import Sample, groups_of
from .._renamed import renamed_keyword, renamed_method
from ..errors import SamclError
from ..inference.automatic import AutoMaskConfig, GeneratedMasks, generate_images
from ..inference.engine import Engine
from ..inference.precision import resolve as resolve_precision
from ..inference.predictor import SamclPredictor
from ..inference.prefix_cache import PrefixCache
from ..io.progress import bar
from ..method.augmodule import AugModuleConfig, config_for
from ..method.sizes import storage
from ..selector import SelectorConfig, make_selector
from ..store.check import check_manifest, check_site
from ..store.files import ModuleStore
from ..store.moduleset import MODULE, NO_MODULE, DomainEntry, ModuleSet, name_problem
from ..store.schema import Manifest
from ..types import Prediction, Prompt
from . import distributed
from .lifecycle import remove_domain
from .running import Running
from .tracking import Tracking
from .trainer import NonFiniteLoss, TrainConfig, default_device, train_module


class SAMCL(Running, Tracking):
    """A frozen SAM backbone with a set of AugModules and the Module Selector, optionally persisted in a store."""

    def __init__(self, backbone, module_set: ModuleSet, store: ModuleStore | None = None, device=None,
                 precision: str | None = None):
        self.backbone = backbone
        self.module_set = module_set
        self.store = store
        self.device = torch.device(device) if device is not None else default_device()
        self.backbone.to(self.device)
        for module in module_set.modules.values():
            if next(module.parameters()).device != self.device:  # a thousand no-op .to() calls cost 0.2 s
                module.to(self.device)
        if module_set.selector is not None:
            module_set.selector.to(self.device)
        self.engine = Engine(backbone, module_set, self.device)
        self.engine.bank()  # every module resident from the start: switching is choosing rows
        if precision is not None:  # None: the backbone's own (float32 as loaded)
            self.set_precision(precision)

    def set_precision(self, precision: str | None) -> str:
        """Run inference in `precision`: "float32", "bfloat16", or "auto"/None (`samcl.inference.precision.resolve`:
        what this machine runs best at equal quality). The encoder's weights are cast once, here. Learning needs the
        float32 encoder (the store's contents never depend on the precision), so a set in bfloat16 is for
        inference only. Returns the precision now in use."""
        if self.engine.runtime != "torch":
            raise SamclError(f"the {self.engine.runtime} runtime's precision is set when it is attached: "
                             "open the set again with the precision (SAMCL.open(..., precision=...))")
        try:
            chosen = resolve_precision(precision, str(self.device))
            if chosen != self.backbone.precision:
                self.backbone.set_precision(chosen)
                cache = self.engine.cache  # its prefixes were the other precision's
                self.engine.cache_prefixes(cache.budget, evict=cache.evict)
        except ValueError as exc:
            raise SamclError(str(exc)) from None
        return chosen

    @property
    def precision(self) -> str:
        """The inference precision ("float32" or "bfloat16"): the image encoder's, as the engine runs it (a graph
        runtime's own, e.g. OpenVINO in bfloat16 beside a float32 torch backbone)."""
        return self.engine.backbone.precision

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, base, store: str | Path | None = None, *, rank: int = 10,
               adapted_blocks: tuple[int, ...] | None = None, selector: SelectorConfig = SelectorConfig(),
               dtype: str = "float32", base_hint: str | None = None, device=None) -> "SAMCL":
        """A new, empty module set on a frozen base model.

        Arguments:
          base: the base: a backbone (`load_backbone(...)`), or what `load_backbone` takes (an HF directory,
            Meta's SAM .pth or SAM 2.1 .pt, "builtin:tiny-sam").
          store (str | Path | None): the folder to save to (it must not hold a store yet); None: in memory only.
          rank (int): the AugModules' rank r; adapted_blocks (tuple[int, ...] | None): the encoder blocks they
            adapt (None: the base's default, the blocks after its middle one).
          selector (SelectorConfig): the Module Selector; dtype (str): "float32" or "float16" storage.
          base_hint (str | None): where `open` finds the base again (default: where it was loaded from).
          device: a torch device or its name (default: cuda if available, else cpu).

        Returns:
          (SAMCL): the empty set; `learn` adds domains (and saves each to `store`).
        """
        backbone = base if isinstance(base, FrozenBackbone) else load_backbone(base)
        block = backbone.default_selector_block if selector.block is None else selector.block
        aug = config_for(backbone.site, rank=rank, adapted_blocks=adapted_blocks)
        if block >= min(aug.adapted_blocks):
            raise SamclError(f"selector block {block} must come before the first adapted block "
                             f"{min(aug.adapted_blocks)}: selection must not compute a block twice")
        if dtype not in ("float32", "float16"):
            raise SamclError(f"unsupported storage dtype {dtype!r} (float32 or float16)")
        source = backbone.source  # where `load_backbone` read it (None for a model built in memory)
        module_set = ModuleSet(backbone=backbone.identity(), selector_config=selector, selector_block=block,
                               aug_config=aug, dtype=dtype, base_hint=base_hint or (source or {}).get("base"),
                               base_source=source)
        module_store = None
        if store is not None:
            module_store = ModuleStore(store)
            if module_store.exists():
                raise SamclError(f"{store}: a store already exists here")
        return cls(backbone, module_set, module_store, device)

    @classmethod
    def open(cls, store: str | Path, *, base=None, device=None, fallback: bool = True,
             precision: str | None = None, runtime: str | None = "torch", manifest: dict | None = None) -> "SAMCL":
        """Open a saved store (every file's sha256 and structure checked).

        Arguments:
          store (str | Path): the store's folder.
          base: a backbone, or what `load_backbone` takes; None: the base the store records. Its weights are
            hashed to check it is the store's, unless it is the very file the store recorded, unchanged.
          device: a torch device or its name (default: cuda if available, else cpu).
          fallback (bool): images no learned domain fits run on the base (the statistics selectors' open set).
          precision (str | None): inference precision, "float32", "bfloat16" or "auto" (see `set_precision`);
            None keeps the base's own (float32 as loaded from a file).
          runtime (str | None): what runs the encoder and decoder: "torch", "onnxruntime", "openvino" or "auto"
            (`samcl.runtime`: graphs exported once per base and cached; the precision then applies to them).
          manifest (Manifest | None): the store's manifest as `ModuleStore.read_manifest` returned it (read and
            checked), for a caller that has read it already (a dict is checked first); None: read here.

        Returns:
          (SAMCL): the set, every module resident; its feature buffer is read when `learn` first needs it.
        """
        from ..runtime.attach import resolved

        chosen = resolved(runtime, device)
        module_store = ModuleStore(store)
        if manifest is None:
            manifest = module_store.read_manifest()
        elif not isinstance(manifest, Manifest):
            manifest = check_manifest(manifest, module_store.path)
        if base is None:
            hint = manifest.base_hint
            if not hint:
                lacking = f"{store}: the store does not record its base model; give the base"
                raise SamclError(f"{lacking} (base)", code="no_base", field="base")
            base = hint
            if not hint.startswith("builtin:") and not is_hub_id(hint) and not Path(hint).exists():
                gone = f"{store}: its base model {hint} is no longer there"
                raise SamclError(f"{gone}; give its new path as base", code="no_base", field="base")
        backbone = base if isinstance(base, FrozenBackbone) else load_backbone(base)
        backbone.adopt_identity(manifest.backbone.model_dump(), manifest.base_source)
        module_set = module_store.load(identity=backbone.identity(), lazy_buffer=True,  # the buffer is read to learn
                                       manifest=manifest)
        check_site(module_set.aug_config, manifest.selector.dim, backbone.site, module_store.path)
        chosen = resolved(runtime, device, backbone, module_set.aug_config)  # auto: torch where no graphs run
        if backbone.source is not None and module_set.base_source != backbone.source:
            module_set.base_source = backbone.source  # verified by hashing: the next save records this file
        samcl = cls(backbone, module_set, module_store, device, precision if chosen == "torch" else None)
        samcl.engine.fallback = fallback
        if chosen != "torch":
            samcl.set_runtime(chosen, precision)
        return samcl

    # ------------------------------------------------------------------ properties
    @property
    def domains(self) -> list[str]:
        return self.module_set.names

    @property
    def aug_config(self) -> AugModuleConfig:
        if self.module_set.aug_config is None:
            self.module_set.aug_config = config_for(self.backbone.site)
        return self.module_set.aug_config

    @property
    def selector_block(self) -> int:
        return self.module_set.selector_block

    # ------------------------------------------------------------------ learning
    def learn(self, name: str, samples: Sequence[Sample], config: TrainConfig = TrainConfig(), *,
              without_module: bool = False, replace: bool = False, as_base: bool | None = None) -> dict:
        """Learn one domain: train its module (or none with `without_module`), add its selector state, save.

        Arguments:
          name (str): the new domain's name (letters, digits, '_', '.', '-'; "base" is reserved).
          samples (Sequence[Sample]): its training images, masks and points (`FolderDataset`, or a list).
          config (TrainConfig): how the module is trained.
          without_module (bool): learn it without a module: its images run the base model (SAM's own behaviour;
            for the base model's own domain). A set holds at most one such domain.
          replace (bool): relearn a domain the set holds (below).
          as_base (bool | None): the old spelling of `without_module` (deprecated).

        Returns:
          (dict): the report: the domain's kind, training losses and seconds, sizes in bytes, the selector's.

        `replace`: relearn a domain the set holds already from `samples` alone. Its old module and selector
        state go and the new ones come in the same save, so the store changes by one generation; until that
        commit (and after a failure or a kill before it) the old set is the store's.

        Under torch.distributed (torchrun) every rank calls this with the same arguments: the module trains data
        parallel, rank 0 alone writes the store, and all ranks end with the same state
        (`samcl.learning.distributed`)."""
        without_module = renamed_keyword("as_base", "without_module", as_base, without_module)
        problem = name_problem(name)
        if problem:
            raise SamclError(problem)
        if name in self.domains and not replace:
            raise SamclError(f"domain {name!r} is already in the module set (relearn it with replace=True)",
                             code="domain_exists", field="replace")
        if replace and name not in self.domains:
            raise SamclError(f"domain {name!r}: nothing to replace; learned: {', '.join(self.domains) or 'none'}")
        replaced = replace and any(d.name == name and d.kind == NO_MODULE for d in self.module_set.domains)
        if without_module and not replaced and any(d.kind == NO_MODULE for d in self.module_set.domains):
            raise SamclError("the module set already has a domain without a module", field="without_module")
        if len(samples) == 0:
            raise SamclError(f"domain {name!r}: no training samples")
        if self.aug_config.heat_mode == "reference":
            where = self.store.path if self.store is not None else "this module set"
            raise SamclError(f"{where}: imported from the authors' files (samcl import-reference); it holds no "
                             "feature buffer to retrain the selector on, and its modules run their forward: "
                             "learn new domains into a store of their own")
        if self.backbone.precision != "float32":
            raise SamclError(f"this module set runs in {self.backbone.precision} for inference; learning needs the "
                             "float32 encoder (the store must not depend on the precision): open it with "
                             "precision='float32'")
        ctx = distributed.current()
        with self._rollback_on_error():
            if self.store is None or (ctx is not None and not ctx.is_main):
                return self._learn(name, samples, config, without_module, ctx, replace)
            with self.store.lock():
                if self.store.exists() and self.store.read_manifest().generation != self.module_set.generation:
                    raise SamclError(f"{self.store.path}: the store changed since it was opened; open it again")
                return self._learn(name, samples, config, without_module, ctx, replace)

    @contextmanager
    def _rollback_on_error(self):
        """A learn step that fails (bad data, interrupt, disk full) leaves the in-memory set as it was, as the
        store on disk is: no half-learned domain, buffer rows or selector weights."""
        snapshot = self.module_set.snapshot()
        try:
            yield
        except BaseException:
            self.module_set.restore(snapshot)
            self.engine.forget_bank()
            raise

    def _learn(self, name: str, samples: Sequence[Sample], config: TrainConfig, without_module: bool,
               ctx: distributed.DistContext | None = None, replace: bool = False) -> dict:
        kind = NO_MODULE if without_module else MODULE
        report: dict = {"domain": name, "kind": kind, "train": config.to_dict(), "replaced": replace}
        pooled: dict[int, torch.Tensor] = {}
        entry = DomainEntry(name=name, kind=kind)
        if self.module_set.buffer is not None:
            self.module_set.buffer.load()  # a deferred buffer is read and verified before any training
        if ctx is not None:
            distributed.check_ready(ctx, self, name, len(samples), without_module)
        if not without_module:
            try:
                module, stats, pooled = train_module(self.backbone, self.aug_config, samples, self.selector_block,
                                                     config, self.device, desc=f"learn {name}",
                                                     shard=ctx.shard if ctx else (0, 1),
                                                     wrap=ctx.wrap if ctx else None)
            except NonFiniteLoss as exc:  # not the data's fault: say so without naming a data folder
                raise SamclError(f"learning {name!r} diverged: {exc}", code=exc.code, field=exc.field) from None
            if ctx is not None:
                pooled, stats = distributed.merge_training(ctx, module, stats, pooled)
        if replace:  # the old domain out of the in-memory set, as `forget` does; saved with the new one
            remove_domain(self.module_set, name)
            self.engine.forget_bank()
        if not without_module:
            self.module_set.modules[name] = module.to(self.device)
            report["stats"] = stats
        if ctx is not None and not ctx.is_main:
            return distributed.receive_result(ctx, self)  # rank 0 embeds, trains the selector and saves
        start = time.perf_counter()
        features = self.features_for(samples, config.seed, pooled, config.progress)
        groups = groups_of(samples, self._feature_rows(len(samples), config.seed))
        self.module_set.domains.append(entry)
        report.update(self._add_domain(features, config.seed, config.progress, groups))
        report["selector_seconds"] = time.perf_counter() - start
        entry.info = {"train_samples": len(samples), "epochs": config.epochs, "seed": config.seed,
                      "buffer_samples": len(features),
                      **{k: v for k, v in report.get("stats", {}).items() if not isinstance(v, list)}}
        if self.store is not None:
            self.store.save(self.module_set, written={name})
        report["bytes"] = entry.bytes
        if ctx is not None:
            distributed.send_result(ctx, self, report)
        return report

    def _add_domain(self, pooled: torch.Tensor, seed: int, progress: bool,
                    groups: list[str | None] | None = None) -> dict:
        """The newest domain into the selector (`mlp`: N_e feature rows into the buffer, one more output row, a
        retrain on the whole buffer from two domains on; statistics kinds: the domain's statistics in closed form,
        its open-set cut from held-out folds that keep each of the rows' `groups` whole)."""
        module_set = self.module_set
        if module_set.selector is None:
            module_set.selector = make_selector(module_set.selector_config, pooled.shape[1] // 2).to(self.device)
        return module_set.selector.add_domain(pooled, seed, progress, groups=groups)

    def features_for(self, samples: Sequence[Sample], seed: int, known: dict[int, torch.Tensor] | None = None,
                     progress: bool = False, batch_size: int = 8) -> torch.Tensor:
        """N x 2D pooled selector-block features (`backbone.pool_stats`) of a seeded subset of `samples` (reusing
        ones already computed): N_e for the `mlp` selector's buffer, every image for a statistics selector (its
        state does not grow with them, and training pooled them all already)."""
        chosen = self._feature_rows(len(samples), seed)
        known = known or {}
        missing = [i for i in chosen if i not in known]
        prefixes = PrefixCache(self.backbone, self.selector_block, self.device)  # budget 0: computes, keeps nothing
        for start in bar(range(0, len(missing), batch_size), desc="embed", progress=progress, leave=False):
            part = missing[start:start + batch_size]
            found = prefixes.lookup(part, lambda i: (samples[i].image, None))
            known.update((i, prefix.pooled) for i, prefix in zip(part, found))
        return torch.stack([known[i] for i in chosen]).float()

    def _feature_rows(self, count: int, seed: int) -> list[int]:
        """Which of `count` samples `features_for` pools, in its order."""
        config = self.module_set.selector_config
        size = min(config.samples_per_domain if config.kind == "mlp" else count, count)
        return sorted(np.random.default_rng(seed).choice(count, size=size, replace=False).tolist())

    embeddings_for = renamed_method("embeddings_for", "features_for")

    # ------------------------------------------------------------------ inference (`samcl.inference.engine`)
    def segment(self, images: Sequence, prompts: Sequence[Prompt], *, multimask_output: bool = False,
                force: str | Sequence[str | None] | None = None, fallback: bool | None = None,
                return_logits: bool = False) -> list[Prediction]:
        """Segment a batch of images; mixed domains allowed: each image gets its own module in one encoder pass.

        Arguments:
          images: H x W x 3 uint8 RGB arrays or PIL images, any sizes.
          prompts (Sequence[Prompt]): one per image, in its original pixels.
          multimask_output (bool): three masks per image instead of one.
          force (str | Sequence[str | None] | None): run this domain's module (or "base": none) for every image,
            or one name (or None: the selector chooses) per image; None: the selector chooses for all.
          fallback (bool | None): False sends every image to its nearest learned domain, even one that fits
            none; None: as the set was opened.
          return_logits (bool): fill `Prediction.logits` (M x H x W float32).

        Returns:
          (list[Prediction]): one per image. Each equals segmenting that image alone: the prefix runs once for
          the batch, the selector reads its pooled output, the suffix runs once with per-sample module rows, and
          decoding is per image.
        """
        engine = self.engine
        return engine.run(engine.prepare(images), prompts, multimask_output=multimask_output, force=force,
                          fallback=fallback, return_logits=return_logits)

    def generate(self, images: Sequence, *, config: AutoMaskConfig | None = None,
                 force: str | Sequence[str | None] | None = None, fallback: bool | None = None) -> list[GeneratedMasks]:
        """Automatic masks (Meta's generator) on each image's routed module, no heat (`samcl.inference.automatic`)."""
        return generate_images(self.engine, images, config=config, force=force, fallback=fallback)

    def evaluate(self, samples: Sequence[Sample], *, truth: str | None = None, force: str | None = None,
                 batch_size: int = 8, progress: bool = False) -> dict:
        """Mean IoU, F1 and MAE over `samples` with their fixed points.

        Arguments:
          samples (Sequence[Sample]): images with their masks and points (`FolderDataset`, or a list).
          truth (str | None): the samples' true domain ("base" for the domain without a module); adds selector
            accuracy.
          force (str | None): run this domain's module for every image (oracle selection; "base": none).
          batch_size (int): images per engine call.
          progress (bool): a progress bar on a terminal.

        Returns:
          (dict): iou, f1, mae (means), images, chosen (domain -> image count), and selector_accuracy when
          `truth` is given and nothing is forced.
        """
        return self.engine.evaluate(samples, truth=truth, batch_size=batch_size, progress=progress, force=force)

    def storage(self) -> dict:
        """Bytes: per module, selector, buffer, total (`samcl.method.sizes.storage`)."""
        return storage(self.module_set)

    def predictor(self, *, precision: str | None = None, refine: str | None = None) -> SamclPredictor:
        """A predictor with Meta's SamPredictor interface that picks the module itself, at `precision` (None: the
        current one), with the refinement strategy `refine` (None: the default, `samcl.inference.refine`)."""
        if precision is not None:
            self.set_precision(precision)
        return SamclPredictor(self.engine) if refine is None else SamclPredictor(self.engine, refine=refine)

