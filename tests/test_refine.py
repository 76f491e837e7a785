"""Refinement clicks: which clicks heat the encoder (`samcl.inference.refine`), and a further click through the
predictor, the page's API and the Label Studio backend running the decoder alone (no encoder block)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from serve_helpers import make_store, png
from studio_server import StudioServer

from samcl import SAMCL, Prompt
from samcl.data.synthetic import generate
from samcl.inference.refine import heat_prompt

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from samcl.serve import ServeConfig, create_app  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "label_studio"


def test_first_reuses_a_kept_prompt_that_the_clicks_extend():
    first = Prompt.of([[10, 10]])
    later = Prompt.of([[10, 10], [50, 50]], [1, 0])
    assert heat_prompt(later, "first", [first]) is first
    assert heat_prompt(later, "first", []) is later  # nothing kept: the whole prompt heats
    assert heat_prompt(later, "all", [first]) is later
    other = Prompt.of([[11, 10], [50, 50]])
    assert heat_prompt(other, "first", [first]) is other  # a different first click: not an extension
    boxed = Prompt.of(None, None, [0, 0, 20, 20])
    assert heat_prompt(Prompt.of([[5, 5]], None, [0, 0, 20, 20]), "first", [boxed]) is boxed
    assert heat_prompt(Prompt.of([[5, 5]], None, [0, 0, 30, 20]), "first", [boxed]).box[2] == 30


def test_outside_heats_again_only_for_a_click_beyond_the_heat():
    first = Prompt.of([[10, 10]])
    near, far = Prompt.of([[10, 10], [14, 12]]), Prompt.of([[10, 10], [40, 12]])
    assert heat_prompt(near, "outside", [first], reach=8.0) is first
    assert heat_prompt(far, "outside", [first], reach=8.0) is far


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("refine") / "store")


def _count(backbone, monkeypatch) -> dict:
    calls = {"prefix": 0, "suffix": 0, "decode": 0}
    for name in calls:
        original = getattr(backbone, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(backbone, name, counted)
    return calls


def _clicks(sample, count: int = 3) -> list[Prompt]:
    rng = np.random.default_rng(0)
    height, width = sample.mask.shape
    points = [sample.points[0], *rng.uniform(0, [width - 1, height - 1], (count - 1, 2))]
    labels = [1] + [int(sample.mask[int(y), int(x)]) for x, y in points[1:]]
    return [Prompt.of(points[:k], labels[:k]) for k in range(1, count + 1)]


def test_predictor_refinement_clicks_run_only_the_decoder(store, monkeypatch):
    samcl = SAMCL.open(store)
    sample = generate("polyps", 1, 3, "test")[0]
    clicks = _clicks(sample)
    every = samcl.predictor(refine="all")
    every.set_image(sample.image, force="polyps")
    reference = [every.predict(c.points, c.labels, multimask_output=False) for c in clicks]
    calls = _count(samcl.backbone, monkeypatch)
    predictor = samcl.predictor()  # the default: "first"
    predictor.set_image(sample.image, force="polyps")
    answers = [predictor.predict(c.points, c.labels, multimask_output=False) for c in clicks]
    assert calls == {"prefix": 1, "suffix": 1, "decode": len(clicks)}  # the first click heated; the others decoded
    np.testing.assert_allclose(answers[0][2], reference[0][2], atol=1e-5)  # the first click is the method's own
    assert np.abs(answers[-1][2] - reference[-1][2]).max() > 1e-4  # later clicks differ: the heat is the first's
    embedding = predictor.get_image_embedding()
    assert calls["suffix"] == 1 and embedding.shape[0] == 1


def test_page_api_and_label_studio_refinement_clicks_run_no_encoder_block(store, monkeypatch):
    sample = generate("polyps", 1, 4, "test")[0]
    clicks = _clicks(sample, 4)
    data = png(sample.image)
    height, width = sample.mask.shape
    request = json.loads((FIXTURES / "predict-interactive.json").read_text())["request"]
    studio_server = StudioServer({request["tasks"][0]["data"]["image"]: data}).__enter__()
    app = create_app(ServeConfig(store=store, label_studio={"url": studio_server.url,
                                                            "api_key": studio_server.refresh_token}))
    calls = _count(app.state.host.samcl.backbone, monkeypatch)
    with studio_server, TestClient(app) as c:
        image_id = c.post("/v1/images", content=data).json()["image_id"]
        page = []
        for k, click in enumerate(clicks):  # the page sends every click so far with each request
            body = {"image_id": image_id, "points": click.points.tolist(), "labels": click.labels.tolist(),
                    "force": "polyps"}
            answer = c.post("/v1/segment", json=body)
            assert answer.status_code == 200, answer.text
            page.append(dict(calls))
        assert [p["suffix"] for p in page] == [1, 1, 1, 1] and page[-1]["prefix"] == 1
        assert page[-1]["decode"] == len(clicks)

        setup = json.loads((FIXTURES / "setup.json").read_text())["request"]
        setup["extra_params"]["replace"] = True  # the project takes over the store's polyps (learned outside it)
        assert c.post("/label-studio/setup", json=setup).status_code == 200
        template = request["params"]["context"]["result"][0]
        studio = []
        for click in clicks:  # Label Studio sends every keypoint so far with each smart click
            items = []
            for j, ((x, y), label) in enumerate(zip(click.points, click.labels)):
                item = copy.deepcopy(template)
                item.update(id=f"p{j}", original_width=width, original_height=height, is_positive=bool(label))
                item["value"].update(x=float(x) / width * 100, y=float(y) / height * 100)
                items.append(item)
            body = copy.deepcopy(request)
            body["params"]["context"]["result"] = items
            answer = c.post("/label-studio/predict", json=body)
            assert answer.status_code == 200, answer.text
            studio.append(dict(calls))
            domain = answer.json()["results"][0]["model_version"].rsplit("-", 1)[1]
    assert domain == "polyps"  # a module ran (the base needs no heat at all)
    suffixes = [s["suffix"] for s in studio]
    assert suffixes[1:] == [suffixes[0]] * (len(clicks) - 1)  # after the first smart click: the decoder alone
    assert all(s["prefix"] == 1 for s in studio)  # the image was uploaded by the page: its prefix is cached
    assert studio[-1]["decode"] == 2 * len(clicks)


def test_a_strategy_the_server_does_not_know_is_one_line(tmp_path):
    from samcl import SamclError

    with pytest.raises(SamclError, match="refine 'sometimes': expected one of all, first, outside"):
        ServeConfig(store=tmp_path, refine="sometimes")
    with pytest.raises(ValueError, match="refine 'sometimes'"):
        heat_prompt(Prompt.of([[1, 1]]), "sometimes")
