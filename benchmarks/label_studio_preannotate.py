"""Whole-project pre-annotation through a real Label Studio: "Retrieve Predictions" on a project's tasks, answered
by `samcl serve` with automatic masks, and what Label Studio stored checked against what samcl answered.

    python benchmarks/label_studio_preannotate.py --ls-venv /work/venvs/ls [--record tests/fixtures/label_studio]

Expects Label Studio in its own venv (as benchmarks/label_studio_loop.py, whose helpers this uses). It starts Label
Studio on 127.0.0.1 with a fresh data directory and `samcl serve` on a store on builtin:tiny-sam with polyps and
cells learned (tests/serve_helpers.py `make_store`; float32, so a replay matches the recording on any CPU),
behind the loop's recording proxy. Through label-studio-sdk
(this same file, run in Label Studio's venv with --drive): a project with BrushLabels and PolygonLabels, N
held-out synthetic polyp images uploaded, the backend connected with extra_params {"domain": "polyps",
"automatic": {...}}, then the Data Manager's "Retrieve Predictions" action over all tasks, and each task's stored
predictions read back. Prints, per task, the prediction's model version, score and result types, whether Label
Studio stored exactly what samcl answered, and the action's wall time. --record writes the /predict exchange
(predict-batch.json) and its task images (predict-batch-N.png): the fixtures of tests/test_preannotate.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="mask" toName="image"><Label value="Polyp" background="#ff0000"/></BrushLabels>
  <PolygonLabels name="outline" toName="image"><Label value="Polyp" background="#0000ff"/></PolygonLabels>
</View>"""
#: Meta's thresholds were chosen for SAM ViT-H; the tiny SAM's predicted IoUs are lower.
EXTRA = {"domain": "polyps", "automatic": {"pred_iou_thresh": 0.7, "stability_score_thresh": 0.7}}


def drive(plan: dict) -> dict:
    """Label Studio's side (its venv): the project, its images, the backend, Retrieve Predictions, what it stored."""
    import httpx
    from label_studio_driver import personal_token, raw
    from label_studio_sdk import LabelStudio

    if plan["step"] == "login":
        return {"token": personal_token(plan["url"], plan["email"], plan["password"])}
    client = LabelStudio(base_url=plan["url"], api_key=plan["token"])
    project = client.projects.create(title="Polyps", label_config=plan["config"])
    folder = Path(plan["folder"])
    files = [(i["file"], (i["file"], (folder / i["file"]).read_bytes(), "image/png")) for i in plan["items"]]
    access = client.tokens.refresh(refresh=plan["token"]).access
    httpx.post(f"{plan['url']}/api/projects/{project.id}/import", files=files,
               headers={"Authorization": f"Bearer {access}"}, timeout=300).raise_for_status()
    client.ml.create(project=project.id, url=plan["backend"], is_interactive=True, title="samcl",
                     extra_params=plan["extra_params"])
    start = time.perf_counter()
    action = raw(client, "POST", "api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project.id},
                 json={"selectedItems": {"all": True, "excluded": []}})
    seconds = time.perf_counter() - start
    listed = raw(client, "GET", "api/tasks", params={"project": project.id, "page_size": 1000}).json()
    tasks = listed["tasks"] if isinstance(listed, dict) else listed
    stored = {task["id"]: raw(client, "GET", "api/predictions", params={"task": task["id"]}).json() for task in tasks}
    return {"action": action.json() if action.content else None, "seconds": seconds, "stored": stored}


