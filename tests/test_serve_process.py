"""`samcl serve` as users run it: two worker processes on one store, a learn picked up by both, and a SIGKILL
that loses nothing (the server only reads the store; a restarted server answers the same)."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from serve_helpers import make_store, png, sample_images, store_files  # noqa: E402

from samcl import SAMCL, TrainConfig  # noqa: E402
from samcl.data.synthetic import generate  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(store, port: int, *flags: str) -> subprocess.Popen:
    """`samcl serve` in its own process group (so a SIGKILL takes its workers too); returns once it answers."""
    command = [sys.executable, "-m", "samcl.cli", "serve", str(store), "--port", str(port), "--threads", "1", *flags]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"samcl serve exited {process.returncode}: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError("samcl serve did not answer within 180 s")


def kill(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)


def health(port: int) -> dict:
    with httpx.Client(timeout=60) as client:  # a new connection each time
        return client.get(f"http://127.0.0.1:{port}/healthz").json()


def segment(port: int, body: dict) -> dict:
    with httpx.Client(timeout=60) as client:  # a new connection each time: the kernel spreads them over workers
        answer = client.post(f"http://127.0.0.1:{port}/v1/segment", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.slow  # three server processes start (about a minute on 2 shared cores)
def test_two_workers_a_learn_and_a_sigkill(tmp_path):
    store = make_store(tmp_path / "store")
    samples = sample_images(4)
    bodies = [{"image": base64.b64encode(png(s.image)).decode(), "points": s.points.tolist(),
               "mask_format": "rle"} for s in samples]
    port = free_port()
    server = start_server(store, port, "--workers", "2", "--reload-seconds", "0.2")
    try:
        # start_server returns when the first worker answers; the second may still be loading the model (seconds
        # on 2 busy cores), and until then the kernel hands every connection to the first one
        pids, deadline = set(), time.monotonic() + 120
        while len(pids) < 2 and time.monotonic() < deadline:
            with ThreadPoolExecutor(8) as pool:
                pids |= set(pool.map(lambda _: health(port)["pid"], range(16)))
        assert len(pids) == 2, pids  # two processes answered
        with ThreadPoolExecutor(8) as pool:
            first = list(pool.map(lambda i: segment(port, bodies[i % 4]), range(16)))
        for i, answer in enumerate(first):  # whichever process answered, the same image gives the same mask
            assert answer["mask"] == first[i % 4]["mask"] and answer["domain"] == first[i % 4]["domain"]

        generation = first[0]["generation"]
        SAMCL.open(store).learn("shadows", generate("shadows", 8, 0), TrainConfig(epochs=1, batch_size=4,
                                                                                  progress=False))
        seen, deadline = set(), time.monotonic() + 60
        while len(seen) < 2 and time.monotonic() < deadline:  # both workers serve the new generation
            answer = health(port)
            if answer["generation"] == generation + 1:
                seen.add(answer["pid"])
        assert seen == pids
        forced = segment(port, {**bodies[0], "force": "shadows"})
        assert forced["domain"] == "shadows" and forced["generation"] == generation + 1
        before_kill = segment(port, bodies[1])
        files = store_files(store)
    finally:
        kill(server)
    assert store_files(store) == files  # the store as the learn left it: the server never wrote to it
    port = free_port()
    server = start_server(store, port)
    try:
        after = segment(port, bodies[1])
    finally:
        kill(server)
    assert after["mask"] == before_kill["mask"] and after["domain"] == before_kill["domain"]
    assert after["generation"] == before_kill["generation"]
