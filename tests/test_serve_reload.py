"""A store that changes under a running server: picks cached per manifest_sha256 (the manifest's sha256, never the
generation number), and a new generation whose load hangs abandoned while the old one keeps serving."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import copy_store, make_store, png, sample_images, wait_until  # noqa: E402
from test_serve_api import mask_of  # noqa: E402
from test_serve_process import free_port, start_server  # noqa: E402

from samcl import SAMCL, Prompt, SelectorConfig, TrainConfig, load_backbone  # noqa: E402
from samcl.data.synthetic import generate  # noqa: E402
from samcl.serve import ServeConfig, create_app  # noqa: E402

QUICK = TrainConfig(epochs=1, batch_size=4, progress=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("reload") / "store")


def client(store, **settings) -> TestClient:
    return TestClient(create_app(ServeConfig(store=store, max_megapixels=0.25, reload_seconds=0.05, **settings)))


def expected_of(path, sample):
    return SAMCL.open(path).segment([sample.image], [Prompt.of(sample.points, sample.labels)])[0]


def test_a_store_recreated_to_the_same_generation_routes_by_the_new_store(tmp_path):
    """Deleted and learned again in the other order while serving: generation 2 again, other domain numbers. The
    image's cached pick (domain 2, 'cells', under the old store) must not be reused: it is 'polyps' now."""
    path = make_store(tmp_path / "store")  # polyps, then cells
    sample = generate("cells", 1, 7, "test")[0]
    with client(path) as c:
        upload = c.post("/v1/images", content=png(sample.image)).json()
        assert upload["domain"] == "cells"  # a learned domain, whose number differs in the recreated store
        body = {"image_id": upload["image_id"], "points": sample.points.tolist(), "mask_format": "rle"}
        assert c.post("/v1/segment", json=body).json()["domain"] == "cells"
        shutil.rmtree(path)
        samcl = SAMCL.create(load_backbone("builtin:tiny-sam"), path,
                             selector=SelectorConfig(samples_per_domain=8, epochs=5))
        for generation, domain in enumerate(("cells", "polyps"), 1):
            samcl.learn(domain, generate(domain, 8, 0), QUICK)
            wait_until(lambda: c.get("/healthz").json()["generation"] == generation)
        answer = c.post("/v1/segment", json=body).json()
    expected = expected_of(path, sample)
    assert answer["generation"] == 2 and answer["domain"] == expected.domain == "cells"
    assert np.array_equal(mask_of(answer), expected.masks[0])


def test_a_store_swapped_in_place_at_the_same_generation_is_served(store, tmp_path):
    """Another store of the same generation number moved into the served folder (a restored copy, a redeploy)."""
    path = copy_store(store, tmp_path / "store")
    other = make_store(tmp_path / "other", ("shadows", "cells"))
    sample = generate("shadows", 1, 3, "test")[0]
    with client(path) as c:
        upload = c.post("/v1/images", content=png(sample.image)).json()
        body = {"image_id": upload["image_id"], "points": sample.points.tolist(), "mask_format": "rle"}
        before = c.post("/v1/segment", json=body).json()
        shutil.rmtree(path)
        os.rename(other, path)
        wait_until(lambda: [d["name"] for d in c.get("/v1/domains").json()["domains"]] == ["shadows", "cells"])
        answer = c.post("/v1/segment", json=body).json()
    expected = expected_of(path, sample)
    assert before["generation"] == answer["generation"] == 2
    assert answer["domain"] == expected.domain and np.array_equal(mask_of(answer), expected.masks[0])


