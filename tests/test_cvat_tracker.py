"""The CVAT tracker route: CVAT's serverless tracker calls (start on frame N-1, then track onto N with the states),
answered from SAM 2's memory with the routed module; the same masks as `SAMCL.track`; states that the server no
longer holds restart their tracks; the bounds; bad input (tests/test_video.py builds the random tiny SAM 2)."""

from __future__ import annotations

import base64
import json
import re
import subprocess

import pytest
from test_video import frames, meta  # noqa: F401

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import png  # noqa: E402
from test_serve_api import error_of  # noqa: E402

from samcl import SAMCL, Prompt, TrainConfig, load_backbone  # noqa: E402
from samcl.serve import ServeConfig, create_app, cvat_tracker  # noqa: E402
from samcl.serve.cvat_tracker import rectangle  # noqa: E402

BOXES = [[10, 10, 60, 50], [60, 40, 104, 90]]


@pytest.fixture(scope="module")
def store(meta, tmp_path_factory):
    """A store on an HF-format SAM 2 video directory of the random tiny model, one domain learned."""
    from helpers import toy_samples

    from samcl.backbone.sam2_video import Sam2VideoBackbone
    from samcl.backbone.sam2_video_meta import sam2_video_model_from_state_dict
    from test_video import OBJECT_BIAS, TINY_VIDEO_OVERRIDES

    assert OBJECT_BIAS  # the meta fixture biased the object score head: objects are present
    root = tmp_path_factory.mktemp("tracker")
    image_config, model = sam2_video_model_from_state_dict(meta.state_dict(), "random", **TINY_VIDEO_OVERRIDES)
    Sam2VideoBackbone(model, image_config).video.save_pretrained(root / "sam2-video")
    samcl = SAMCL.create(load_backbone(root / "sam2-video"), root / "store", device="cpu")
    samcl.learn("red", toy_samples(4, (200, 30, 30), 0), TrainConfig(epochs=1, batch_size=2, progress=False))
    return root / "store"


def _b64(image) -> str:
    return base64.b64encode(png(image)).decode()


