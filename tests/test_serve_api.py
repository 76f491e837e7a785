"""`samcl serve`'s HTTP API through the framework's test client: answers, errors, tokens, batching, reloads."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import copy_store, make_store, png, sample_images, store_files  # noqa: E402

from samcl import SAMCL, Prompt, SamclError, TrainConfig  # noqa: E402
from samcl.data.synthetic import generate  # noqa: E402
from samcl.serve import ServeConfig, create_app  # noqa: E402
from samcl.serve.codec import rle_to_mask  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("serve") / "store")


def client(store, **settings) -> TestClient:
    settings = {"max_upload_bytes": 200_000, "max_megapixels": 0.25, **settings}
    return TestClient(create_app(ServeConfig(store=store, **settings)))


def mask_of(answer: dict) -> np.ndarray:
    mask = answer["mask"]
    if mask["format"] == "rle":
        return rle_to_mask(mask)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(mask["data"])))) > 127


def test_segment_answers_what_the_engine_gives(store):
    sample = sample_images(1)[0]
    expected = SAMCL.open(store).segment([sample.image], [Prompt.of(sample.points, sample.labels)])[0]
    with client(store) as c:
        upload = c.post("/v1/images", content=png(sample.image)).json()
        assert (upload["width"], upload["height"]) == (sample.image.shape[1], sample.image.shape[0])
        body = {"image_id": upload["image_id"], "points": sample.points.tolist(), "labels": [1, 1, 1]}
        answer = c.post("/v1/segment", json=body).json()
        rle = c.post("/v1/segment", json={**body, "mask_format": "rle"}).json()
    assert answer["domain"] == expected.domain == upload["domain"]
    assert np.array_equal(mask_of(answer), expected.masks[0])
    assert np.array_equal(mask_of(rle), expected.masks[0])
    assert answer["score"] == pytest.approx(float(expected.scores[0]), abs=1e-5)  # the predicted IoU
    assert answer["domain_score"] is None or 0 <= answer["domain_score"] <= 1  # the selector's, where it gives one
    assert answer["timings"]["prefix_ms"] == 0 and answer["timings"]["total_ms"] > 0  # the prefix was cached


def test_forced_domain_inline_image_and_box(store):
    sample = sample_images(1)[0]
    samcl = SAMCL.open(store)
    box = [2, 3, sample.image.shape[1] - 5, sample.image.shape[0] - 4]
    for domain in ("cells", "base"):
        expected = samcl.segment([sample.image], [Prompt.of(sample.points[:1], [1], box)], force=domain)[0]
        with client(store) as c:
            answer = c.post("/v1/segment", json={"image": base64.b64encode(png(sample.image)).decode(),
                                                 "points": sample.points[:1].tolist(), "box": box,
                                                 "force": domain}).json()
        assert answer["domain"] == domain and answer["domain_score"] is None
        assert np.array_equal(mask_of(answer), expected.masks[0])


def test_domains_healthz_page_and_openapi(store):
    with client(store) as c:
        domains = c.get("/v1/domains").json()
        assert [d["name"] for d in domains["domains"]] == ["polyps", "cells"]
        assert all(d["bytes"] > 0 for d in domains["domains"]) and domains["base"]["backbone"]["family"] == "sam"
        health = c.get("/healthz").json()
        assert health["status"] == "ok"
        assert health["manifest_sha256"] == hashlib.sha256((store / "manifest.json").read_bytes()).hexdigest()
        page = c.get("/")
        assert page.status_code == 200 and "page/page.js" in page.text
        assert c.get("/page/page.js").status_code == 200
        assert {"/v1/images", "/v1/segment", "/v1/domains"} <= set(c.get("/openapi.json").json()["paths"])


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert "Traceback" not in error["message"]
    return error["code"]


def test_bad_uploads_are_4xx_naming_the_problem(store):
    sample = sample_images(1)[0]
    big = np.zeros((600, 600, 3), np.uint8)  # 0.36 MP > 0.25 MP, a small PNG
    truncated = png(sample.image)[:60]
    with client(store) as c:
        assert error_of(c.post("/v1/images", content=b""), 400) == "empty_image"
        assert error_of(c.post("/v1/images", content=b"hello, not an image"), 400) == "not_an_image"
        assert error_of(c.post("/v1/images", content=truncated), 400) == "not_an_image"
        assert error_of(c.post("/v1/images", content=png(big)), 413) == "image_too_large"
        no_file = b'--b\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n--b--\r\n'
        form = {"content-type": "multipart/form-data; boundary=b"}
        assert error_of(c.post("/v1/images", content=no_file, headers=form), 400) == "bad_form"
        assert error_of(c.post("/v1/images", content=bytes(300_000)), 413) == "body_too_large"
        chunks = iter([bytes(150_000), bytes(150_000)])  # no Content-Length: counted as it streams
        assert error_of(c.post("/v1/images", content=chunks), 413) == "body_too_large"
        assert error_of(c.post("/v1/segment", json={"image": "%%%", "points": [[1, 1]]}), 400) == "bad_base64"
        inline = base64.b64encode(png(big)).decode()
        assert error_of(c.post("/v1/segment", json={"image": inline, "points": [[1, 1]]}), 413) == "image_too_large"


def test_bad_segment_requests_are_4xx(store):
    sample = sample_images(1)[0]
    with client(store) as c:
        key = c.post("/v1/images", content=png(sample.image)).json()["image_id"]
        ok = {"image_id": key, "points": [[5, 5]]}
        cases = [({"image_id": "0" * 32, "points": [[1, 1]]}, 404, "unknown_image"),
                 ({"points": [[1, 1]]}, 400, "no_image"),
                 ({"image_id": key}, 400, "no_prompt"),
                 ({**ok, "points": [[5, 5000]]}, 400, "point_outside"),
                 ({**ok, "points": [[-1, 5]]}, 400, "point_outside"),
                 ({**ok, "labels": [1, 0]}, 400, "bad_labels"),
                 ({**ok, "labels": [2]}, 422, "invalid_request"),
                 ({**ok, "box": [10, 10, 5, 5]}, 400, "bad_box"),
                 ({**ok, "box": [0, 0, 5000, 5]}, 400, "box_outside"),
                 ({**ok, "force": "nope"}, 400, "unknown_domain"),
                 ({**ok, "mask_format": "jpeg"}, 422, "invalid_request"),
                 ({**ok, "points": [["a", 1]]}, 422, "invalid_request"),
                 ({**ok, "colour": 1}, 422, "invalid_request")]
        for body, status, code in cases:
            assert error_of(c.post("/v1/segment", json=body), status) == code, body
        said = c.post("/v1/segment", json={"image_id": key}).json()["error"]["message"]
        assert said == "no prompt: give at least one point or a box", said  # no Python name ('(Prompt)') in JSON
        assert error_of(c.post("/v1/segment", content=b"{oops", headers={"content-type": "application/json"}),
                        422) == "invalid_request"
        nan = json.dumps({**ok, "points": [[float("nan"), 1]]})
        assert error_of(c.post("/v1/segment", content=nan, headers={"content-type": "application/json"}), 422)
        assert error_of(c.get("/v1/nothing"), 404) == "not_found"
        assert error_of(c.get("/v1/segment"), 405) == "method_not_allowed"


def test_token_is_required_when_set(store, monkeypatch):
    with client(store, token="s3cret") as c:
        assert error_of(c.get("/v1/domains"), 401) == "unauthorized"
        assert error_of(c.get("/v1/domains", headers={"Authorization": "Bearer wrong"}), 401) == "unauthorized"
        assert error_of(c.post("/v1/images", content=b"x", headers={"Authorization": "s3cret"}), 401)
        assert c.get("/v1/domains", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/").status_code == 200
    with pytest.raises(SamclError, match="needs a token"):
        ServeConfig(store=store, host="0.0.0.0")
    assert ServeConfig(store=store, host="::1").token is None  # loopback: no token needed
    monkeypatch.setenv("SAMCL_SERVE_TOKEN", "from-env")
    assert ServeConfig(store=store, host="0.0.0.0").token == "from-env"


def run_concurrently(c: TestClient, bodies: list[dict]) -> list[dict]:
    answers: list = [None] * len(bodies)
    barrier = threading.Barrier(len(bodies))

    def one(i):
        barrier.wait()
        answers[i] = c.post("/v1/segment", json=bodies[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    return [a.json() for a in answers]


def test_concurrent_requests_run_as_one_mixed_batch_equal_to_each_alone(store):
    samples = sample_images(4)
    domains = [None, "polyps", "cells", "base", None, "cells", None, "polyps"]
    with client(store, batch_window_ms=300, max_batch=8) as c:
        keys = [c.post("/v1/images", content=png(s.image)).json()["image_id"] for s in samples]
        bodies = [{"image_id": keys[i % 4], "points": samples[i % 4].points[: 1 + i % 3].tolist(),
                   "labels": [1, 0, 1][: 1 + i % 3], "force": domains[i]} for i in range(8)]
        batched = run_concurrently(c, bodies)
        alone = [c.post("/v1/segment", json=body).json() for body in bodies]  # one at a time: batches of one
    assert max(a["timings"]["batch_size"] for a in batched) > 1
    assert len({a["domain"] for a in batched}) >= 3  # a mixed-domain batch
    assert all(a["timings"]["batch_size"] == 1 for a in alone)
    for together, single in zip(batched, alone):
        assert together["domain"] == single["domain"]
        assert np.array_equal(mask_of(together), mask_of(single))
        assert together["score"] == pytest.approx(single["score"], abs=1e-5)


def test_evicted_image_is_404_and_inline_image_still_works(store):
    first, second = sample_images(2)
    with client(store, cache_bytes=150_000) as c:  # one tiny-SAM prefix (131,072 bytes) fits, two do not
        key = c.post("/v1/images", content=png(first.image)).json()["image_id"]
        c.post("/v1/images", content=png(second.image))
        assert error_of(c.post("/v1/segment", json={"image_id": key, "points": [[3, 3]]}), 404) == "unknown_image"
        inline = base64.b64encode(png(first.image)).decode()
        answer = c.post("/v1/segment", json={"image_id": key, "image": inline, "points": [[3, 3]]})
        assert answer.status_code == 200 and answer.json()["image_id"] == key
        assert c.get("/healthz").json()["cache"]["bytes"] <= 150_000


def test_learn_while_serving_is_picked_up_and_the_store_is_only_read(store, tmp_path):
    path = copy_store(store, tmp_path / "store")
    sample = sample_images(1)[0]
    before = store_files(path)
    with client(path, reload_seconds=0.05) as c:
        key = c.post("/v1/images", content=png(sample.image)).json()["image_id"]
        first = c.post("/v1/segment", json={"image_id": key, "points": [[5, 5]]}).json()
        assert store_files(path) == before  # serving wrote nothing
        SAMCL.open(path).learn("shadows", generate("shadows", 8, 0), TrainConfig(epochs=1, batch_size=4,
                                                                                 progress=False))
        deadline = time.monotonic() + 20
        while c.get("/v1/domains").json()["generation"] == first["generation"] and time.monotonic() < deadline:
            time.sleep(0.05)
        domains = c.get("/v1/domains").json()
        assert domains["generation"] == first["generation"] + 1
        assert [d["name"] for d in domains["domains"]] == ["polyps", "cells", "shadows"]
        answer = c.post("/v1/segment", json={"image_id": key, "points": [[5, 5]], "force": "shadows"}).json()
        assert answer["domain"] == "shadows" and answer["generation"] == domains["generation"]


def test_a_broken_new_generation_is_not_served(store, tmp_path):
    path = copy_store(store, tmp_path / "store")
    with client(path, reload_seconds=0.05) as c:
        generation = c.get("/healthz").json()["generation"]
        manifest = json.loads((path / "manifest.json").read_text())
        manifest["generation"] += 1
        manifest["domains"][0]["sha256"] = "0" * 64  # a module file that does not match: never served
        (path / "manifest.json").write_text(json.dumps(manifest))
        deadline = time.monotonic() + 20
        while c.get("/healthz").json()["reload_error"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
        health = c.get("/healthz").json()
        assert "checksum" in health["reload_error"] and health["generation"] == generation
        sample = sample_images(1)[0]
        answer = c.post("/v1/segment", json={"image": base64.b64encode(png(sample.image)).decode(),
                                             "points": [[4, 4]]})
        assert answer.status_code == 200 and answer.json()["generation"] == generation


def test_serve_command_refuses_bad_setups_in_one_line(store, tmp_path, capsys, monkeypatch):
    from samcl.cli import main

    monkeypatch.delenv("SAMCL_SERVE_TOKEN", raising=False)
    for argv, words in [(["serve", str(store), "--host", "0.0.0.0"], "needs a token"),
                        (["serve", str(tmp_path / "none")], "not a samcl store"),
                        (["serve", str(store), "--port", "70000"], "argument --port")]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