def main() -> int:
    sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]
    from label_studio_loop import EMAIL, PASSWORD, Recorder, free_port, wait_http, write_json, write_samples
    from serve_helpers import make_store

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ls-venv", type=Path, default=Path(os.environ.get("LS_VENV", "/work/venvs/ls")))
    parser.add_argument("--tasks", type=int, default=3, help="held-out polyp images, one task each")
    parser.add_argument("--record", type=Path, default=None, help="write the /predict exchange and its images here")
    args = parser.parse_args()
    python = args.ls_venv / "bin" / "python"
    if not (args.ls_venv / "bin" / "label-studio").exists():
        print(f"{args.ls_venv}: no label-studio there (python3 -m venv V && V/bin/pip install label-studio)",
              file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="ls-preannotate-"))
    procs: list[subprocess.Popen] = []

    def driver(plan: dict) -> dict:
        done = subprocess.run([str(python), __file__, "--drive", str(write_json(work / "plan.json", plan))],
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(done.stderr[-3000:])
        return json.loads(done.stdout.strip().splitlines()[-1])

    try:
        ls_port, samcl_port = free_port(), free_port()
        ls_url = f"http://127.0.0.1:{ls_port}"
        env = dict(os.environ, LABEL_STUDIO_BASE_DATA_DIR=str(work / "ls-data"), ML_BLOCK_LOCAL_IP="false",
                   USE_DEFAULT_BANNED_SUBNETS="false")
        env.pop("PYTHONPATH", None)
        env.pop("HOST", None)
        procs.append(subprocess.Popen([str(args.ls_venv / "bin" / "label-studio"), "start", "--no-browser",
                                       "--internal-host", "127.0.0.1", "--port", str(ls_port), "--username", EMAIL,
                                       "--password", PASSWORD], env=env, stdout=open(work / "ls.log", "w"),
                                      stderr=subprocess.STDOUT))
        make_store(work / "store", domains=("polyps", "cells"), prompts="reference")  # the recording's recipe
        samples = write_samples(work / "images", "polyps", 0, args.tasks, 7)
        wait_http(f"{ls_url}/health", 600, procs[0])
        token = driver({"step": "login", "url": ls_url, "email": EMAIL, "password": PASSWORD})["token"]
        serve_env = dict(os.environ, LABEL_STUDIO_URL=ls_url, LABEL_STUDIO_API_KEY=token, OMP_NUM_THREADS="1",
                         PYTHONPATH=os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")])))
        procs.append(subprocess.Popen([sys.executable, "-m", "samcl.cli", "serve", str(work / "store"), "--port",
                                       str(samcl_port), "--threads", "1", "--precision", "float32"], env=serve_env, cwd=work,
                                      stdout=open(work / "serve.log", "w"), stderr=subprocess.STDOUT))
        wait_http(f"http://127.0.0.1:{samcl_port}/healthz", 300, procs[1])
        recorder = Recorder(f"http://127.0.0.1:{samcl_port}")
        result = driver({"step": "retrieve", "url": ls_url, "token": token, "config": CONFIG,
                         "backend": f"{recorder.url}/label-studio", "extra_params": EXTRA,
                         "folder": samples["folder"], "items": samples["items"]})
        predicts = [e for e in recorder.exchanges if e["path"].endswith("/predict")]
        answered = {t["id"]: a for e in predicts for t, a in zip(e["request"]["tasks"], e["response"]["results"])}
        print(f"Retrieve Predictions: {result['action']}, {result['seconds']:.1f} s, {len(predicts)} /predict "
              f"request(s) for {len(answered)} tasks")
        for task, stored in sorted(result["stored"].items(), key=lambda kv: int(kv[0])):
            mine, theirs = answered.get(int(task)), stored[0] if stored else {}
            same = mine is not None and [r["value"] for r in mine["result"]] == [r["value"] for r in
                                                                                  theirs.get("result", [])]
            kinds = sorted({r["type"] for r in theirs.get("result", [])})
            print(f"task {task}: {theirs.get('model_version')} score {theirs.get('score')} "
                  f"{len(theirs.get('result', []))} results {kinds}; stored == answered: {same}")
        if args.record:
            record(args.record, predicts[0], samples)
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def record(folder: Path, exchange: dict, samples: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "predict-batch.json").write_text(json.dumps(exchange, indent=1))
    for k, task in enumerate(exchange["request"]["tasks"]):
        original = next(i["file"] for i in samples["items"] if task["data"]["image"].endswith(i["file"]))
        shutil.copy(Path(samples["folder"]) / original, folder / f"predict-batch-{k}.png")
    print(f"recorded predict-batch.json and {len(exchange['request']['tasks'])} images into {folder}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--drive":  # Label Studio's venv: the SDK side
        sys.path.insert(0, str(HERE))
        print(json.dumps(drive(json.loads(Path(sys.argv[2]).read_text()))))
        sys.exit(0)
    sys.exit(main())
