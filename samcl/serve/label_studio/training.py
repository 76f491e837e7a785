"""Learning a Label Studio project as a domain, in the background, while the server keeps predicting.

    worker.request(project)      # START_TRAINING: queue a learn of the project (a second request while one runs
                                 # queues one more run after it, so the newest annotations are always learned)
    worker.count(project, n)     # a new annotation: learn once every n of them (0: never)

A learn fetches the project's annotated tasks (Label Studio's JSON export) and their images one task at a time
(fetched, decoded and the annotation's RLE decoded in a worker thread, the file's bytes dropped before the next),
at most `max_learn_tasks` tasks and `max_learn_megapixels` of images held together (checked from each image's
header before it is decoded; /label-studio/learning reports what a learn holds), turns each task's
latest annotation into a mask (brush RLE and polygons, united) with its keypoints as the image's prompt points,
and learns the domain into the store with its own opened copy of the set: the first time a new module, later a
relearn that replaces the domain's module in one new generation. The serving model is not touched: it keeps
answering from the generation it has until its store watcher sees the commit and reloads (`ModelHost`). The
learns run one at a time in one thread; the store's writer lock keeps other writers (a CLI learn, another
worker process) out while one commits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from ... import SamclError
from ...data import Sample
from .. import codec
from ..config import ServeConfig
from ..errors import ApiError
from .fetch import LabelStudioSource
from .labels import Tags, annotation_target
from .settings import LabelStudioSettings, ProjectSettings

log = logging.getLogger("samcl.serve")


def latest_annotation(task: dict) -> list | None:
    """The results of the task's newest annotation that was not skipped (None: none)."""
    kept = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")
            and isinstance(a.get("result"), list) and a["result"]]
    if not kept:
        return None
    return max(kept, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))["result"]


def held(samples: list[Sample], settings: LabelStudioSettings) -> dict:
    """What a learn's samples hold: images (3 bytes a pixel) and masks (1), against the megapixel cap."""
    pixels = sum(s.image.shape[0] * s.image.shape[1] for s in samples)
    return {"images": len(samples), "megapixels": round(pixels / 1e6, 3), "bytes": pixels * 4,
            "max_megapixels": settings.max_learn_megapixels}


