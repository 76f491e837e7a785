"""The server's side of the inference engine: one opened store, its image cache, and a batch of jobs run as one
pass through `samcl.inference.engine.Engine` (no second inference path).

    host = ModelHost(config)              # SAMCL.open(store): read-only, the base recorded in the store
    host.run([ModelTask("upload", key, image=image),   # the model thread only
              ModelTask("segment", key, entry=entry, prompt=prompt)])
    fresh, digest = host.load_fresh()     # a `learn` committed a new generation: open it (any thread)
    host.swap(fresh, digest)              # in the model thread, between batches (digest: the manifest's sha256)

A batch may hold uploads and segment requests of different images and domains. The server is a front end over
the engine's two calls, like `SAMCL.segment` and the predictor: the images not cached run through
`Engine.prepare` together (the engine's prefix cache, keyed by image id, is the server's image cache), and every
segment job goes through one `Engine.run` (the selector on each image's pooled features, one suffix pass with
per-sample module rows, the decoder once per prompt shape), so each result equals running it alone (up to float
rounding). Nothing routed is cached: the pick is made again from the pooled features under the set now loaded,
so a new generation, or a store recreated with the same generation numbers, never answers with an old pick.
Batches and swaps run in one thread; the event loop only queues jobs; a new generation loads beside them
(`reload`) and takes over the cache (the frozen base makes every prefix valid for ever).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import SAMCL, Prompt, SamclError
from .._renamed import renamed_names
from ..inference import Engine, PrefixCache, PreparedImage
from ..store import ModuleStore
from .config import ServeConfig
from .errors import ApiError, answer_for
from .reload import opened_with_manifest_sha256

log = logging.getLogger("samcl.serve")


@dataclass(eq=False)  # compared by identity: a job holds arrays
class ModelTask:
    """One request's work for the model thread. `entry` is the cached image (None: `image` must run through the
    prefix first)."""

    kind: str  # "upload", "segment" or "generate" (automatic masks: `config`, the result in `prediction`)
    key: str
    image: np.ndarray | None = None
    entry: PreparedImage | None = None
    prompt: Prompt | None = None
    domain: str | None = None
    config: Any = None  # a generate job's AutoMaskConfig
    # filled by the model thread
    prediction: Any = None
    index: int = -1
    chosen: str = "base"
    generation: int = 0
    domain_score: float | None = None  # the selector's score for `chosen`
    error: Exception | None = None
    timings: dict = field(default_factory=dict)
    batch_size: int = 1


__getattr__ = renamed_names(__name__, {"Job": "ModelTask"}, globals())


class ModelHost:
    """A store opened read-only, its image cache, and the batch runner."""

    def __init__(self, config: ServeConfig):
        self.config = config
        if config.threads:
            torch.set_num_threads(config.threads)
        self.samcl, self.manifest_sha256 = opened_with_manifest_sha256(
            lambda manifest: SAMCL.open(config.store, base=config.base, device=config.device, fallback=config.fallback,
                                        precision=config.precision, runtime=config.runtime, manifest=manifest),
            config.store)
        self.samcl.cache_prefixes(config.cache_bytes)  # uploaded images by id, least recently used out
        self.reload_error: str | None = None
        self.batches = 0

    @staticmethod
    def check_store(config: ServeConfig) -> None:
        """The store's manifest reads (and its base is there) without loading any model."""
        manifest = ModuleStore(config.store).read_manifest()  # checked; no model loaded
        hint = config.base or manifest.base_hint
        if not hint:
            lacking = f"{config.store}: the store does not record its base model"
            raise SamclError(f"{lacking}; set ServeConfig.base", code="no_base", field="ServeConfig.base")

    @property
    def cache(self) -> PrefixCache:
        """The uploaded images' prepared prefixes, by image id (the engine's cache; thread-safe)."""
        return self.samcl.engine.cache

    @property
    def generation(self) -> int:
        return self.samcl.module_set.generation

    def domains(self) -> list[dict]:
        module_set = self.samcl.module_set
        return [{"name": d.name, "kind": d.kind, "bytes": d.bytes or 0, "parameters": d.parameters or 0}
                for d in module_set.domains]

    def base_identity(self) -> dict:
        module_set = self.samcl.module_set
        return {"backbone": module_set.backbone, "base": module_set.base_hint}

    # ------------------------------------------------------------------ a learn during serving
    def load_fresh(self, data: bytes | None = None) -> tuple[SAMCL, str]:
        """The store opened again on this base, with its manifest's sha256. The manifest is the store's commit point and
        `SAMCL.open` verifies every file it names, so a half-written learn is never served. Any thread. `data`: the
        manifest's bytes as the reload's poll read them (None: read here)."""
        return opened_with_manifest_sha256(
            lambda manifest: SAMCL.open(self.config.store, base=self.samcl.backbone, device=self.samcl.device,
                                        fallback=self.config.fallback, precision=self.config.precision,
                                        runtime=self.config.runtime, manifest=manifest), self.config.store,
            data=data)

    def swap(self, fresh: SAMCL, manifest_sha256: str) -> None:
        """Serve `fresh` from the next batch on (in the model thread, so no batch sees two sets), with the
        uploaded images kept."""
        fresh.adopt_cache(self.samcl)
        self.samcl, self.manifest_sha256, self.reload_error = fresh, manifest_sha256, None
        log.info("store generation %s (manifest %s): %s", fresh.module_set.generation, manifest_sha256[:12],
                 ", ".join(fresh.domains) or "no domains")

    # ------------------------------------------------------------------ one batch
    @torch.no_grad()
    def run(self, jobs: list[ModelTask]) -> None:
        """Run a batch; each job gets its result or its own error (one bad job does not fail the others)."""
        self.batches += 1
        engine = self.samcl.engine
        for job in jobs:
            job.batch_size, job.generation = len(jobs), self.generation
        start = time.perf_counter()
        self._prepare(engine, jobs)
        prepared = time.perf_counter()
        uploads = [j for j in jobs if j.kind == "upload"]
        if uploads:
            self._route(engine, uploads)
        segments = [j for j in jobs if j.kind == "segment" and self._resolve(engine, j)]  # generate jobs: below
        if segments:
            self._segment(engine, segments)
        for job in jobs:
            if job.kind == "generate" and self._resolve(engine, job):
                self._generate(engine, job)
        done = time.perf_counter()
        for job in jobs:
            job.timings.update(prefix_ms=(prepared - start) * 1e3 if job.image is not None else 0.0,
                               model_ms=(done - start) * 1e3)

    def _prepare(self, engine: Engine, jobs: list[ModelTask]) -> None:
        """Blocks 0..s for the images not cached yet, in one pass, cached by image id."""
        missing: dict[str, np.ndarray] = {}
        for job in jobs:
            if job.entry is None:
                missing.setdefault(job.key, job.image)
        if not missing:
            return
        fresh = dict(zip(missing, engine.prepare(list(missing.values()), keys=list(missing))))
        for job in jobs:
            if job.entry is None:
                job.entry = fresh[job.key]

    def _route(self, engine: Engine, jobs: list[ModelTask]) -> None:
        """An upload's answer: the selector's pick for its image under the set now loaded."""
        chosen, scores = engine.route(torch.stack([j.entry.pooled for j in jobs]))
        for job, index, score in zip(jobs, chosen, scores):
            job.index, job.domain_score, job.chosen = index, score, engine.module_set.domain_name(index)

    def _resolve(self, engine: Engine, job: ModelTask) -> bool:
        """A forced domain is one of the set now loaded (it may have changed since the request was checked)."""
        if job.domain is None:
            return True
        try:
            job.index = engine.module_set.index_of(job.domain)
        except SamclError as exc:
            job.error = answer_for(exc, "unknown_domain")
            return False
        return True

    def _segment(self, engine: Engine, jobs: list[ModelTask]) -> None:
        """One `Engine.run` for the batch: each image routed (or forced), its own module rows, the decoder by
        prompt shape."""
        start = time.perf_counter()
        predictions = engine.run([j.entry for j in jobs], [j.prompt for j in jobs], force=[j.domain for j in jobs],
                                 decode_by_shape=True, refine=self.config.refine)
        run_ms = (time.perf_counter() - start) * 1e3
        for job, prediction in zip(jobs, predictions):
            job.prediction, job.chosen, job.domain_score = prediction, prediction.domain, prediction.domain_score
            job.timings.update(run_ms=run_ms)

    def _generate(self, engine: Engine, job: ModelTask) -> None:
        """Automatic masks of one image (`samcl.inference.automatic`): its own encoder pass with its routed module
        and no heat, then the point grid through the decoder."""
        from ..inference import generate_masks

        start = time.perf_counter()
        try:
            [job.prediction] = generate_masks(engine, [job.entry], [job.image], config=job.config, force=job.domain)
        except ValueError as exc:
            job.error = ApiError(422, "invalid_request", str(exc))  # options the generator refuses
            return
        job.chosen, job.domain_score = job.prediction.domain, job.prediction.domain_score
        job.timings.update(run_ms=(time.perf_counter() - start) * 1e3)
