"""The Label Studio backend against hostile inputs (issue 34): brush RLE bounded before it is decoded and decoded
off the event loop, a project's domain fixed when it is first set up, start-up refusing an empty password and an
allow-list prefix without a path boundary, URLs and contexts that are 4xx (never 500, the connection kept), caps
on keypoints, rectangles and tasks, a learn within its caps with its memory reported, and the fetcher (token
refresh, 401 retry, size cap, overall deadline) against a real HTTP server on 127.0.0.1 (`studio_server`)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import tracemalloc

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
brush = pytest.importorskip("label_studio_sdk.converter.brush")

from fastapi.testclient import TestClient  # noqa: E402
from helpers import cli_error  # noqa: E402
from serve_helpers import live_server, wait_until  # noqa: E402
from studio_server import StudioServer  # noqa: E402
from test_label_studio import CONFIG, FIXTURES, error_of, export_of, image_url, recorded  # noqa: E402

from samcl import SAMCL, SamclError, TrainConfig  # noqa: E402
from samcl.data.synthetic import generate  # noqa: E402
from samcl.serve import LabelStudioSettings, ServeConfig, create_app  # noqa: E402
from samcl.serve.errors import ApiError  # noqa: E402
from samcl.serve.label_studio import rle  # noqa: E402
from samcl.serve.label_studio.fetch import LabelStudioSource  # noqa: E402




@pytest.fixture
def studio():
    with StudioServer() as server:
        yield server


def app_on(store, studio, **settings):
    return create_app(ServeConfig(store=store, reload_seconds=0.05, label_studio={
        "url": studio.url, "api_key": studio.refresh_token, **settings}))


# ---------------------------------------------------------------------- brush RLE

def lying_rle(count: int, nbytes: int) -> list[int]:
    """A code whose header claims `count` values, followed by `nbytes` of blocks (a repeated 0, 16-bit runs)."""
    header = int(count).to_bytes(4, "big") + bytes([0b00111001, 0b11001111, 0b11110000])
    return list(header + bytes([0b11111111] * nbytes))


def test_a_brush_rle_whose_header_lies_is_refused_before_anything_is_allocated():
    code = lying_rle(2**31, 110_000)  # the case: 110 KB claiming 2**31 values
    long = [0] * (rle.MAX_RLE_BYTES + 1)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="holds 2147483648 values"):
            rle.decode(code, 1000, 1000)
        with pytest.raises(ValueError, match="at most"):
            rle.decode(long, 1000, 1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak  # the code's own bytes and bits, never the 2 GiB claimed
    good = rle.encode(np.eye(8, dtype=bool))
    assert np.array_equal(rle.decode(good, 8, 8), np.eye(8, dtype=bool))  # the check passes what fits
    assert np.array_equal(brush.decode_rle(good).reshape(8, 8, 4)[:, :, 3] > 0, np.eye(8, dtype=bool))


def test_a_learn_decodes_brush_rle_in_a_worker_thread_and_fails_on_a_lying_one(empty_store, monkeypatch):
    samples = generate("polyps", 2, 0, "test")
    export, images = export_of(samples, CONFIG)
    threads = []
    real = rle.decode
    monkeypatch.setattr(rle, "decode", lambda *a: threads.append(threading.current_thread().name) or real(*a))
    height, width = samples[0].mask.shape
    export[1]["annotations"][0]["result"][0]["value"]["rle"] = lying_rle(2**31, 1000)
    with StudioServer(images, export) as studio:
        with TestClient(app_on(empty_store, studio, epochs=1)) as c:
            project = {"id": 1, "title": "Polyps", "label_config": CONFIG}
            assert c.post("/label-studio/webhook", json={"action": "START_TRAINING", "project": project}).json()[
                "status"] == "queued"
            state = wait_until(lambda: (lambda s: s if s["state"] in ("done", "failed") else None)(
                c.get("/label-studio/learning").json()["projects"]["1"]), "the learn", seconds=60)
            assert c.get("/healthz").status_code == 200
    assert state["state"] == "failed" and state["code"] == "bad_annotation" and "task 2" in state["error"] and "2147483648" in state["error"], state
    assert threads and "MainThread" not in threads and all("loop" not in t for t in threads), threads


# ---------------------------------------------------------------------- a project's domain

def setup_body(project: int, extra=None) -> dict:
    return {"project": f"{project}.1764630000", "schema": CONFIG, "hostname": "http://localhost:8080",
            "access_token": "x", "extra_params": extra}


def test_a_projects_domain_is_fixed_at_first_setup_and_never_taken_over(empty_store, studio):
    studio.projects = {1: {"title": "Polyps (Kvasir)", "label_config": CONFIG},
                       2: {"title": "Polyps [Kvasir]", "label_config": CONFIG},
                       3: {"title": "cells", "label_config": CONFIG}}
    samcl = SAMCL.open(empty_store)
    samcl.learn("cells", generate("cells", 4, 0), TrainConfig(epochs=1, batch_size=4, progress=False))  # the CLI's
    with TestClient(app_on(empty_store, studio)) as c:
        assert c.post("/label-studio/setup", json=setup_body(1)).status_code == 200
        taken = c.post("/label-studio/setup", json=setup_body(2))
        assert error_of(taken, 409) == "domain_taken" and "project 1" in taken.json()["error"]["message"]
        elsewhere = c.post("/label-studio/setup", json=setup_body(3))
        assert error_of(elsewhere, 409) == "domain_taken" and "outside Label Studio" in elsewhere.text
        webhook = {"action": "START_TRAINING", "project": {"id": 2, "title": "Polyps [Kvasir]",
                                                           "label_config": CONFIG}}
        assert error_of(c.post("/label-studio/webhook", json=webhook), 409) == "domain_taken"
        assert c.post("/label-studio/setup", json=setup_body(2, {"domain": "polyps_b"})).status_code == 200
        moved = {"action": "ANNOTATION_CREATED", "project": {"id": 1, "title": "cells", "label_config": CONFIG}}
        assert c.post("/label-studio/webhook", json=moved).status_code == 200  # a new title does not re-point it
        assert c.app.state.label_studio.projects[1].domain_name == "Polyps_Kvasir"
        fixed = c.post("/label-studio/setup", json=setup_body(1, {"domain": "other"}))
        assert error_of(fixed, 409) == "project_domain_fixed"
        assert c.post("/label-studio/setup", json=setup_body(3, {"replace": True})).status_code == 200
    with TestClient(app_on(empty_store, studio)) as c:  # a restart reads the record beside the store
        record = c.app.state.label_studio.domains
        assert {k: v["domain"] for k, v in record.records.items()} == {"1": "Polyps_Kvasir", "2": "polyps_b",
                                                                       "3": "cells"}
        assert error_of(c.post("/label-studio/setup", json=setup_body(4, {"domain": "polyps_b"})),
                        409) == "domain_taken"
    assert SAMCL.open(empty_store).domains == ["cells"]  # nothing was learned over by a setup


# ---------------------------------------------------------------------- start-up settings

def test_an_empty_basic_auth_password_is_refused_at_start_up(capsys, tmp_path):
    for value in ("admin:", ":secret", "admin"):
        with pytest.raises(SamclError, match="USER:PASSWORD"):
            LabelStudioSettings(basic_auth=value)
    cli_error(capsys, "serve", tmp_path / "store", "--label-studio-basic-auth", "admin:",
              names=["--label-studio-basic-auth"])


def test_allow_list_prefixes_need_a_path_boundary_and_dot_segments_are_resolved_first(capsys, tmp_path):
    for prefix in ("https://images.example.com/imgs", "https://images.example.com/a/../imgs/",
                   "https://images.example.com:99999/", "https://images.example.com/imgs/?x=1"):
        with pytest.raises(SamclError, match="allowed_urls"):
            LabelStudioSettings(allowed_urls=[prefix])
    cli_error(capsys, "serve", tmp_path / "store", "--allow-image-url", "https://images.example.com/imgs",
              names=["--allow-image-url", "end it with '/'"])
    source = LabelStudioSource(LabelStudioSettings(url="http://studio.test:8080", api_key="k",
                                                   allowed_urls=["https://images.example.com/imgs/"]), 1 << 20)
    assert source.resolve("https://images.example.com/imgs/./a/../b.png") == \
        ("https://images.example.com/imgs/b.png", False)
    for escape in ("https://images.example.com/imgs/../secret", "https://images.example.com/imgs/%2E%2e/secret",
                   "https://images.example.com/imgs/a/../../label-studio/api/projects/1/export"):
        with pytest.raises(ApiError) as refused:
            source.resolve(escape)
        assert refused.value.status == 400 and refused.value.code == "url_not_allowed", escape


# ---------------------------------------------------------------------- 4xx, never 500

def exchange(url: str, requests: list[bytes], seconds: float = 10.0) -> list[bytes]:
    """Send each request on one keep-alive connection, reading each answer (by Content-Length) before the next."""
    host, port = url.removeprefix("http://").split(":")
    answers = []
    with socket.create_connection((host, int(port)), timeout=seconds) as conn:
        for request in requests:
            conn.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    answers.append(data)
                    return answers
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += conn.recv(65536)
            answers.append(head + b"\r\n\r\n" + body)
    return answers


def post(path: str, body) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(data)}"
            f"\r\n\r\n").encode() + data


def test_bad_urls_huge_integers_and_deep_extra_params_are_4xx_on_a_kept_connection(empty_store, studio):
    predict = recorded("predict-interactive")["request"]

    def with_image(url):
        return {**predict, "tasks": [{**predict["tasks"][0], "data": {"image": url}}]}

    keypoint = predict["params"]["context"]["result"][0]
    huge = {**predict, "params": {"context": {"result": [{**keypoint, "value": {**keypoint["value"],
                                                                               "x": 10**400}}]}}}
    deep = "[" * 200_000 + "]" * 200_000
    requests = [post("/label-studio/setup", setup_body(1))]
    requests += [post("/label-studio/predict", with_image(f"http://127.0.0.1{port}/a.png"))
                 for port in (":65536", ":+18081", ":1_8081", ":80:80", ":\u0661\u0662")]
    requests += [post("/label-studio/predict", with_image("http://[::1/x")), post("/label-studio/predict", huge),
                 post("/label-studio/setup", setup_body(1, deep)), b"GET /label-studio/health HTTP/1.1\r\nHost: x\r\n\r\n"]
    app = create_app(ServeConfig(store=empty_store, label_studio={"url": studio.url, "api_key": studio.refresh_token,
                                                                  "allowed_urls": ["http://127.0.0.1/"]}))
    with live_server(app) as url:
        start = time.monotonic()
        answers = exchange(url, requests)
        assert time.monotonic() - start < 10
    statuses = [int(a.split(b" ", 2)[1]) for a in answers]
    assert statuses == [200] + [400] * 7 + [400, 200], statuses  # every answer on the one connection
    codes = [json.loads(a.partition(b"\r\n\r\n")[2])["error"]["code"] for a in answers[1:-1]]
    assert codes == ["bad_url"] * 6 + ["bad_context", "bad_extra_params"], codes


def test_keypoints_rectangles_and_tasks_are_capped_with_a_422(empty_store, studio):
    predict = recorded("predict-interactive")["request"]
    keypoint = predict["params"]["context"]["result"][0]
    rectangle = {"type": "rectanglelabels", "value": {"x": 1, "y": 1, "width": 5, "height": 5}}
    # pre-annotation off: a batch of tasks without a context is then answered without fetching their images
    with TestClient(app_on(empty_store, studio, preannotate=False)) as c:
        c.post("/label-studio/setup", json=setup_body(1))
        start = time.monotonic()
        many = c.post("/label-studio/predict", json={**predict, "params": {"context": {"result": [keypoint] * 40_000}}})
        assert time.monotonic() - start < 10
        assert error_of(many, 422) == "invalid_request" and "context.result" in many.json()["error"]["message"]
        for result, what in (([keypoint] * 65, "keypointlabels"), ([rectangle] * 2, "rectanglelabels")):
            answer = c.post("/label-studio/predict", json={**predict, "params": {"context": {"result": result}}})
            assert error_of(answer, 422) == "invalid_request" and what in answer.json()["error"]["message"]
        for project in ("9" * 5000, "\u0661\u0662.1"):
            assert error_of(c.post("/label-studio/predict", json={**predict, "project": project}), 400) == "bad_project"
        tasks = c.post("/label-studio/predict", json={**predict, "tasks": predict["tasks"] * 1001, "params": {}})
        assert error_of(tasks, 422) == "invalid_request" and "tasks" in tasks.json()["error"]["message"]
        assert c.post("/label-studio/predict", json={**predict, "tasks": predict["tasks"] * 1000,
                                                     "params": {}}).status_code == 200
        assert studio.files == []  # refused before any image was fetched


def test_an_unknown_webhook_action_is_not_echoed_in_full(empty_store, studio):
    with TestClient(app_on(empty_store, studio)) as c:
        answer = c.post("/label-studio/webhook", json={"action": "X" * 100_000})
    assert answer.status_code == 200 and len(answer.content) < 200 and answer.json()["status"] == "ignored"


# ---------------------------------------------------------------------- the fetcher over real HTTP

def fetch(source: LabelStudioSource, url: str, limit: int | None = None) -> bytes:
    return asyncio.run(source.fetch(url, limit))


def test_the_fetcher_refreshes_its_token_retries_a_401_once_and_caps_the_size(studio):
    studio.images = {"/data/upload/1/a.png": b"A" * 1000, "/data/upload/1/big.png": b"B" * 5000}
    source = LabelStudioSource(LabelStudioSettings(url=studio.url, api_key=studio.refresh_token), 4000)
    assert fetch(source, "/data/upload/1/a.png") == b"A" * 1000
    assert fetch(source, "/data/upload/1/a.png") == b"A" * 1000
    assert studio.refreshes == 1 and studio.authorizations == ["Bearer access-1"] * 2  # one refresh, reused
    studio.expire_next = 1  # the access token stops working early: one 401, a refresh, the retry
    assert fetch(source, "/data/upload/1/a.png") == b"A" * 1000
    assert studio.refreshes == 2 and studio.authorizations[-2:] == ["Bearer access-1", "Bearer access-2"]
    with pytest.raises(ApiError) as big:
        fetch(source, "/data/upload/1/big.png")
    assert big.value.status == 413 and big.value.code == "image_too_large"
    studio.declared["/data/upload/1/big.png"] = 100  # a declared length that lies low: the stream is cut there
    assert len(fetch(source, "/data/upload/1/big.png")) <= 100
    studio.refuse_refresh, source._access = True, None
    with pytest.raises(ApiError) as refused:
        fetch(source, "/data/upload/1/a.png")
    assert refused.value.status == 502 and refused.value.code == "label_studio_auth"
    legacy = LabelStudioSource(LabelStudioSettings(url=studio.url, api_key="legacy-key"), 4000)
    with pytest.raises(ApiError):
        fetch(legacy, "/data/upload/1/a.png")
    assert studio.authorizations[-1] == "Token legacy-key"


def test_a_trickling_image_server_meets_the_fetch_deadline(studio):
    studio.images = {"/data/upload/1/slow.png": b"S" * 200}
    studio.slow["/data/upload/1/slow.png"] = 0.1  # 10 bytes a second: 20 s for the whole file
    source = LabelStudioSource(LabelStudioSettings(url=studio.url, api_key=studio.refresh_token), 4000,
                               timeout_s=5.0, deadline_s=1.0)
    start = time.monotonic()
    with pytest.raises(ApiError) as late:
        fetch(source, "/data/upload/1/slow.png")
    assert late.value.status == 504 and late.value.code == "fetch_timeout" and time.monotonic() - start < 5


# ---------------------------------------------------------------------- a learn within its caps

def test_a_learn_is_capped_in_tasks_and_megapixels_and_reports_its_memory(empty_store):
    samples = generate("polyps", 3, 0, "test")
    export, images = export_of(samples, CONFIG)
    pixels = sum(s.image.shape[0] * s.image.shape[1] for s in samples)
    project = {"id": 1, "title": "Polyps", "label_config": CONFIG}

    def learn(**settings) -> dict:
        with StudioServer(images, export) as studio, TestClient(app_on(empty_store, studio, epochs=1,
                                                                        **settings)) as c:
            c.post("/label-studio/webhook", json={"action": "START_TRAINING", "project": project})
            return wait_until(lambda: (lambda s: s if s["state"] in ("done", "failed") else None)(
                c.get("/label-studio/learning").json()["projects"]["1"]), "the learn", seconds=120)

    too_many = learn(max_learn_tasks=2)
    assert too_many["state"] == "failed" and too_many["code"] == "too_many_tasks"
    assert "3 annotated tasks" in too_many["error"] and "at most 2" in \
        too_many["error"]
    too_large = learn(max_learn_megapixels=pixels * 0.7 / 1e6)
    assert too_large["code"] == "learn_too_large" and "max_learn_megapixels" in too_large["error"]
    done = learn()
    assert done["state"] == "done" and done["memory"] == {"images": 3, "megapixels": round(pixels / 1e6, 3),
                                                          "bytes": pixels * 4, "max_megapixels": 400.0}


def test_an_interactive_prediction_holds_its_body_and_image_under_one_ticket(empty_store):
    from samcl.serve.budget import BYTES_PER_PIXEL

    predict = recorded("predict-interactive")
    image = (FIXTURES / "predict-interactive-image.png").read_bytes()
    body = json.dumps(predict["request"])
    with StudioServer({image_url(predict): image}) as studio, TestClient(app_on(empty_store, studio)) as c:
        c.post("/label-studio/setup", json=recorded("setup")["request"])
        answer = c.post("/label-studio/predict", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 200
        stats = c.get("/healthz").json()["inflight"]
    result = answer.json()["results"][0]["result"][0]
    pixels = result["original_width"] * result["original_height"]
    assert stats["bytes"] == 0 and stats["peak"] == 3 * len(body) + len(image) + pixels * BYTES_PER_PIXEL, stats