class LearningWorker:
    def __init__(self, config: ServeConfig, settings: LabelStudioSettings, source: LabelStudioSource):
        self.config, self.settings, self.source = config, settings, source
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="samcl-learn")
        self.state: dict[int, dict] = {}
        self.counts: dict[int, int] = {}
        self.tasks: dict[int, asyncio.Task] = {}
        self.again: set[int] = set()

    def busy(self) -> bool:
        return any(s["state"] in ("queued", "learning") for s in self.state.values())

    def report(self) -> dict:
        return {"projects": {str(k): v for k, v in self.state.items()}}

    def count(self, project: ProjectSettings, every: int) -> dict:
        self.counts[project.project] = self.counts.get(project.project, 0) + 1
        if every and self.counts[project.project] >= every:
            self.counts[project.project] = 0
            return self.request(project)
        return {"status": "counted", "annotations": self.counts[project.project], "train_every": every}

    def request(self, project: ProjectSettings) -> dict:
        """Queue a learn of `project`; answers at once (Label Studio waits at most a few seconds)."""
        self.counts[project.project] = 0
        number = project.project
        if number in self.tasks and not self.tasks[number].done():
            self.again.add(number)
            return {"status": "queued", "project": number, "domain": project.domain_name}
        self.state[number] = {"state": "queued", "domain": project.domain_name, "since": time.time()}
        self.tasks[number] = asyncio.get_running_loop().create_task(self._run(project))
        return {"status": "queued", "project": number, "domain": project.domain_name}

    async def _run(self, project: ProjectSettings) -> None:
        number = project.project
        while True:
            self.again.discard(number)
            try:
                samples = await self.samples(project)
                self.state[number].update(state="learning", samples=len(samples), memory=held(samples, self.settings))
                start = time.perf_counter()
                report = await asyncio.get_running_loop().run_in_executor(self.executor, self.learn, project, samples)
                self.state[number] = {"state": "done", "domain": project.domain_name, "samples": len(samples),
                                      "replaced": report["replaced"], "generation": report["generation"],
                                      "seconds": round(time.perf_counter() - start, 2), "since": time.time(),
                                      "memory": held(samples, self.settings)}
                del samples
            except (ApiError, SamclError, ValueError) as exc:
                message = exc.message if isinstance(exc, ApiError) else str(exc)
                self.state[number] = {"state": "failed", "domain": project.domain_name, "error": message,
                                      "code": exc.code if isinstance(exc, ApiError) else "learn_failed",
                                      "since": time.time()}
                log.warning("learning project %s as %r failed: %s", number, project.domain_name, message)
            except Exception as exc:  # the server keeps serving; the error is reported, not raised
                log.exception("learning project %s failed", number)
                self.state[number] = {"state": "failed", "domain": project.domain_name,
                                      "error": f"{type(exc).__name__}: {exc}", "since": time.time()}
            if number not in self.again:
                return
            self.state[number] = {"state": "queued", "domain": project.domain_name, "since": time.time()}

    async def samples(self, project: ProjectSettings) -> list[Sample]:
        """The project's annotated tasks as training samples (image, mask, the annotation's keypoints), one task at
        a time, within the settings' caps on tasks and megapixels."""
        tags = Tags.of(project.label_config)
        tasks = [t for t in await self.source.annotated_tasks(project.project)
                 if isinstance(t, dict) and latest_annotation(t) is not None]
        if len(tasks) > self.settings.max_learn_tasks:
            raise ApiError(413, "too_many_tasks", f"project {project.project}: {len(tasks):,} annotated tasks; a "
                                                  f"learn takes at most {self.settings.max_learn_tasks:,} "
                                                  "(LabelStudioSettings.max_learn_tasks)")
        loop = asyncio.get_running_loop()
        samples, budget = [], int(self.settings.max_learn_megapixels * 1e6)
        state = self.state.get(project.project, {})
        while tasks:
            task = tasks.pop(0)  # the export's task objects go as they are used
            url = (task.get("data") or {}).get(tags.data_key) if isinstance(task.get("data"), dict) else None
            if url is None:
                continue
            data = await self.source.fetch(url)
            left = budget - sum(s.image.shape[0] * s.image.shape[1] for s in samples)
            sample = await loop.run_in_executor(None, self._sample, task, data, tags, left, project.project)
            del data
            if sample is not None:
                samples.append(sample)
                state["memory"] = held(samples, self.settings)
        if not samples:
            raise ApiError(400, "no_annotations", f"project {project.project}: no annotated task has a brush or "
                                                  "polygon region on the image to learn from")
        return samples

    def _sample(self, task: dict, data: bytes, tags: Tags, left: int, project: int) -> Sample | None:
        """One task as a sample, in a worker thread: its image decoded (refused from its header when it would pass
        what the learn may still hold), its annotation's mask (brush RLE checked against the image's size before
        it is decoded)."""
        opened = codec.open_image(data, self.config.max_pixels)
        if opened.width * opened.height > left:
            raise ApiError(413, "learn_too_large", f"project {project}: task {task.get('id')}'s image of "
                                                   f"{opened.width}x{opened.height} pixels passes the "
                                                   f"{self.settings.max_learn_megapixels:g} MP a learn may hold "
                                                   "(LabelStudioSettings.max_learn_megapixels)")
        image = codec.load_image(opened)
        del opened
        height, width = image.shape[:2]
        try:
            mask, points, labels = annotation_target(latest_annotation(task), tags, width, height)
        except (ValueError, TypeError, KeyError, OverflowError) as exc:  # a 400-digit number is an OverflowError
            raise ApiError(400, "bad_annotation", f"project {project}: task {task.get('id')}: "
                                                  f"{' '.join(str(exc).split())[:200]}") from None
        if mask is None:
            return None
        return Sample(f"task-{task.get('id')}", image, mask, points, labels)

    def learn(self, project: ProjectSettings, samples: list[Sample]) -> dict:
        """In the learning thread: open the store (its own copy of the set), learn or relearn, commit."""
        from ... import SAMCL, TrainConfig

        samcl = SAMCL.open(self.config.store, base=self.config.base, device=self.config.device)
        name = project.domain_name
        config = TrainConfig(epochs=project.epochs or self.settings.epochs, batch_size=self.settings.batch_size,
                             seed=self.settings.seed, progress=False)
        log.info("learning project %s as %r from %d annotated images", project.project, name, len(samples))
        report = samcl.learn(name, samples, config, replace=name in samcl.domains)
        report["generation"] = samcl.module_set.generation
        return report

    def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)  # a learn under way finishes or dies: both safe
