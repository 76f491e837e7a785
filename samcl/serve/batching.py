"""Cross-request batching: requests that arrive within a few milliseconds of each other run as one batch.

    batcher = Batcher(host.run, executor, window_s=0.005, max_batch=16)
    await batcher.submit(job)            # returns when the batch holding `job` has run

The first job of a batch waits at most `window_s` for others (counted from its arrival, so jobs that queued
while the previous batch ran go at once; not at all right after a batch of one), up to `max_batch` jobs; `max_batch` 1 runs every job alone (batching
off). Batches run one at a time in the model's single thread (`executor`), so the event loop keeps accepting
requests while the model works, and the model never runs two batches at once. This is what multi-adapter LLM
servers do with per-request adapters (S-LoRA, Punica): the requests of a batch may use different modules.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from typing import Callable

log = logging.getLogger("samcl.serve")


class Batcher:
    def __init__(self, run: Callable[[list], None], executor: Executor | None, window_s: float, max_batch: int):
        self.run, self.executor = run, executor
        self.window_s, self.max_batch = window_s, max(1, max_batch)
        self.queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._last_size = 2  # the first request waits for company

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def submit(self, job) -> None:
        """Queue `job` and wait until its batch has run (its result or error is on the job)."""
        done = asyncio.get_running_loop().create_future()
        job.timings["queued_at"] = time.perf_counter()
        await self.queue.put((job, done))
        await done

    async def call(self, fn: Callable, *args):
        """Run `fn` in the model thread between batches (a store reload)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _gather(self) -> list:
        first = await self.queue.get()
        batch = [first]
        # After a batch of one (a lone client, or a lull) a request runs at once instead of paying the window for
        # company that is not coming; jobs that queue meanwhile make the next batch larger, and waiting resumes.
        window = self.window_s if self._last_size > 1 else 0.0
        deadline = first[0].timings["queued_at"] + window
        while len(batch) < self.max_batch:
            try:
                batch.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except (asyncio.TimeoutError, TimeoutError):
                break
        self._last_size = len(batch)
        return batch

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            jobs = [job for job, _ in batch]
            started = time.perf_counter()
            for job in jobs:
                job.timings["queue_ms"] = (started - job.timings.pop("queued_at")) * 1e3
            try:
                await loop.run_in_executor(self.executor, self.run, jobs)
            except Exception as exc:
                if len(jobs) == 1:
                    jobs[0].error = exc
                else:  # a whole batch failed: run each job alone, so one job cannot fail the others
                    log.exception("batch of %d failed; running its jobs one by one", len(jobs))
                    for job in jobs:
                        try:
                            await loop.run_in_executor(self.executor, self.run, [job])
                        except Exception as single:
                            job.error = single
            for _, done in batch:
                if not done.done():
                    done.set_result(None)
