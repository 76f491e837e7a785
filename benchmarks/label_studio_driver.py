"""The Label Studio side of benchmarks/label_studio_loop.py, run in Label Studio's own venv (label-studio-sdk):

    V/bin/python benchmarks/label_studio_driver.py PLAN.json      # prints its result as one JSON line

PLAN "step" "login": log in as the user Label Studio was started with and print a personal access token.
PLAN "step" "loop": for each project, create it, upload its images, connect the backend, pre-label the held-out
tasks, annotate the training tasks from the ground truth, start training and wait for the new generation, pre-label
again; then the first project's held-out tasks once more.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> int:
    plan = json.loads(Path(sys.argv[1]).read_text())
    if plan["step"] == "login":
        print(personal_token(plan["url"], plan["email"], plan["password"]))
        return 0
    return loop(plan)


def loop(plan: dict) -> int:
    from label_studio_sdk import LabelStudio

    client = LabelStudio(base_url=plan["url"], api_key=plan["token"])
    timings, rows, made = {}, [], []
    for spec in plan["projects"]:
        start = time.perf_counter()
        project, ml, tasks = setup_project(client, plan, spec)
        timings[f"{spec['domain']}: create project, upload {len(tasks)} images, connect the backend"] = \
            time.perf_counter() - start
        start = time.perf_counter()
        before = held_out_iou(client, ml, spec, tasks)
        timings[f"{spec['domain']}: pre-label {sum(i['split'] == 'test' for i in spec['items'])} held-out tasks"] = \
            time.perf_counter() - start
        start = time.perf_counter()
        annotate(client, spec, tasks)
        timings[f"{spec['domain']}: submit {sum(i['split'] == 'train' for i in spec['items'])} annotations"] = \
            time.perf_counter() - start
        start = time.perf_counter()
        generation = train(client, ml, plan["samcl"], project)
        timings[f"{spec['domain']}: learn (Start Training until the new generation serves)"] = \
            time.perf_counter() - start
        after = held_out_iou(client, ml, spec, tasks)
        rows.append({"domain": spec["domain"], "project": project, "iou_before": before, "iou_after": after,
                     "generation": generation})
        made.append((ml, spec, tasks))
    start = time.perf_counter()
    ml, spec, tasks = made[0]
    rows[0]["iou_later"] = held_out_iou(client, ml, spec, tasks)
    timings[f"{spec['domain']}: pre-label its held-out tasks again"] = time.perf_counter() - start
    print(json.dumps({"projects": rows, "timings": timings}))
    return 0


def personal_token(url: str, email: str, password: str) -> str:
    """Log in as the user Label Studio was started with and make a personal access token (a JWT)."""
    import httpx

    with httpx.Client(base_url=url, follow_redirects=False, timeout=60) as http:
        http.get("/user/login/")
        csrf = http.cookies["csrftoken"]
        answer = http.post("/user/login/", data={"email": email, "password": password, "csrfmiddlewaretoken": csrf},
                           headers={"Referer": f"{url}/user/login/"})
        if answer.status_code not in (302, 303):
            raise RuntimeError(f"login failed: {answer.status_code}")
        token = http.post("/api/token/", headers={"X-CSRFToken": http.cookies["csrftoken"],
                                                   "Referer": f"{url}/"})
        token.raise_for_status()
        return token.json()["token"]


def raw(client, method: str, path: str, **kwargs):
    """A request through the SDK's own authenticated HTTP client (for answers the typed client drops)."""
    response = client._client_wrapper.httpx_client.request(path, method=method, **kwargs)
    if response.status_code >= 400:
        raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
    return response