def _call(client, image, shapes, states=None, **extra):
    body = {"image": _b64(image), "shapes": shapes, **({} if states is None else {"states": states}), **extra}
    answer = client.post("/v1/cvat/tracker", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_cvats_calls_track_as_samcl_track_does(store, frames):
    """CVAT's browser starts the track on frame 0 (states dropped from the body), then per next frame sends the
    shapes it holds with the states it was answered; each answered rectangle is the one around SAMCL.track's mask
    for the same boxes on frame 0 (a stream of unknown length), and the module is the one routed on frame 0."""
    expected = list(SAMCL.open(store, device="cpu").track(
        iter(frames), {0: {1: Prompt.of(box=BOXES[0]), 2: Prompt.of(box=BOXES[1])}}))
    with TestClient(create_app(ServeConfig(store=store))) as c:
        started = _call(c, frames[0], BOXES)
        answers = [started]
        for frame in frames[1:]:
            answers.append(_call(c, frame, answers[-1]["shapes"], answers[-1]["states"]))
    for answer, frame in zip(answers, expected):
        assert answer["restarted"] == [] and len(answer["states"]) == 2 == len(set(answer["states"]))
        assert answer["shapes"] == [rectangle(frame.objects[obj].mask) for obj in (1, 2)]
        assert answer["domains"] == [frame.domain] * 2
        assert answer["presence"] == [round(frame.objects[obj].presence, 6) for obj in (1, 2)]
    assert all(re.fullmatch(r"samcl-track:[0-9a-f]{24}:[12]:\d+", s) for a in answers for s in a["states"])
    assert len({a["presence"][0] for a in answers}) == len(frames)  # the random model's masks fill the frame: the
    # presence, read from the memory-conditioned features, is what tells one frame's answer from another's


class CvatInTheMiddle:
    """What sits between the tracker function and the user in CVAT, ported from its code: the lambda manager
    (cvat/apps/lambda_manager/views.py, FunctionKind.TRACKER: the body {"image", "shapes", "states": [unsigned
    json.loads of each, or None]}; each answered state signed as json.dumps(state, separators=(",", ":")); here a
    stand-in signature instead of Django's TimestampSigner) and the browser (cvat-ui tools-control.tsx,
    `checkTrackedStates`: a start call on frame N-1 without states whose shapes it ignores, then the tracking call
    on frame N; answered shapes through `trackedRectangleMapper`)."""

    def __init__(self, client):
        self.client = client

    def invoke(self, image, shapes, states=()):
        body = {"image": _b64(image), "shapes": shapes,
                "states": [None if s is None else json.loads(s.rsplit(":signed", 1)[0]) for s in states]}
        answer = self.client.post("/v1/cvat/tracker", json=body)
        assert answer.status_code == 200, answer.text
        answer = answer.json()
        answer["states"] = [json.dumps(s, separators=(",", ":")) + ":signed" for s in answer["states"]]
        return answer

    def next_frame(self, frames, n, points, state):
        """The browser moving from frame n-1 to n with one tracked rectangle: -> (its new points, its state, the
        object's presence answered)."""
        if state is None:
            state = self.invoke(frames[n - 1], [points])["states"][0]
        answer = self.invoke(frames[n], [points], [state])
        xs, ys = answer["shapes"][0][0::2], answer["shapes"][0][1::2]
        return [min(xs), min(ys), max(xs), max(ys)], answer["states"][0], answer["presence"][0]


def test_cvats_browser_and_lambda_manager_round_trip_the_states(store, frames):
    """A track driven as CVAT drives it gives SAMCL.track's rectangles and presence; a rectangle the user edits
    on a frame (the browser drops its state and starts again there) continues from the edited box."""
    expected = list(SAMCL.open(store, device="cpu").track(iter(frames), {0: {1: Prompt.of(box=BOXES[0])}}))
    with TestClient(create_app(ServeConfig(store=store))) as c:
        cvat = CvatInTheMiddle(c)
        points, state = BOXES[0], None
        for n in range(1, 5):
            points, state, presence = cvat.next_frame(frames, n, points, state)
            assert points == rectangle(expected[n].objects[1].mask)
            assert presence == round(expected[n].objects[1].presence, 6)
        edited = [20, 20, 70, 60]
        moved, state, presence = cvat.next_frame(frames, 5, edited, None)
    again = list(SAMCL.open(store, device="cpu").track(iter(frames[4:]), {0: {1: Prompt.of(box=edited)}}))
    assert json.loads(state.rsplit(":signed", 1)[0]).startswith("samcl-track:")
    assert moved == rectangle(again[1].objects[1].mask) and presence == round(again[1].objects[1].presence, 6)
    assert presence != round(expected[5].objects[1].presence, 6)  # not the unedited track's


def test_a_state_the_server_no_longer_has_restarts_from_its_shape(store, frames, monkeypatch):
    """Unknown (another process, a restart), expired, evicted or already advanced: the track starts again from the
    shape sent with it, on this image, exactly as a start there; `restarted` names it."""
    now = [0.0]
    monkeypatch.setattr(cvat_tracker, "clock", lambda: now[0])
    config = ServeConfig(store=store, tracker_max_sessions=2)
    with TestClient(create_app(config)) as c:
        fresh = _call(c, frames[3], [BOXES[0]])
        unknown = _call(c, frames[3], [BOXES[0]], ["samcl-track:" + "0" * 24 + ":1:0"])
        assert unknown["restarted"] == [0] and unknown["shapes"] == fresh["shapes"]
        assert unknown["presence"] == fresh["presence"]
        first = _call(c, frames[0], [BOXES[0]])
        moved = _call(c, frames[1], first["shapes"], first["states"])
        stale = _call(c, frames[2], first["shapes"], first["states"])  # the frame-0 state again
        assert moved["restarted"] == [] and stale["restarted"] == [0]
        _call(c, frames[0], [BOXES[1]])  # a third live session: the least recently used one (first's) goes
        assert _call(c, frames[2], moved["shapes"], moved["states"])["restarted"] == [0]
        kept = _call(c, frames[0], [BOXES[1]])
        now[0] += config.tracker_idle_seconds + 1
        assert _call(c, frames[1], kept["shapes"], kept["states"])["restarted"] == [0]  # expired


def test_mixed_domain_sessions_step_in_one_call_as_alone(store, frames):
    """Tracks started on different modules (forced) continue in one call: one batch, each its own module rows."""
    with TestClient(create_app(ServeConfig(store=store))) as c:
        red, base = _call(c, frames[0], [BOXES[0]], force="red"), _call(c, frames[0], [BOXES[1]], force="base")
        together = _call(c, frames[1], red["shapes"] + base["shapes"], red["states"] + base["states"])
    with TestClient(create_app(ServeConfig(store=store))) as c:
        red, base = _call(c, frames[0], [BOXES[0]], force="red"), _call(c, frames[0], [BOXES[1]], force="base")
        alone = [_call(c, frames[1], a["shapes"], a["states"]) for a in (red, base)]
    assert together["domains"] == ["red", "base"] and together["restarted"] == []
    assert together["shapes"] == alone[0]["shapes"] + alone[1]["shapes"]
    assert together["presence"] == pytest.approx(alone[0]["presence"] + alone[1]["presence"], abs=1e-5)


def test_bad_tracker_calls_are_one_4xx_each(store, frames):
    with TestClient(create_app(ServeConfig(store=store, token="s3cret"))) as c:
        auth = {"Authorization": "Bearer s3cret"}
        image = _b64(frames[0])
        assert error_of(c.post("/v1/cvat/tracker", json={"image": image, "shapes": [BOXES[0]]}), 401) == "unauthorized"

        def post(**body):
            return c.post("/v1/cvat/tracker", json={"image": image, **body}, headers=auth)

        forged = post(shapes=[BOXES[0]], states=["{\"net.zf\": 1}"])
        assert error_of(forged, 422) == "invalid_request" and "states[0]" in forged.json()["error"]["message"]
        assert error_of(post(shapes=[[1, 2, 3]]), 422) == "invalid_request"
        assert error_of(post(shapes=[BOXES[0]] * 17), 422) == "invalid_request"
        assert error_of(post(shapes=[[500, 500, 600, 600]]), 400) == "box_outside"
        assert error_of(post(shapes=[[50, 50, 10, 10]]), 400) == "bad_box"
        assert error_of(post(shapes=[BOXES[0]], force="nope"), 400) == "unknown_domain"
        assert error_of(post(image="%%%", shapes=[BOXES[0]]), 400) == "bad_base64"
        assert post(shapes=[]).json() == {"shapes": [], "states": [], "domains": [], "presence": [],
                                          "restarted": [], "generation": 1}


def test_a_store_that_cannot_track_is_a_400(frames, tmp_path):
    from helpers import toy_samples

    sam = SAMCL.create("builtin:tiny-sam", tmp_path / "sam", device="cpu")
    sam.learn("red", toy_samples(2, (200, 30, 30), 0), TrainConfig(epochs=1, batch_size=2, progress=False))
    with TestClient(create_app(ServeConfig(store=tmp_path / "sam"))) as c:
        answer = c.post("/v1/cvat/tracker", json={"image": _b64(frames[0]), "shapes": [BOXES[0]]})
    assert error_of(answer, 400) == "cannot_track" and "SAM 2" in answer.json()["error"]["message"]


def test_a_sam2_image_store_without_memory_weights_is_a_400(store, frames, tmp_path):
    """An HF-format SAM 2 *image* directory has no video memory: the route says so instead of failing later."""
    from helpers import toy_samples

    from samcl.backbone.sam2_video import Sam2VideoBackbone

    video = load_backbone(store.parent / "sam2-video")
    assert isinstance(video, Sam2VideoBackbone)
    video.model.save_pretrained(tmp_path / "sam2-image")
    image = SAMCL.create(load_backbone(tmp_path / "sam2-image"), tmp_path / "image-store", device="cpu")
    image.learn("red", toy_samples(2, (200, 30, 30), 0), TrainConfig(epochs=1, batch_size=2, progress=False))
    with TestClient(create_app(ServeConfig(store=tmp_path / "image-store"))) as c:
        answer = c.post("/v1/cvat/tracker", json={"image": _b64(frames[0]), "shapes": [BOXES[0]]})
        assert error_of(answer, 400) == "cannot_track" and "no video memory" in answer.json()["error"]["message"]
        assert c.post("/v1/segment", json={"image": _b64(frames[0]), "points": [[5, 5]]}).status_code == 200


def readme_tracker_commands() -> list[str]:
    from test_serve_uploads import serving_section

    (block,) = [b for b in re.findall(r"```bash\n(.*?)```", serving_section(), flags=re.S) if "/v1/cvat/tracker" in b]
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip() and not line.startswith("#")]


def test_the_readme_tracker_example_runs_as_written(store, frames, tmp_path):
    """The README's curl lines against a real server on the SAM 2 store, with two frames as the files they name."""
    import json
    import shutil

    from PIL import Image
    from serve_helpers import live_server

    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    for t in (0, 1):
        Image.fromarray(frames[t]).resize((640, 480)).save(tmp_path / f"frame{t}.png")
    with live_server(create_app(ServeConfig(store=store))) as url:
        script = "set -e -o pipefail\n" + "\n".join(readme_tracker_commands()).replace(
            "localhost:8000", url.removeprefix("http://"))
        done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["restarted"] == [] and len(answer["shapes"][0]) == 4 and answer["states"][0].startswith("samcl")
