"""Picking up a new store generation while serving: what identifies a generation, and a reload in bounded time.

    digest = manifest_sha256(store)             # sha256 of manifest.json's bytes
    reloader = Reloader(host, swap, timeout_s=30)
    await reloader.check()                       # each --reload-seconds, on the event loop

A generation is identified by its manifest's sha256, not by its number: a store deleted and learned again in
another order (or an older copy restored, then forgotten into) reaches the same numbers with other modules
behind them, and anything cached per generation (the selector's pick per image) would then route images to
another domain's module. The manifest names every file with its sha256, so equal bytes mean an equal set.

The check and the load run in a thread of their own (daemon: a read that never returns cannot keep the process
from exiting on SIGINT), never in the model's thread, so batches go on while a new generation loads. A load that
has not finished after `timeout_s` is abandoned: the old generation keeps serving, `/healthz` reports the reason,
and no new attempt starts until the stuck thread returns (one stuck thread at most, never one per tick).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

from .. import SamclError
from ..store import manifest_bytes

log = logging.getLogger("samcl.serve")


def manifest_sha256(store: Path) -> str:
    """sha256 (hex) of STORE/manifest.json's bytes, read as the store reads them (`manifest_bytes`: a regular
    file, bounded; a FIFO or a device in its place is refused instead of hanging or streaming for ever)."""
    return hashlib.sha256(manifest_bytes(store)).hexdigest()


def opened_with_manifest_sha256(open_store: Callable, store: Path, tries: int = 3, data: bytes | None = None):
    """(what `open_store(manifest)` opened, the sha256 of the manifest it opened). The manifest is read once: its
    bytes are hashed, checked (`ModuleStore.read_manifest`) and handed to `open_store` (`SAMCL.open(...,
    manifest=)`: not read again). The open reads every file the manifest names by its sha256; if a commit
    replaced those files meanwhile, the open moves on to the new generation, so the open is accepted only when
    it opened that manifest's generation and the file still holds those bytes (a hash of it, not a second
    parse), else tried again. A store that keeps changing gets a value no other load shares (its picks are then
    never reused). `data`: the manifest's bytes as the caller has just read them (the reload's poll), for the
    first try."""
    from ..store import ModuleStore

    for _ in range(tries):
        try:
            data = manifest_bytes(store) if data is None else data
        except (OSError, SamclError):  # no manifest (yet): the open names the problem in its own words
            opened, digest, manifest = open_store(None), None, None
        else:
            digest, manifest = hashlib.sha256(data).hexdigest(), ModuleStore(store).read_manifest(data)
            opened = open_store(manifest)
        data = None  # a further try reads the file again
        if manifest is not None and opened.module_set.generation == manifest.generation \
                and manifest_sha256(store) == digest:
            return opened, digest
    return opened, f"unsettled-{os.urandom(8).hex()}"


class Reloader:
    """Checks the store for a new generation in a daemon thread, within `timeout_s`.

    `host` has `manifest_sha256`, `generation`, `reload_error` and `load_fresh(data)` (returns (set,
    manifest_sha256), opened from the manifest bytes `data` the check read);
    `swap(set, manifest_sha256)` is awaited to put a loaded set in service (in the model thread, between batches)."""

    def __init__(self, host, swap: Callable, timeout_s: float):
        self.host, self.swap, self.timeout_s = host, swap, timeout_s
        self.stuck: threading.Thread | None = None
        self.stuck_since: float | None = None

    def _work(self):
        """In the reload thread: None when the store is unchanged, else (set, manifest_sha256)."""
        data = manifest_bytes(self.host.config.store)
        if hashlib.sha256(data).hexdigest() == self.host.manifest_sha256:
            return None
        return self.host.load_fresh(data)  # opened from these very bytes: the manifest is not read again

    async def check(self) -> None:
        if self.stuck is not None:
            if self.stuck.is_alive():
                return  # still stuck: reported already; no second thread
            self.stuck = self.stuck_since = None
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def run() -> None:
            try:
                outcome = self._work()
            except BaseException as exc:  # noqa: BLE001 - reported on the event loop
                outcome = exc
            try:
                loop.call_soon_threadsafe(lambda: done.done() or done.set_result(outcome))
            except RuntimeError:  # the loop closed while this thread was stuck: nobody waits any more
                pass

        thread = threading.Thread(target=run, name="samcl-reload", daemon=True)
        thread.start()
        try:
            outcome = await asyncio.wait_for(asyncio.shield(done), self.timeout_s)
        except (asyncio.TimeoutError, TimeoutError):
            self.stuck, self.stuck_since = thread, time.time()
            self.host.reload_error = (f"reload abandoned: the store's new generation did not finish loading within "
                                      f"{self.timeout_s:g} s (a file that never finishes reading, such as a FIFO "
                                      f"or a hung mount); still serving generation {self.host.generation}")
            log.warning("%s", self.host.reload_error)
            return
        if outcome is None:
            return
        if isinstance(outcome, (SamclError, OSError, ValueError)):
            self.host.reload_error = str(outcome)
            log.warning("store not reloaded, still serving generation %s: %s", self.host.generation, outcome)
            return
        if isinstance(outcome, BaseException):  # a bug, not the store: reported, and logged with its traceback
            self.host.reload_error = f"reload failed: {type(outcome).__name__}: {str(outcome)[:200]}"
            raise outcome
        await self.swap(*outcome)