def setup_project(client, plan: dict, spec: dict):
    import httpx

    project = client.projects.create(title=spec["domain"], label_config=plan["config"])
    folder = Path(spec["folder"])
    # one form field per file: Label Studio reads request.FILES by field name
    files = [(i["file"], (i["file"], (folder / i["file"]).read_bytes(), "image/png")) for i in spec["items"]]
    access = client.tokens.refresh(refresh=plan["token"]).access  # the SDK's client sends JSON only: upload directly
    upload = httpx.post(f"{plan['url']}/api/projects/{project.id}/import", files=files,
                        headers={"Authorization": f"Bearer {access}"}, timeout=300)
    upload.raise_for_status()
    listed = raw(client, "GET", "api/tasks", params={"project": project.id, "page_size": 10_000}).json()
    tasks = {}
    for task in listed["tasks"] if isinstance(listed, dict) else listed:
        name = next(i["file"] for i in spec["items"] if task["data"]["image"].endswith(i["file"]))
        tasks[name] = task["id"]
    if len(tasks) != len(spec["items"]):
        raise RuntimeError(f"{len(tasks)} tasks for {len(spec['items'])} images: {sorted(tasks)[:5]}")
    ml = client.ml.create(project=project.id, url=plan["backend"], is_interactive=True, title="samcl",
                          extra_params={"domain": spec["domain"], "pin": plan.get("pin", True)})
    return project.id, ml.id, tasks


def keypoints(points, width: int, height: int) -> list[dict]:
    return [{"id": f"p{k}", "type": "keypointlabels", "from_name": "prompt", "to_name": "image",
             "original_width": width, "original_height": height, "image_rotation": 0, "is_positive": True,
             "value": {"x": x / width * 100, "y": y / height * 100, "width": 0.6, "keypointlabels": ["Object"]}}
            for k, (x, y) in enumerate(points)]


def held_out_iou(client, ml: int, spec: dict, tasks: dict) -> float:
    """Mean IoU of the backend's pre-labels (Label Studio's interactive-annotating answer) on the held-out tasks,
    decoded by label-studio-sdk's own brush decoder."""
    import numpy as np
    from label_studio_sdk.converter.brush import decode_rle

    ious = []
    for item in spec["items"]:
        if item["split"] != "test":
            continue
        truth = np.load(Path(spec["folder"]) / f"{item['file']}.mask.npy")
        height, width = truth.shape
        answer = raw(client, "POST", f"api/ml/{ml}/interactive-annotating",
                     json={"task": tasks[item["file"]],
                           "context": {"result": keypoints(item["points"], width, height)}}).json()
        if "data" not in answer:
            raise RuntimeError(f"interactive-annotating: {answer}")
        brush = next(r for r in answer["data"]["result"] if r["type"] == "brushlabels")
        mask = decode_rle(brush["value"]["rle"]).reshape(height, width, 4)[:, :, 3] > 0
        ious.append((mask & truth).sum() / max((mask | truth).sum(), 1))
    return float(np.mean(ious))


def annotate(client, spec: dict, tasks: dict) -> None:
    """Annotations from the ground truth: the mask in Label Studio's brush RLE (the SDK's encoder) and the
    sample's points as keypoints."""
    import numpy as np
    from label_studio_sdk.converter.brush import mask2rle

    for item in spec["items"]:
        if item["split"] != "train":
            continue
        truth = np.load(Path(spec["folder"]) / f"{item['file']}.mask.npy")
        height, width = truth.shape
        brush = {"id": "m0", "type": "brushlabels", "from_name": "mask", "to_name": "image",
                 "original_width": width, "original_height": height, "image_rotation": 0,
                 "value": {"format": "rle", "rle": mask2rle(truth.astype(np.uint8) * 255), "brushlabels": ["Object"]}}
        client.annotations.create(tasks[item["file"]], result=[brush, *keypoints(item["points"], width, height)])


def train(client, ml: int, samcl: str, project: int) -> int:
    """Start Training in Label Studio; wait until the backend has learned and serves the new generation."""
    import httpx

    client.ml.train(ml)
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        state = httpx.get(f"{samcl}/label-studio/learning").json()["projects"].get(str(project), {})
        if state.get("state") == "failed":
            raise RuntimeError(f"learning failed: {state}")
        if state.get("state") == "done" and httpx.get(f"{samcl}/healthz").json()["generation"] == state["generation"]:
            return state["generation"]
        time.sleep(0.5)
    raise TimeoutError("learning did not finish in 30 minutes")




if __name__ == "__main__":
    sys.exit(main())
