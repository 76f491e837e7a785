"""Uploads as clients send them: raw bodies under any Content-Type, multipart forms (curl -F, requests' files=),
the README's own curl commands run against a real server, and the README's error table against the code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import live_server, make_store, png, sample_images  # noqa: E402
from test_serve_api import error_of  # noqa: E402

import samcl.serve  # noqa: E402
from samcl.data.synthetic import generate  # noqa: E402
from samcl.serve import ServeConfig, create_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SERVE = Path(samcl.serve.__file__).resolve().parent  # the code under test (its answers), not this file's checkout
CURL = shutil.which("curl")


def serving_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Serving")
    return readme[start:readme.index("\n## ", start + 3)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("uploads") / "store")


def test_raw_bodies_under_any_content_type_and_forms_give_one_id(store):
    data = png(sample_images(1)[0].image)
    with TestClient(create_app(ServeConfig(store=store))) as c:
        kinds = ["application/octet-stream", "application/x-www-form-urlencoded", "text/plain", "image/png", ""]
        ids = {c.post("/v1/images", content=data, headers={"content-type": kind}).json()["image_id"]
               for kind in kinds}
        ids |= {c.post("/v1/images", files={field: ("photo.png", data, "image/png")}).json()["image_id"]
                for field in ("image", "file")}
        with_fields = c.post("/v1/images", data={"note": "hello"}, files={"image": ("photo.png", data)})
        ids.add(with_fields.json()["image_id"])
        other = c.post("/v1/images", files={"upload": ("photo.png", data, "image/png")})  # not the image's field
    assert len(ids) == 1
    assert error_of(other, 400) == "bad_form" and "'image'" in other.json()["error"]["message"]


def test_a_form_over_the_upload_limit_is_413(store):
    big = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)  # ~120 KB as PNG
    with TestClient(create_app(ServeConfig(store=store, max_upload_bytes=50_000))) as c:
        assert error_of(c.post("/v1/images", files={"image": ("a.png", png(big))}), 413) == "body_too_large"
        stream = iter([b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a\"\r\n\r\n"]
                      + [bytes(30_000)] * 10)  # chunked: no Content-Length, refused as it streams
        answer = c.post("/v1/images", content=stream, headers={"content-type": "multipart/form-data; boundary=b"})
        assert error_of(answer, 413) == "body_too_large"
        garbled = c.post("/v1/images", content=b"not a form", headers={"content-type": "multipart/form-data"})
        assert error_of(garbled, 400) == "bad_form"


def curl_commands() -> list[str]:
    """Every command of the serving section's bash blocks that runs curl (continuation lines joined, and the lines
    of a quoted argument that spans several, as bash reads them)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", serving_section(), flags=re.S):
        pending = ""
        for line in block.replace("\\\n", " ").splitlines():
            pending = f"{pending}\n{line}" if pending else line
            if pending.count("'") % 2 == 0:  # no single-quoted argument left open
                if "curl " in pending and "/v1/cvat/tracker" not in pending:  # SAM 2: test_cvat_tracker runs it
                    commands.append(pending.strip())
                pending = ""
    return commands


def photo(path: Path) -> Path:
    """A 640 x 480 JPEG (the size the README's points are for), from a synthetic polyp image."""
    image = Image.fromarray(generate("polyps", 1, 5, "test")[0].image).resize((640, 480))
    image.save(path, format="JPEG", quality=90)
    return path


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_every_curl_line_of_the_readme_serving_section_works(store, tmp_path):
    commands = curl_commands()
    assert len(commands) >= 3 and any("-F image=@" in c for c in commands) and any("--data-binary" in c
                                                                                   for c in commands)
    photo(tmp_path / "photo.jpg")
    # the Label Studio lines fetch their task image from a static server of this folder (the README's 8081)
    files = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    threading.Thread(target=files.serve_forever, daemon=True).start()
    images = f"127.0.0.1:{files.server_address[1]}"
    app = create_app(ServeConfig(store=store, label_studio={"allowed_urls": [f"http://{images}/"]}))
    with live_server(app) as url:
        script = ["set -o pipefail"]
        for command in commands:
            command = command.replace("localhost:8000", url.removeprefix("http://")).replace("127.0.0.1:8081", images)
            script += [command, "printf '\\n::rc=%s\\n' $?"]
        done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
    results = re.findall(r"(.*?)\n::rc=(\d+)\n", done.stdout, flags=re.S)
    assert len(results) == len(commands), done.stdout + done.stderr
    for command, (output, rc) in zip(commands, results):
        assert rc == "0", (command, output, done.stderr)
        if "/label-studio/" in command:  # Connect Model, then a task pre-annotated with automatic masks
            answer = json.loads(output)
            assert "error" not in answer and ("model_version" in answer or answer["results"][0]["result"]), answer
        elif not command.startswith("ID="):  # the assignment's pipe fails (rc 1) on an error answer
            answer = json.loads(output)
            assert "error" not in answer and "image_id" in answer, (command, answer)
    files.shutdown()


def documented_errors() -> set[tuple[int, str]]:
    rows = re.findall(r"^\| ([0-9, ]+) \| (`[a-z0-9_`, ]+`) \|", serving_section(), flags=re.M)
    pairs = set()
    for statuses, codes in rows:
        found = re.findall(r"`([a-z0-9_]+)`", codes)
        for status in statuses.split(","):
            pairs |= {(int(status), code) for code in found}
    return pairs


def answered_errors() -> set[tuple[int, str]]:
    source = "\n".join(p.read_text() for p in SERVE.glob("*.py"))
    pairs = {(int(s), c) for s, c in re.findall(r'ApiError\((\d{3}), "([a-z0-9_]+)"', source)}
    pairs |= {(int(s), c) for s, c in re.findall(r'(\d{3}): "([a-z0-9_]+)"', source)}  # framework errors renamed
    pairs |= {(422, "invalid_request")}  # intake.invalid
    # a prompt that does not fit its image: `serve.context.checked` answers each `Prompt.check` code as a 400
    pairs |= {(400, c) for c in re.findall(r'PromptError\("([a-z0-9_]+)"', (SERVE.parent / "types.py").read_text())}
    return pairs


def test_the_readme_error_table_is_what_the_server_answers():
    documented, answered = documented_errors(), answered_errors()
    assert documented, "no error table found in the README's serving section"
    # 404/405 share a row in the README: each of the two codes is listed under both statuses there
    documented -= {(405, "not_found"), (404, "method_not_allowed")}
    assert answered - documented == set(), "answered but not documented"
    assert documented - answered == set(), "documented but never answered"
