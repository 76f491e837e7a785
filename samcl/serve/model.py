"""The server's side of the inference engine: one opened store, its image cache, and a batch of jobs run as one
pass through `samcl.engine.Engine` (no second inference path).

    host = ModelHost(config)              # SAMCL.open(store): read-only, the base recorded in the store
    host.run([Job.upload(key, image), Job.segment(key, entry, prompt, domain)])   # in the model thread only
    host.reload_if_changed()              # a `learn` committed a new generation: open it, swap between batches

A batch may hold uploads and segment requests of different images and domains: the images not cached run
through `Engine.prefix` together, the selector picks for those without a pick under the current generation, and
every segment job goes through one `Engine.suffix` (per-sample module rows) and `Engine.decode_many` (one
decoder call per prompt shape), so each result equals running it alone (up to float rounding). Everything
here runs in one thread; the event loop only queues jobs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..backbone import tokens as batch_ops
from ..engine import Engine, InputPrompt
from ..io import SamclError
from ..learner import SAMCL
from ..manifest import read_manifest
from ..types import Prompt
from .cache import CachedImage, ImageCache
from .config import ServeConfig
from .errors import ApiError

log = logging.getLogger("samcl.serve")


@dataclass(eq=False)  # compared by identity: a job holds arrays
class Job:
    """One request's work. `entry` is the cached image (None: `image` must run through the prefix first)."""

    kind: str  # "upload" or "segment"
    key: str
    image: np.ndarray | None = None
    entry: CachedImage | None = None
    prompt: Prompt | None = None
    domain: str | None = None
    # filled by the model thread
    prediction: Any = None
    index: int = -1
    chosen: str = "base"
    generation: int = 0
    score: float | None = None
    error: Exception | None = None
    timings: dict = field(default_factory=dict)
    batch_size: int = 1


def choose_scored(engine: Engine, tokens, forced: list[int | None]) -> tuple[list[int], list[float | None]]:
    """Each image's class and the selector's score for it (None where forced: JSON null)."""
    chosen, scores = engine.choose(tokens, forced)
    return list(chosen), [None if s is None else float(s) for s in scores]


