"""`samcl serve` as a Label Studio ML backend (/label-studio): the brush RLE, the protocol on exchanges recorded
from a real Label Studio 1.23.2, errors, and learning a project in the background while predicting.

The fixtures in tests/fixtures/label_studio/ were recorded by `benchmarks/label_studio_loop.py --record`: Label
Studio 1.23.2 (label-studio-sdk 2.1.2) talking to `samcl serve` on a fresh store on builtin:tiny-sam through the
script's recording proxy; one exchange of each kind (health, setup, predict with a context, the START_TRAINING
and ANNOTATION_CREATED webhooks), and the image of the recorded interactive request. That request's context
(three positive keypoints) was given by the script to Label Studio's /api/ml/ID/interactive-annotating in the shape
its editor sends for a smart KeyPointLabels click; Label Studio added the task and passed the context on. The
brush RLE is decoded with label-studio-sdk's own converter (`label_studio_sdk.converter.brush`).
"""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
brush = pytest.importorskip("label_studio_sdk.converter.brush")

from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import png, wait_until  # noqa: E402
from studio_server import StudioServer  # noqa: E402

from samcl import SAMCL
from samcl.data.synthetic import generate  # noqa: E402
from samcl.learning import learner  # noqa: E402
from samcl.serve import ServeConfig, create_app  # noqa: E402
from samcl.serve.label_studio import rle  # noqa: E402
from samcl.serve.label_studio.labels import Tags, annotation_target, mask_polygons, polygon_mask  # noqa: E402
from samcl.serve.label_studio.training import LearningWorker  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "label_studio"
CONFIG = json.loads((FIXTURES / "setup.json").read_text())["request"]["schema"]