def test_a_served_store_opens_from_one_read_and_check_of_its_manifest(store, monkeypatch):
    """The server hashes the very manifest bytes it opens the store from: one read and one check per open (at start
    and on a reload, whose poll's read is the one), and one more read (a hash, no parse) that confirms the file
    still holds them."""
    import hashlib

    import samcl.serve.reload
    import samcl.store.files
    import samcl.store.manifest

    reads, checks = [], []
    real_bytes, real_check = samcl.store.manifest.manifest_bytes, samcl.store.files.check_manifest
    counted = lambda *a: reads.append(1) or real_bytes(*a)  # noqa: E731
    monkeypatch.setattr(samcl.store.manifest, "manifest_bytes", counted)
    monkeypatch.setattr(samcl.serve.reload, "manifest_bytes", counted)
    monkeypatch.setattr(samcl.store.files, "check_manifest", lambda *a: checks.append(1) or real_check(*a))
    app = create_app(ServeConfig(store=store, max_megapixels=0.25))
    assert (len(reads), len(checks)) == (2, 1)
    digest = hashlib.sha256((store / "manifest.json").read_bytes()).hexdigest()
    assert app.state.host.manifest_sha256 == digest
    host, reads[:], checks[:] = app.state.host, [], []
    host.manifest_sha256 = "another generation"  # the reload's poll then opens the store from the bytes it read
    fresh, fresh_digest = samcl.serve.reload.Reloader(host, None, timeout_s=30)._work()
    assert (len(reads), len(checks)) == (2, 1) and fresh_digest == digest and fresh.domains == host.samcl.domains


def test_a_reload_that_hangs_is_abandoned_and_the_old_generation_keeps_serving(store, tmp_path, monkeypatch):
    path = copy_store(store, tmp_path / "store")
    real_open, release = SAMCL.open, threading.Event()

    def hanging_open(cls, *args, **kwargs):  # a read that does not return (a FIFO, a hung mount) until released
        release.wait(120)
        return real_open(*args, **kwargs)

    sample = sample_images(1)[0]
    with client(path, reload_timeout_seconds=1.0) as c:
        generation = c.get("/healthz").json()["generation"]
        monkeypatch.setattr(SAMCL, "open", classmethod(hanging_open))
        real_open(path).learn("shadows", generate("shadows", 8, 0), QUICK)
        try:
            health = wait_until(lambda: (h := c.get("/healthz").json())["reload_stuck"] and h, "a stuck reload", seconds=10)
            assert "abandoned" in health["reload_error"] and health["generation"] == generation
            answers = []
            upload = threading.Thread(target=lambda: answers.append(c.post("/v1/images", content=png(sample.image))))
            upload.start()
            upload.join(10)  # batches do not wait for the stuck load
            assert answers and answers[0].status_code == 200 and answers[0].json()["generation"] == generation
        finally:
            release.set()
        # the stuck load returned: the next check loads the new generation
        wait_until(lambda: c.get("/healthz").json()["generation"] == generation + 1)
        health = c.get("/healthz").json()
        assert health["reload_error"] is None and not health["reload_stuck"]


def test_a_generation_naming_a_fifo_does_not_stop_uploads_or_sigint(store, tmp_path):
    """The real process: a new manifest names a FIFO as a module file. /healthz reports the reload's failure,
    uploads are answered by the old generation, and SIGINT still stops the server."""
    path = copy_store(store, tmp_path / "store")
    port = free_port()
    server = start_server(path, port, "--reload-seconds", "0.2", "--reload-timeout-seconds", "2")
    try:
        url = f"http://127.0.0.1:{port}"
        generation = httpx.get(url + "/healthz").json()["generation"]
        os.mkfifo(path / "modules" / "stuck.safetensors")
        manifest = json.loads((path / "manifest.json").read_text())
        manifest["generation"] += 1
        manifest["domains"][0]["file"] = "modules/stuck.safetensors"
        (path / "manifest.json.tmp").write_text(json.dumps(manifest))
        os.replace(path / "manifest.json.tmp", path / "manifest.json")
        health = wait_until(lambda: (h := httpx.get(url + "/healthz", timeout=5).json())["reload_error"] and h,
                            "a reload error", seconds=10)
        assert health["generation"] == generation
        sample = sample_images(1)[0]
        answer = httpx.post(url + "/v1/images", content=png(sample.image), timeout=10)
        assert answer.status_code == 200 and answer.json()["generation"] == generation
        inline = {"image": base64.b64encode(png(sample.image)).decode(), "points": [[4, 4]]}
        assert httpx.post(url + "/v1/segment", json=inline, timeout=10).status_code == 200
        os.killpg(server.pid, signal.SIGINT)
        assert server.wait(10) == 0
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(30)
