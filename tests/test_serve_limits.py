"""Server limits that hold under concurrency and against hostile requests: the in-flight memory budget (503 +
Retry-After), the token checked before any body byte is read, JSON capped and parsed with a depth limit, echoes
cut short, strict coordinates, and a client that disconnects mid-upload logged as one line."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import live_server, make_store, png, sample_images  # noqa: E402
from test_serve_api import error_of  # noqa: E402

from samcl.serve import ServeConfig, create_app  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("limits") / "store")


try:  # the charge per decoded pixel (a literal where the budget does not exist: the test then fails on behaviour)
    from samcl.serve.budget import BYTES_PER_PIXEL
except ImportError:
    BYTES_PER_PIXEL = 16


def client(store, **settings) -> TestClient:
    return TestClient(create_app(ServeConfig(store=store, max_megapixels=0.25, **settings)))


def post_json(c, path: str, text: str, **headers):
    return c.post(path, content=text, headers={"content-type": "application/json", **headers})


def test_uploads_beyond_the_inflight_budget_get_503_with_retry_after(store):
    image = png(sample_images(1)[0].image)  # 133 x 117 pixels
    one = 2 * len(image) + 133 * 117 * BYTES_PER_PIXEL  # what one upload holds: its body twice, its pixels
    budget = int(3.5 * one)  # three uploads at once, not four
    with client(store, batch_window_ms=2000, max_batch=64, max_inflight_bytes=budget) as c:
        answers, barrier = [None] * 8, threading.Barrier(8)

        def upload(i):
            barrier.wait()
            answers[i] = c.post("/v1/images", content=image)

        threads = [threading.Thread(target=upload, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        statuses = sorted(a.status_code for a in answers)  # the first batch waits 2 s: all eight are in flight
        assert set(statuses) == {200, 503}, statuses
        busy = next(a for a in answers if a.status_code == 503)
        assert busy.headers["retry-after"] == "1" and busy.json()["error"]["code"] == "busy"
        health = c.get("/healthz").json()["inflight"]
        assert health["bytes"] == 0 and one < health["peak"] <= budget and health["refused"] == statuses.count(503)
        assert c.post("/v1/images", content=image).status_code == 200  # given back: a retry goes through


def test_an_upload_larger_than_the_whole_budget_runs_alone(store):
    with client(store, max_inflight_bytes=1000) as c:
        assert c.post("/v1/images", content=png(sample_images(1)[0].image)).status_code == 200


def raw_exchange(url: str, head: bytes, body: bytes, seconds: float = 10.0) -> bytes:
    """Send `head` and a first part of a body, then read the answer (a server reading the rest first times out)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=seconds) as conn:
        conn.sendall(head + body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


@pytest.mark.parametrize("path", ["/v1/images", "/v1/segment"])
def test_an_unauthenticated_25_mb_body_is_refused_before_it_is_read(store, path):
    size = 25 << 20
    app = create_app(ServeConfig(store=store, token="s3cret", max_upload_bytes=30 << 20))
    with live_server(app) as url:
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {size}\r\n\r\n").encode()
        answer = raw_exchange(url, head, b"{" + b" " * 65535)  # 64 KiB of 25 MiB sent, then we wait
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


def test_token_comes_before_parsing_and_nesting_is_a_422(store):
    with client(store, token="s3cret") as c:
        assert error_of(post_json(c, "/v1/segment", "{oops"), 401) == "unauthorized"
        auth = {"authorization": "Bearer s3cret"}
        assert error_of(post_json(c, "/v1/segment", "{oops", **auth), 422) == "invalid_request"
        deep = '{"points": ' + "[" * 100_000 + "]" * 100_000 + "}"
        answer = post_json(c, "/v1/segment", deep, **auth)
        assert error_of(answer, 422) == "invalid_request" and "nested" in answer.json()["error"]["message"]
        nested = [1]
        for _ in range(40):  # past the depth limit, far below the parser's own recursion limit
            nested = [nested]
        answer = post_json(c, "/v1/segment", json.dumps({"image_id": "x", "points": nested}), **auth)
        assert error_of(answer, 422) == "invalid_request" and "nested" in answer.json()["error"]["message"]


def test_echoed_ids_and_names_are_cut_short(store):
    long = "a" * (1 << 20)
    with client(store) as c:
        for body, status in [({"image_id": long, "points": [[1, 1]]}, 404),
                             ({"image": "", "points": [[1, 1]], long: 1}, 422)]:
            answer = c.post("/v1/segment", json=body)
            assert answer.status_code == status and len(answer.content) < 1000, answer.content[:300]
        key = c.post("/v1/images", content=png(sample_images(1)[0].image)).json()["image_id"]
        answer = c.post("/v1/segment", json={"image_id": key, "points": [[1, 1]], "force": long})
        assert error_of(answer, 400) == "unknown_domain" and len(answer.content) < 1000


@pytest.mark.parametrize("field, value", [("points", [["1", 2]]), ("points", [[True, 2]]), ("points", [[1, False]]),
                                          ("box", ["0", 0, 5, 5]), ("box", [0, 0, True, 5]), ("labels", [True])])
def test_strings_and_booleans_are_not_coordinates_or_labels(store, field, value):
    with client(store) as c:
        key = c.post("/v1/images", content=png(sample_images(1)[0].image)).json()["image_id"]
        answer = c.post("/v1/segment", json={"image_id": key, "points": [[1, 2]], field: value})
        assert error_of(answer, 422) == "invalid_request"
        assert answer.json()["error"]["message"].startswith(field + "."), answer.json()


def test_a_client_gone_mid_upload_is_one_log_line(store, caplog):
    app = create_app(ServeConfig(store=store))
    with live_server(app) as url, caplog.at_level(logging.INFO):
        head = b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(head + bytes(20_000))
            time.sleep(0.3)
        deadline = time.monotonic() + 10
        while not any("went away" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(url + "/healthz").status_code == 200
    gone = [r for r in caplog.records if "went away" in r.getMessage()]
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert len(gone) == 1 and not noisy, [r.getMessage() for r in noisy]