def sdk_decode(values, height, width) -> np.ndarray:
    return brush.decode_rle(values).reshape(height, width, 4)[:, :, 3] > 0


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (64, 80), (300, 220)])
def test_brush_rle_decodes_to_exactly_the_mask(shape):
    rng = np.random.default_rng(shape[0])
    block = np.zeros(shape, bool)
    block[shape[0] // 4:, : max(shape[1] // 2, 1)] = True  # long runs (300x220: runs past 2**16 values)
    for mask in (rng.random(shape) > 0.5, block, np.ones(shape, bool), np.zeros(shape, bool)):
        ours = rle.encode(mask)
        assert np.array_equal(sdk_decode(ours, *shape), mask)  # the SDK reads what we write
        theirs = brush.mask2rle(mask.astype(np.uint8) * 255)
        assert np.array_equal(rle.decode(theirs, *shape), mask)  # we read what the SDK writes
        assert ours == theirs  # and write the same bytes


def test_corrupt_brush_rle_is_a_value_error():
    good = rle.encode(np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="holds 64 values"):
        rle.decode(good, 5, 5)
    with pytest.raises(ValueError):
        rle.decode(good[:6], 4, 4)
    with pytest.raises(ValueError, match="byte values"):
        rle.decode([1, 2, 300], 4, 4)


def test_annotations_become_masks_and_prompt_points():
    tags = Tags.of(CONFIG.replace("</View>", '<PolygonLabels name="poly" toName="image"><Label value="Object"/>'
                                             "</PolygonLabels></View>"))
    sample = generate("polyps", 1, 3)[0]
    height, width = sample.mask.shape
    outline = mask_polygons(sample.mask)[0]
    percent = [[x / width * 100, y / height * 100] for x, y in outline]
    assert np.array_equal(polygon_mask(percent, width, height), sample.mask)  # one part: the outline is exact
    results = [{"type": "polygonlabels", "to_name": "image", "from_name": "poly",
                "value": {"points": percent, "polygonlabels": ["Object"]}},
               {"type": "brushlabels", "to_name": "image", "from_name": tags.brush.name,
                "value": {"format": "rle", "rle": brush.mask2rle(np.eye(height, width, dtype=np.uint8) * 255)}},
               {"type": "keypointlabels", "to_name": "image", "from_name": "prompt",
                "value": {"x": 50.0, "y": 25.0, "keypointlabels": ["Object"]}}]
    mask, points, labels = annotation_target(results, tags, width, height)
    assert np.array_equal(mask, sample.mask | np.eye(height, width, dtype=bool))
    assert points.tolist() == [[width / 2, height / 4]] and labels.tolist() == [1]
    assert annotation_target(results[2:], tags, width, height) == (None, None, None)  # no region: not a sample


STUDIOS: list = []


@pytest.fixture(autouse=True)
def _stop_studios():
    yield
    while STUDIOS:
        STUDIOS.pop().__exit__(None, None, None)


def client(store, images=None, **settings) -> tuple[TestClient, StudioServer]:
    """The app with its Label Studio on a real HTTP server on 127.0.0.1 (`studio_server`): images by path."""
    studio = StudioServer(images or {}).__enter__()
    STUDIOS.append(studio)
    app = create_app(ServeConfig(store=store, reload_seconds=0.05,
                                 label_studio={"url": studio.url, "api_key": studio.refresh_token, **settings}))
    return TestClient(app), studio


def recorded(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def image_url(exchange: dict) -> str:
    """The task's image path (Label Studio's upload URL, relative to its address)."""
    return exchange["request"]["tasks"][0]["data"]["image"]


def test_recorded_exchanges_are_answered_as_they_were(empty_store):
    predict = recorded("predict-interactive")
    image = (FIXTURES / "predict-interactive-image.png").read_bytes()
    c, studio = client(empty_store, {image_url(predict): image})
    with c:
        health = c.get("/label-studio/health")
        assert health.status_code == 200 and health.json()["status"] == recorded("health")["response"]["status"]
        setup = recorded("setup")
        assert c.post("/label-studio/setup", json=setup["request"]).json() == setup["response"]
        answer = c.post("/label-studio/predict", json=predict["request"])
    assert answer.status_code == 200
    got, then = answer.json()["results"][0], predict["response"]["results"][0]
    # the recording's server ran `samcl serve`'s default --precision auto: bfloat16 on that CPU (avx512_bf16), so
    # the float32 answer here matches it to bfloat16's rounding, not bit for bit
    assert got["model_version"] == then["model_version"] and got["score"] == pytest.approx(then["score"], abs=0.01)
    assert [r["type"] for r in got["result"]] == [r["type"] for r in then["result"]] == ["brushlabels"]
    mine, theirs = got["result"][0], then["result"][0]
    assert {k: v for k, v in mine.items() if k not in ("id", "value")} == \
        {k: v for k, v in theirs.items() if k not in ("id", "value")}
    height, width = mine["original_height"], mine["original_width"]
    ours, recorded_mask = sdk_decode(mine["value"]["rle"], height, width), sdk_decode(theirs["value"]["rle"], height, width)
    assert (ours & recorded_mask).sum() / (ours | recorded_mask).sum() > 0.98
    assert mine["value"]["brushlabels"] == ["Object"] and studio.files == [image_url(predict)]


def test_batch_prediction_without_context_is_empty_with_preannotation_off(empty_store):
    setup, predict = recorded("setup"), recorded("predict-interactive")
    body = {**predict["request"], "params": {"context": None}}
    body["tasks"] = body["tasks"] * 3
    c, studio = client(empty_store, preannotate=False)
    with c:
        c.post("/label-studio/setup", json=setup["request"])
        results = c.post("/label-studio/predict", json=body).json()["results"]
    assert len(results) == 3 and all(r["result"] == [] and r["model_version"] for r in results)
    assert studio.files == []


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]["code"]


def test_bad_requests_get_a_4xx_json_answer(empty_store):
    setup, predict = recorded("setup"), recorded("predict-interactive")
    c, studio = client(empty_store, allowed_urls=["https://images.example.com/"])
    request = predict["request"]

    def with_image(url):
        return {**request, "tasks": [{**request["tasks"][0], "data": {"image": url}}]}

    def with_context(context):
        return {**request, "params": {**request["params"], "context": context}}

    with c:
        assert error_of(c.post("/label-studio/predict", json={**request, "project": "99.1"}), 404) == "unknown_project"
        c.post("/label-studio/setup", json=setup["request"])
        for url in ("http://elsewhere.example.com/a.png", "https://images.example.com.evil/a.png", "file:///etc/passwd",
                    "s3://bucket/a.png", "//elsewhere/a.png"):
            assert error_of(c.post("/label-studio/predict", json=with_image(url)), 400) == "url_not_allowed", url
        assert studio.files == []  # refused without a fetch
        for context in ({"result": []}, {"result": [{"type": "choices", "value": {"choices": ["x"]}}]},
                        {"result": [{"type": "keypointlabels", "value": {"x": "left", "y": 3}}]}, {"oops": 1}):
            assert error_of(c.post("/label-studio/predict", json=with_context(context)), 400) == "bad_context"
        assert error_of(c.post("/label-studio/predict", json={"project": "1.1"}), 422) == "invalid_request"
        assert error_of(c.post("/label-studio/predict", content=b"{not json"), 422) == "invalid_request"
        assert error_of(c.post("/label-studio/setup", json={**setup["request"], "extra_params": {"colour": 1}}),
                        400) == "bad_extra_params"
        assert error_of(c.post("/label-studio/setup", json={**setup["request"], "schema": "<View/>"}),
                        400) == "no_image_tag"
        assert error_of(c.post("/label-studio/webhook", json={"action": "START_TRAINING", "project": {}}),
                        400) == "bad_project"
        assert c.post("/label-studio/webhook", json={"action": "PROJECT_UPDATED"}).json()["status"] == "ignored"


def test_basic_auth_when_configured(empty_store):
    c, _ = client(empty_store, basic_auth="studio:s3cret")
    good = "Basic " + base64.b64encode(b"studio:s3cret").decode()
    bad = "Basic " + base64.b64encode(b"studio:wrong").decode()
    with c:
        assert error_of(c.get("/label-studio/health"), 401) == "unauthorized"
        assert error_of(c.get("/label-studio/health", headers={"Authorization": bad}), 401) == "unauthorized"
        assert c.get("/label-studio/health", headers={"Authorization": good}).status_code == 200


def export_of(samples, config: str) -> tuple[list, dict]:
    """A project's JSON export as Label Studio gives it: one annotation per task (brush RLE + keypoints)."""
    tasks, images = [], {}
    for k, sample in enumerate(samples):
        height, width = sample.mask.shape
        url = f"/data/upload/1/{k:02d}.png"
        images[url] = png(sample.image)
        result = [{"type": "brushlabels", "from_name": "mask", "to_name": "image", "original_width": width,
                   "original_height": height, "value": {"format": "rle", "brushlabels": ["Object"],
                                                        "rle": brush.mask2rle(sample.mask.astype(np.uint8) * 255)}}]
        result += [{"type": "keypointlabels", "from_name": "prompt", "to_name": "image",
                    "value": {"x": x / width * 100, "y": y / height * 100, "keypointlabels": ["Object"]}}
                   for x, y in sample.points]
        tasks.append({"id": k + 1, "data": {"image": url}, "annotations": [{"id": k + 1, "result": result}]})
    return tasks, images


def test_learning_a_project_serves_throughout_then_switches(empty_store, monkeypatch):
    """START_TRAINING learns the project in the background: a prediction made while the learn runs is answered
    from the old generation; then the new generation serves (pinned to the project's domain); a second
    START_TRAINING replaces the module in one more generation."""
    samples = [s for s in generate("polyps", 4, 0, "test")]
    export, images = export_of(samples, CONFIG)
    setup, predict = recorded("setup"), recorded("predict-interactive")
    images[image_url(predict)] = (FIXTURES / "predict-interactive-image.png").read_bytes()
    inside, release = threading.Event(), threading.Event()
    real_train = learner.train_module

    def held_train(*args, **kwargs):  # the learn is under way: its module trained, the store not yet written
        trained = real_train(*args, **kwargs)
        inside.set()
        assert release.wait(120)
        return trained

    monkeypatch.setattr(learner, "train_module", held_train)
    c, studio = client(empty_store, images, epochs=1)
    studio.export = export
    project = {"id": int(setup["request"]["project"].split(".")[0]), "title": "Polyps here",
               "label_config": CONFIG}
    with c:
        c.post("/label-studio/setup", json={**setup["request"], "extra_params": None})
        queued = c.post("/label-studio/webhook", json={"action": "START_TRAINING", "project": project}).json()
        assert queued["status"] == "queued" and queued["domain"] == "Polyps_here"
        assert inside.wait(120)  # held in the middle of the learn
        during = c.post("/label-studio/predict", json=predict["request"])
        assert during.status_code == 200 and during.json()["results"][0]["model_version"] == "samcl-g1-base"
        assert c.get("/label-studio/health").json()["learning"] is True
        release.set()
        state = wait_until(lambda: c.get("/label-studio/learning").json()["projects"]["1"]
                           if c.get("/label-studio/learning").json()["projects"]["1"]["state"] == "done" else None,
                           "the learn", seconds=300)
        assert state["generation"] == 2 and not state["replaced"] and state["samples"] == 4
        wait_until(lambda: c.get("/healthz").json()["generation"] == 2, "the reload", seconds=300)
        after = c.post("/label-studio/predict", json=predict["request"]).json()["results"][0]
        assert after["model_version"] == "samcl-g2-Polyps_here"  # pinned: the project's own module
        c.post("/label-studio/webhook", json={"action": "START_TRAINING", "project": project})
        state = wait_until(lambda: (lambda s: s if s["state"] == "done" and s["generation"] == 3 else None)(
            c.get("/label-studio/learning").json()["projects"]["1"]), "the relearn", seconds=300)
        assert state["replaced"]
    assert SAMCL.open(empty_store).domains == ["Polyps_here"]


def test_every_n_annotations_triggers_a_learn(empty_store, monkeypatch):
    calls = []
    monkeypatch.setattr(LearningWorker, "request", lambda self, project: calls.append(project.project) or
                        {"status": "queued"})
    setup, created = recorded("setup"), recorded("webhook-annotation_created")
    c, _ = client(empty_store, train_every=3)
    with c:
        c.post("/label-studio/setup", json=setup["request"])
        answers = [c.post("/label-studio/webhook", json=created["request"]).json() for _ in range(4)]
    assert [a["status"] for a in answers] == ["counted", "counted", "queued", "counted"] and len(calls) == 1


def test_cvat_interactor_answers_mask_and_polygon_as_cvat_functions_do(empty_store):
    """CVAT's serverless SAM function (cvat-ai/cvat serverless/pytorch/facebookresearch/sam/nuclio, main.py and
    model_handler.py, checked 2026-12-01): body {image: base64, pos_points, neg_points}; answer {"points": polygon
    of the largest contour as [[x, y], ...] ints, "mask": H x W list of 0/255}; the box interactors add obj_bbox
    [x0, y0, x1, y1] (saic-vul/iog)."""
    sample = generate("polyps", 1, 5, "test")[0]
    body = {"image": base64.b64encode(png(sample.image)).decode(), "pos_points": sample.points[:2].tolist(),
            "neg_points": [[1.0, 1.0]], "threshold": 0.5}
    c, _ = client(empty_store)
    with c:
        answer = c.post("/v1/cvat/interactor", json=body).json()
        reference = c.post("/v1/segment", json={"image": body["image"], "mask_format": "rle",
                                                "points": [*body["pos_points"], [1.0, 1.0]],
                                                "labels": [1, 1, 0]}).json()
        boxed = c.post("/v1/cvat/interactor", json={**body, "obj_bbox": [2, 2, 60, 50]})
        assert error_of(c.post("/v1/cvat/interactor", json={"image": body["image"], "pos_points": [],
                                                            "neg_points": []}), 400) == "no_prompt"
        assert error_of(c.post("/v1/cvat/interactor", json={**body, "pos_points": [[9999, 1]]}),
                        400) == "point_outside"
    from samcl.serve.codec import rle_to_mask

    mask = np.asarray(answer["mask"])
    assert mask.shape == sample.mask.shape and set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask == 255, rle_to_mask(reference["mask"]))
    assert all(isinstance(v, int) for point in answer["points"] for v in point) and len(answer["points"]) >= 3
    assert boxed.status_code == 200 and answer["domain"] == "base"


