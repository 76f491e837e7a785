"""Shared by the serve tests: a small store learned on synthetic domains, images as PNG bytes."""

from __future__ import annotations

import contextlib
import io
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from samcl import SAMCL, SelectorConfig, TrainConfig, load_backbone
from samcl.data.synthetic import generate

DOMAINS = ("polyps", "cells")


def make_store(path: Path, domains=DOMAINS, prompts: str = "mix") -> Path:
    """A store on the shipped tiny SAM with `domains` learned for one epoch on 8 synthetic images each (~1 s), on
    the training prompt regime `prompts` (`TrainConfig.prompts`)."""
    samcl = SAMCL.create(load_backbone("builtin:tiny-sam"), path, selector=SelectorConfig(samples_per_domain=8,
                                                                                         epochs=5))
    for domain in domains:
        samcl.learn(domain, generate(domain, 8, 0), TrainConfig(epochs=1, batch_size=4, progress=False, prompts=prompts))
    return path


def copy_store(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def sample_images(n: int = 4) -> list:
    """Test samples of different domains (each with its fixed points)."""
    return [generate(("polyps", "cells", "shadows", "camouflage")[i % 4], 1, 100 + i, "test")[0] for i in range(n)]


def store_files(path: Path) -> dict[str, tuple[int, int]]:
    """Every file of a store with its size and modification time (a reader must change none)."""
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))
            if p.is_file()}


@contextlib.contextmanager
def live_server(app):
    """`app` on a real uvicorn server on 127.0.0.1 (a free port), in a thread of this process; yields its URL."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level="info"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def wait_until(condition, what: str = "the condition", seconds: float = 30.0):
    """Poll `condition` every 50 ms until it returns something true (returned), or fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")