class ModelHost:
    """A store opened read-only, its image cache, and the batch runner."""

    def __init__(self, config: ServeConfig):
        self.config = config
        if config.threads:
            torch.set_num_threads(config.threads)
        self.samcl = SAMCL.open(config.store, base=config.base, device=config.device, fallback=config.fallback,
                                precision=config.precision, runtime=config.runtime)
        self.cache = ImageCache(config.cache_bytes)
        self.reload_error: str | None = None
        self.batches = 0

    @staticmethod
    def check_store(config: ServeConfig) -> None:
        """The store's manifest reads (and its base is there) without loading any model."""
        manifest = read_manifest(config.store)
        hint = config.base or manifest.get("base_hint")
        if not hint:
            raise SamclError(f"{config.store}: the store does not record its base model; pass --base")

    @property
    def generation(self) -> int:
        return self.samcl.module_set.generation

    def domains(self) -> list[dict]:
        classes = self.samcl.module_set
        return [{"name": d.name, "kind": d.kind, "bytes": d.bytes or 0, "parameters": d.parameters or 0}
                for d in classes.domains]

    def base_identity(self) -> dict:
        classes = self.samcl.module_set
        return {"backbone": classes.backbone, "base": classes.base_hint}

    # ------------------------------------------------------------------ a learn during serving
    def reload_if_changed(self) -> bool:
        """Open the store again if its manifest names a new generation. The manifest is the store's commit
        point and `SAMCL.open` verifies every file it names, so a half-written learn is never served; on any
        error the current set keeps serving and the error is reported by /healthz."""
        try:
            generation = int(read_manifest(self.config.store).get("generation", 0))
            if generation == self.generation:
                return False
            fresh = SAMCL.open(self.config.store, base=self.samcl.backbone, device=self.samcl.device,
                               fallback=self.config.fallback, precision=self.config.precision,
                               runtime=self.config.runtime)
        except (SamclError, OSError, ValueError) as exc:
            self.reload_error = str(exc)
            log.warning("store not reloaded, still serving generation %s: %s", self.generation, exc)
            return False
        self.samcl, self.reload_error = fresh, None
        log.info("store generation %s: %s", fresh.module_set.generation, ", ".join(fresh.domains) or "no domains")
        return True

    # ------------------------------------------------------------------ one batch
    @torch.no_grad()
    def run(self, jobs: list[Job]) -> None:
        """Run a batch; each job gets its result or its own error (one bad job does not fail the others)."""
        self.batches += 1
        engine = self.samcl.engine
        for job in jobs:
            job.batch_size, job.generation = len(jobs), self.generation
        start = time.perf_counter()
        self._prefixes(engine, jobs)
        prefixed = time.perf_counter()
        segments = [j for j in jobs if j.kind == "segment" and self._resolve(engine, j)]
        self._choose(engine, [j for j in jobs if j.kind == "upload" or (j in segments and j.domain is None)])
        chosen = time.perf_counter()
        if segments:
            self._segment(engine, segments)
        done = time.perf_counter()
        for job in jobs:
            job.timings.update(prefix_ms=(prefixed - start) * 1e3 if job.image is not None else 0.0,
                               select_ms=(chosen - prefixed) * 1e3, model_ms=(done - start) * 1e3)

    def _prefixes(self, engine: Engine, jobs: list[Job]) -> None:
        """Blocks 0..s for the images not cached yet, in one pass; each image cached once (its own copy)."""
        missing: dict[str, np.ndarray] = {}
        for job in jobs:
            if job.entry is None:
                missing.setdefault(job.key, job.image)
        if not missing:
            return
        tokens, geometries = engine.prefix(list(missing.values()))
        fresh = {}
        for k, (key, image) in enumerate(missing.items()):
            own = batch_ops.map_batch(torch.clone, batch_ops.take(tokens, k))  # a view would hold the batch
            fresh[key] = CachedImage(own, geometries[k], (int(image.shape[0]), int(image.shape[1])))
            self.cache.put(key, fresh[key])
        for job in jobs:
            if job.entry is None:
                job.entry = fresh[job.key]

    def _resolve(self, engine: Engine, job: Job) -> bool:
        """A forced domain -> its class index under the current generation (it may have changed since the
        request was checked)."""
        if job.domain is None:
            return True
        try:
            job.index = engine.module_set.index_of(job.domain)
        except SamclError as exc:
            job.error = ApiError(400, "unknown_domain", str(exc))
            return False
        return True

    def _choose(self, engine: Engine, jobs: list[Job]) -> None:
        """The selector's pick for each job's image under this generation, computed once per image."""
        generation = self.generation
        open_ = {j.key: j.entry for j in jobs if generation not in j.entry.choices}
        if open_:
            tokens = batch_ops.stack([entry.tokens for entry in open_.values()])
            picks, scores = choose_scored(engine, tokens, [None] * len(open_))
            for entry, pick, score in zip(open_.values(), picks, scores):
                entry.choices[generation] = (pick, score)
        for job in jobs:
            job.index, job.score = job.entry.choices[generation]
            job.chosen = engine.module_set.domain_name(job.index)  # named now: a reload may renumber classes

    def _segment(self, engine: Engine, jobs: list[Job]) -> None:
        """One suffix pass for the batch (each image its own module rows), then the decoder by prompt shape."""
        device = engine.device
        inputs = [InputPrompt.of(j.prompt, j.entry.geometry, device) for j in jobs]
        start = time.perf_counter()
        embeddings = engine.suffix(batch_ops.stack([j.entry.tokens for j in jobs]), [j.index for j in jobs], inputs)
        suffix_ms = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        names = [engine.module_set.domain_name(j.index) for j in jobs]
        predictions = engine.decode_many(embeddings, inputs, [j.entry.geometry for j in jobs], False, names)
        decode_ms = (time.perf_counter() - start) * 1e3
        for job, prediction in zip(jobs, predictions):
            job.prediction = prediction
            job.timings.update(suffix_ms=suffix_ms, decode_ms=decode_ms)