def test_image_urls_go_to_label_studio_with_the_key_or_to_the_allow_list_without():
    from samcl.serve import LabelStudioSettings
    from samcl.serve.label_studio.fetch import LabelStudioSource

    source = LabelStudioSource(LabelStudioSettings(url="http://studio.test:8080", api_key="k",
                                                   allowed_urls=["https://images.example.com/set/"]), 1 << 20)
    assert source.resolve("/data/upload/3/a.png") == ("http://studio.test:8080/data/upload/3/a.png", True)
    assert source.resolve("/data/local-files/?d=photos/a.png")[1] is True
    assert source.resolve("http://studio.test:8080/data/upload/3/a.png")[1] is True
    assert source.resolve("https://images.example.com/set/a.png") == ("https://images.example.com/set/a.png", False)
    for url in ("https://images.example.com/other/a.png", "http://studio.test:9999/data/a.png", "ftp://x/a.png", ""):
        with pytest.raises(Exception, match="allow-list|empty"):
            source.resolve(url)


def test_setup_refuses_a_server_that_could_fetch_no_task_image(empty_store, monkeypatch):
    """Connect Model (POST /setup) is where Label Studio shows samcl's message: a server without Label Studio's URL
    or API key (and no allow-listed image prefix) is refused there, with the reason, instead of failing every
    smart click later in silence."""
    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    setup = recorded("setup")["request"]
    for settings, code, named in (({}, "no_label_studio_url", "LABEL_STUDIO_URL"),
                                  ({"url": "http://studio.test"}, "no_label_studio_key", "LABEL_STUDIO_API_KEY")):
        app = create_app(ServeConfig(store=empty_store, label_studio=settings))
        with TestClient(app) as c:
            answer = c.post("/label-studio/setup", json=setup)
            assert error_of(answer, 400) == code and named in answer.json()["error"]["message"]
    app = create_app(ServeConfig(store=empty_store, label_studio={"allowed_urls": ["https://images.example.com/"]}))
    with TestClient(app) as c:  # images from an allow-listed prefix need neither
        assert c.post("/label-studio/setup", json=setup).json() == recorded("setup")["response"]
