"""Running the benchmark's jobs: in this process (jobs = 1) or in single-threaded worker processes, with one
progress bar over units of work, a `--max-steps` limit, and Ctrl-C or a failing job stopping every worker at
once (every finished step is already saved; a killed step is redone on resume).

A job is a module-level function `fn(item, context)`: `context` (`WorkerContext`) is how it reports finished
units and learns that --max-steps is reached. The executor passes it explicitly in this process; a worker process
receives it once from the pool's initializer (multiprocessing queues and counters may only reach a process when it
starts) and hands it to each job it runs.
"""

from __future__ import annotations

import contextvars
import multiprocessing
import os
import queue
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from ..io import bar


class BenchmarkStopped(Exception):
    """--max-steps reached: every finished step is saved; rerun to continue."""


@dataclass(frozen=True)
class WorkerContext:
    """What a job needs from the executor. counter: protocol steps finished in this invocation, over every worker;
    max_steps: stop there (None: never); events: labels of finished units for the parent's bar (worker processes);
    bar: the bar itself (jobs run in this process)."""

    counter: Any  # multiprocessing.Value("l")
    max_steps: int | None
    events: Any = None  # multiprocessing.Queue
    bar: Any = None  # tqdm

    def step_done(self, label: str, counts: bool = True) -> None:
        """Report one finished unit of work (to the progress bar); raise BenchmarkStopped once --max-steps protocol
        steps (units that `count`) are done in this invocation."""
        if self.events is not None:
            self.events.put(label)
        elif self.bar is not None:
            self.bar.update()
            self.bar.set_postfix_str(label, refresh=False)
        if not counts:
            return
        with self.counter.get_lock():
            self.counter.value += 1
            reached = self.max_steps is not None and self.counter.value >= self.max_steps
        if reached:
            raise BenchmarkStopped(label)


#: The context of the jobs a worker process runs, set once by the pool's initializer (never in the parent).
_WORKER_CONTEXT: contextvars.ContextVar[WorkerContext] = contextvars.ContextVar("samcl_bench_worker")


def _deterministic_single_thread() -> None:
    """One thread per run and deterministic kernels: a run's numbers do not depend on --jobs or on other runs."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, should a GPU be used
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _init_pool_worker(context: WorkerContext) -> None:
    """A worker process leaves Ctrl-C to the parent, which stops every worker at once (`Executor.close`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tqdm.set_lock(threading.RLock())  # workers draw no bars; tqdm's default inter-process lock would outlive a kill
    _deterministic_single_thread()
    _WORKER_CONTEXT.set(context)


def _run_in_worker(fn: Callable, item):
    return fn(item, _WORKER_CONTEXT.get())


class Executor:
    """Runs jobs in this process (jobs = 1) or in `jobs` single-threaded worker processes, with one progress bar
    over units (learning-rate trials, protocol steps). On an error or Ctrl-C the workers are stopped at once."""

    def __init__(self, jobs: int, total: int, progress: bool, max_steps: int | None):
        self.bar = bar(total=total, desc="benchmark", unit="step", progress=progress)
        ctx = multiprocessing.get_context("spawn")
        counter = ctx.Value("l", 0)
        self.pool = self.events = None
        self.local = WorkerContext(counter, max_steps, bar=self.bar)  # the context of jobs run in this process
        if jobs > 1:
            self.events = ctx.Queue()
            self.pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_pool_worker,
                                            initargs=(WorkerContext(counter, max_steps, events=self.events),))

    def map(self, fn: Callable, items: list) -> list:
        """[fn(item, context) for item in items], in order; the first error (or BenchmarkStopped) is raised."""
        if self.pool is None:
            threads = torch.get_num_threads()
            _deterministic_single_thread()
            try:
                return [fn(item, self.local) for item in items]
            finally:
                torch.set_num_threads(threads)
        futures = [self.pool.submit(_run_in_worker, fn, item) for item in items]
        while not all(f.done() for f in futures):
            self._drain(timeout=0.5)
            failed = next((f for f in futures if f.done() and f.exception() is not None), None)
            if failed is not None:  # an error (or --max-steps) in one run stops the others now (see close)
                failed.result()
        self._drain()
        return [f.result() for f in futures]

    def _drain(self, timeout: float | None = None) -> None:
        try:
            while True:
                label = self.events.get(timeout=timeout) if timeout else self.events.get_nowait()
                self.bar.update()
                self.bar.set_postfix_str(label, refresh=False)
                timeout = None
        except queue.Empty:
            pass

    def close(self, stop: bool = False) -> None:
        """stop: terminate the workers now (after an error or Ctrl-C) instead of letting them finish."""
        self.bar.close()
        if self.pool is None:
            return
        if not stop:
            self.pool.shutdown(wait=True)
        elif hasattr(self.pool, "terminate_workers"):  # Python 3.14+
            self.pool.terminate_workers()
        else:  # no public way before 3.14: the executor's own process table
            for worker in list((getattr(self.pool, "_processes", None) or {}).values()):
                worker.terminate()
            self.pool.shutdown(wait=True, cancel_futures=True)  # the pool sees its workers gone and cleans up
