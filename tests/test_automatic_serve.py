"""`POST /v1/generate`: automatic masks through the server (the framework's test client), the same as
`SAMCL.generate`, with the API's image intake, option checks, limits and budget."""

from __future__ import annotations

import base64

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import make_store, png, sample_images  # noqa: E402

from samcl import SAMCL, AutoMaskConfig  # noqa: E402
from samcl.io.masks import rle_to_mask  # noqa: E402
from samcl.serve import ServeConfig, create_app  # noqa: E402

OPTIONS = {"points_per_side": 8, "pred_iou_thresh": 0.3, "stability_score_thresh": 0.6}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("generate") / "store")


def client(store, **settings) -> TestClient:
    return TestClient(create_app(ServeConfig(store=store, **{"max_megapixels": 0.25, **settings})))


def test_generate_answers_what_samcl_generate_gives(store):
    image = sample_images(1)[0].image
    [expected] = SAMCL.open(store).generate([image], config=AutoMaskConfig(**OPTIONS, output_mode="coco_rle"))
    with client(store) as c:
        upload = c.post("/v1/images", content=png(image)).json()
        by_id = c.post("/v1/generate", json={"image_id": upload["image_id"], **OPTIONS})
        inline = c.post("/v1/generate", json={"image": base64.b64encode(png(image)).decode(), **OPTIONS}).json()
    assert by_id.status_code == 200, by_id.text
    answer = by_id.json()
    assert answer["domain"] == expected.domain == inline["domain"]
    assert answer["count"] == len(expected.records) == len(answer["masks"]) > 0
    assert (answer["width"], answer["height"]) == (image.shape[1], image.shape[0])
    for mask, record in zip(answer["masks"], expected.records):
        assert mask["segmentation"] == record["segmentation"]
        assert mask["area"] == record["area"] == int(rle_to_mask(mask["segmentation"]).sum())
        assert mask["bbox"] == record["bbox"] and mask["crop_box"] == record["crop_box"]
        assert mask["predicted_iou"] == pytest.approx(record["predicted_iou"], abs=1e-5)
    assert [m["segmentation"] for m in inline["masks"]] == [m["segmentation"] for m in answer["masks"]]


def test_generate_caps_masks_and_forces_a_domain(store):
    image = sample_images(2)[1].image
    with client(store) as c:
        full = c.post("/v1/generate", json={"image": base64.b64encode(png(image)).decode(), "force": "base",
                                            **OPTIONS}).json()
        capped = c.post("/v1/generate", json={"image": base64.b64encode(png(image)).decode(), "force": "base",
                                              "max_masks": 1, **OPTIONS}).json()
    assert full["domain"] == "base" and full["domain_score"] is None
    assert capped["count"] == full["count"] >= 1 and len(capped["masks"]) == 1
    assert capped["masks"][0] == full["masks"][0]


def test_generate_with_crop_layers_needs_the_image_inline(store):
    image = sample_images(1)[0].image
    options = {**OPTIONS, "crop_n_layers": 1}
    [expected] = SAMCL.open(store).generate([image], config=AutoMaskConfig(**options, output_mode="coco_rle"))
    with client(store) as c:
        upload = c.post("/v1/images", content=png(image)).json()
        refused = c.post("/v1/generate", json={"image_id": upload["image_id"], **options})
        answered = c.post("/v1/generate", json={"image": base64.b64encode(png(image)).decode(), **options})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "image_needed"
    assert answered.status_code == 200
    masks = answered.json()["masks"]
    assert [m["segmentation"] for m in masks] == [r["segmentation"] for r in expected.records]
    assert [m["crop_box"] for m in masks] == [r["crop_box"] for r in expected.records]


@pytest.mark.parametrize("body,field", [
    ({"points_per_side": 0}, "points_per_side"),
    ({"points_per_side": 65}, "points_per_side"),
    ({"pred_iou_thresh": 2}, "pred_iou_thresh"),
    ({"crop_n_layers": 3}, "crop_n_layers"),
    ({"points_per_side": "8"}, "points_per_side"),
    ({"output_mode": "binary_mask"}, "output_mode"),
    ({"max_masks": 0}, "max_masks"),
])
def test_bad_generator_options_are_422_naming_the_field(store, body, field):
    image = sample_images(1)[0].image
    with client(store) as c:
        answer = c.post("/v1/generate", json={"image": base64.b64encode(png(image)).decode(), **body})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "invalid_request" and field in answer.json()["error"]["message"]


def test_generate_unknown_image_and_domain_are_4xx(store):
    with client(store) as c:
        unknown = c.post("/v1/generate", json={"image_id": "0" * 32})
        domain = c.post("/v1/generate", json={"image": base64.b64encode(png(sample_images(1)[0].image)).decode(),
                                              "force": "nowhere"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_image"
    assert domain.status_code == 400 and domain.json()["error"]["code"] == "unknown_domain"


def test_generate_decodes_fewer_points_at_once_within_the_work_budget(store, monkeypatch):
    """A smaller decoding batch is the server's choice under its memory limit: the masks stay the same."""
    from samcl.serve import api

    image = sample_images(1)[0].image
    body = {"image": base64.b64encode(png(image)).decode(), **OPTIONS}
    with client(store) as c:
        wide = c.post("/v1/generate", json=body).json()
        monkeypatch.setattr(api, "GENERATE_WORK_BYTES", 3 * 6 * image.shape[0] * image.shape[1] * 5)  # 5 points
        narrow = c.post("/v1/generate", json=body).json()
    assert narrow["masks"] == wide["masks"]


def test_generate_answer_is_charged_to_the_budget(store):
    """The decoding batch and the answer's bytes count against the in-flight budget (a request alone is let in
    whatever its size, as on every route)."""
    image = sample_images(1)[0].image
    with client(store, max_inflight_bytes=1) as c:
        answer = c.post("/v1/generate", json={"image": base64.b64encode(png(image)).decode(), **OPTIONS})
        stats = c.app.state.serving.budget.stats()
    assert answer.status_code == 200 and len(answer.json()["masks"]) > 0
    batch = 3 * 6 * image.shape[0] * image.shape[1] * OPTIONS["points_per_side"] ** 2  # all 64 points at once
    assert stats["peak"] >= batch + len(answer.json()["masks"]) * 400 and stats["bytes"] == 0
