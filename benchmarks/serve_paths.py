"""The paths the in-flight budget did not see before issue 34, driven against a real `samcl serve` process, with
its peak RSS read from the kernel against the budget: CVAT interactor answers, idle request bodies, and a Label
Studio project's learn.

    python benchmarks/serve_paths.py                         # 16 CVAT calls of 4 MP, budget 256 MiB
    python benchmarks/serve_paths.py --clients 32 --megapixels 4 --budget-mb 256 --json

One store (the shipped tiny SAM), servers run one after the other in this run, each warmed up (one upload of the
same size) and its peak-RSS mark reset (/proc/PID/clear_refs) before each scenario:
- cvat: CLIENTS concurrent /v1/cvat/interactor calls on distinct PNGs just under --max-megapixels (each answer is
  a H x W list of 0/255: about 4 bytes a pixel of JSON), once with --max-inflight-mb BUDGET and once with a
  budget that never refuses (what the server did when the answer was built after the ticket was given back).
- idle: 14 sockets declare 26 MB bodies and send 10 bytes (the issue's case), then uploads one after the other
  must still get 200; every idle socket must get a 408 after --body-timeout-seconds and the charge go back to 0.
- prompts: one image, then /v1/segment requests with 1, 2, ... 64 points (the cap on every route) on
  `--runtime` (openvino: a compiled graph per prompt shape unless the runtime bounds them); RSS after each size.
- learn: a Label Studio project (the stand-in of tests/studio_server.py on 127.0.0.1: the token refresh, the
  export, the task images over HTTP) of TASKS annotated images of --learn-image-mp each, learned on START_TRAINING
  with --learn-max-megapixels (the first task's mask noise: a brush RLE of megabytes); peak RSS over the warm
  server against what /label-studio/learning reports, and the slowest /healthz answer during the learn.
Printed: answers by status, peak RSS growth, what the server charged at most, and the budget.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]
from serve_helpers import make_store  # noqa: E402
from serve_load import start  # noqa: E402
from serve_uploads import images, rss_mib  # noqa: E402
from studio_server import StudioServer  # noqa: E402

MiB = 2**20
CONFIG = ('<View><Image name="image" value="$image"/><BrushLabels name="mask" toName="image">'
          '<Label value="Object"/></BrushLabels></View>')


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def reset_peak(pid: int) -> float:
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return rss_mib(pid)[0]


def inflight(url: str) -> dict:
    return httpx.get(url + "/healthz", timeout=30).json()["inflight"]


async def cvat_burst(url: str, bodies: list[bytes]) -> dict:
    statuses, sizes = collections.Counter(), []

    async def one(body: bytes, http: httpx.AsyncClient) -> None:
        try:
            answer = await http.post(url + "/v1/cvat/interactor", content=body,
                                     headers={"content-type": "application/json"})
            statuses[answer.status_code] += 1
            sizes.append(len(answer.content))
        except httpx.HTTPError as exc:
            statuses[type(exc).__name__] += 1

    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        start_s = time.perf_counter()
        await asyncio.gather(*(one(body, http) for body in bodies))
    return {"statuses": dict(statuses), "wall_s": round(time.perf_counter() - start_s, 2),
            "answer_mib": round(max(sizes, default=0) / MiB, 1)}


def cvat(store: Path, args, budget_mb: float, pngs: list[bytes], warm: bytes) -> dict:
    process, url = start(store, 1, "--max-megapixels", str(args.megapixels), "--max-inflight-mb", str(budget_mb),
                         "--cache-mb", "64", "--batch-window-ms", "50")
    try:
        assert httpx.post(url + "/v1/images", content=warm, timeout=300).status_code == 200
        bodies = [json.dumps({"image": base64.b64encode(data).decode(), "pos_points": [[60.0, 60.0]]}).encode()
                  for data in pngs]
        before = reset_peak(process.pid)
        result = asyncio.run(cvat_burst(url, bodies))
        peak = rss_mib(process.pid)[1]
        return {**result, "budget_mib": budget_mb, "rss_before_mib": round(before, 1),
                "growth_mib": round(peak - before, 1), "charged_peak_mib": round(inflight(url)["peak"] / MiB, 1)}
    finally:
        stop(process)


def idle(store: Path, args, pngs: list[bytes], warm: bytes) -> dict:
    process, url = start(store, 1, "--max-megapixels", str(args.megapixels), "--max-inflight-mb",
                         str(args.budget_mb), "--max-upload-mb", "30", "--body-timeout-seconds",
                         str(args.body_timeout))
    try:
        assert httpx.post(url + "/v1/images", content=warm, timeout=300).status_code == 200
        before = reset_peak(process.pid)
        host, port = url.removeprefix("http://").split(":")
        sockets = []
        for _ in range(14):
            conn = socket.create_connection((host, int(port)), timeout=60)
            conn.sendall(b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 26000000\r\n\r\n" + b'{"points":')
            sockets.append(conn)
        opened = time.monotonic()
        time.sleep(0.3)
        held = inflight(url)["bytes"]
        uploads = collections.Counter(httpx.post(url + "/v1/images", content=data, timeout=300).status_code
                                      for data in pngs[:4])
        answers = []
        for conn in sockets:
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            answers.append(data.split(b" ", 2)[1].decode() if data else "closed")
            conn.close()
        return {"uploads_while_idle": dict(uploads), "idle_held_bytes": held,
                "idle_answers": dict(collections.Counter(answers)),
                "seconds_to_last_answer": round(time.monotonic() - opened, 1),
                "held_after_bytes": inflight(url)["bytes"], "budget_mib": args.budget_mb,
                "growth_mib": round(rss_mib(process.pid)[1] - before, 1),
                "charged_peak_mib": round(inflight(url)["peak"] / MiB, 1)}
    finally:
        stop(process)


def prompts(store: Path, args, warm: bytes) -> dict:
    from samcl.serve.limits import MAX_POINTS

    process, url = start(store, 1, "--max-inflight-mb", str(args.budget_mb), "--runtime", args.runtime,
                         "--max-megapixels", str(args.megapixels))
    try:
        image_id = httpx.post(url + "/v1/images", content=warm, timeout=600).json()["image_id"]
        rng = np.random.default_rng(0)
        before = reset_peak(process.pid)
        rss, statuses = {}, collections.Counter()
        for n in range(1, MAX_POINTS + 2):  # one past the cap: a 422, nothing compiled
            points = np.stack([rng.uniform(10, 100, n), rng.uniform(10, 100, n)], 1).tolist()
            answer = httpx.post(url + "/v1/segment", json={"image_id": image_id, "points": points,
                                                             "mask_format": "rle"}, timeout=600)
            statuses[answer.status_code] += 1
            if n in (1, 2, 4, 8, 16, 32, 64, MAX_POINTS + 1):
                rss[n] = round(rss_mib(process.pid)[0], 1)
        return {"runtime": args.runtime, "statuses": dict(statuses), "rss_mib_by_points": rss,
                "rss_before_mib": round(before, 1), "growth_mib": round(rss_mib(process.pid)[1] - before, 1)}
    finally:
        stop(process)


def studio_project(tasks: int, megapixels: float, noisy: bool) -> tuple[list, dict]:
    """TASKS annotated tasks (brush RLE of an ellipse, two keypoints) of distinct images of `megapixels`; with
    `noisy`, the first task's mask is noise (a brush RLE of megabytes: seconds of decoding)."""
    from label_studio_sdk.converter import brush

    out, files = [], {}
    for k, data in enumerate(images(tasks, megapixels / 0.99, 10)):
        from PIL import Image
        import io

        width, height = Image.open(io.BytesIO(data)).size
        yy, xx = np.mgrid[:height, :width]
        mask = (((yy - height / 2) / (height / 3)) ** 2 + ((xx - width / 2) / (width / 4)) ** 2) < 1
        if noisy and k == 0:
            mask = np.random.default_rng(0).random((height, width)) < 0.5
        files[f"/data/upload/1/{k}.png"] = data
        result = [{"type": "brushlabels", "from_name": "mask", "to_name": "image", "original_width": width,
                   "original_height": height, "value": {"format": "rle", "brushlabels": ["Object"],
                                                        "rle": brush.mask2rle(mask.astype(np.uint8) * 255)}},
                  {"type": "keypointlabels", "from_name": "kp", "to_name": "image",
                   "value": {"x": 50.0, "y": 50.0, "keypointlabels": ["Object"]}}]
        out.append({"id": k + 1, "data": {"image": f"/data/upload/1/{k}.png"},
                    "annotations": [{"id": k + 1, "result": result}]})
    return out, files


def learn(store: Path, args) -> dict:
    export, files = studio_project(args.learn_tasks, args.learn_image_mp, args.noisy_rle)
    rle_bytes = max(len(t["annotations"][0]["result"][0]["value"]["rle"]) for t in export)
    with StudioServer(files, export) as studio:
        process, url = start(store, 1, "--max-megapixels", str(max(args.megapixels, args.learn_image_mp * 1.1)),
                             "--max-inflight-mb", str(args.budget_mb), "--label-studio-url", studio.url,
                             "--label-studio-api-key", studio.refresh_token, "--train-epochs", "1",
                             "--learn-max-megapixels", str(args.learn_max_mp))
        try:
            before = reset_peak(process.pid)
            project = {"id": 1, "title": "bench", "label_config": CONFIG}
            queued = httpx.post(url + "/label-studio/webhook", json={"action": "START_TRAINING",
                                                                     "project": project}, timeout=30).json()
            start_s, state, slowest = time.monotonic(), {}, 0.0
            while time.monotonic() - start_s < 1800:
                asked = time.perf_counter()
                assert httpx.get(url + "/healthz", timeout=60).status_code == 200
                slowest = max(slowest, time.perf_counter() - asked)
                state = httpx.get(url + "/label-studio/learning", timeout=30).json()["projects"].get("1", {})
                if state.get("state") in ("done", "failed"):
                    break
                time.sleep(0.2)
            return {"queued": queued["status"], "state": state.get("state"), "error": state.get("error"),
                    "memory": state.get("memory"), "seconds": round(time.monotonic() - start_s, 1),
                    "tasks": args.learn_tasks, "image_mp": args.learn_image_mp, "max_mp": args.learn_max_mp,
                    "largest_rle_bytes": rle_bytes, "healthz_slowest_ms": round(slowest * 1e3, 1),
                    "growth_mib": round(rss_mib(process.pid)[1] - before, 1), "rss_before_mib": round(before, 1)}
        finally:
            stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--megapixels", type=float, default=4.0, help="the server's --max-megapixels")
    parser.add_argument("--budget-mb", type=float, default=256.0, help="the server's --max-inflight-mb")
    parser.add_argument("--body-timeout", type=float, default=5.0, help="the server's --body-timeout-seconds")
    parser.add_argument("--learn-tasks", type=int, default=6)
    parser.add_argument("--learn-image-mp", type=float, default=4.0)
    parser.add_argument("--learn-max-mp", type=float, default=32.0, help="the server's --learn-max-megapixels")
    parser.add_argument("--noisy-rle", action=argparse.BooleanOptionalAction, default=True,
                        help="the first task's mask is noise: a brush RLE of megabytes, decoded during the learn")
    parser.add_argument("--runtime", default="torch", help="the server's --runtime for the prompts scenario")
    parser.add_argument("--only", choices=["cvat", "idle", "prompts", "learn"], action="append")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    only = set(args.only or ["cvat", "idle", "prompts", "learn"])
    report = {"clients": args.clients, "megapixels": args.megapixels, "budget_mib": args.budget_mb}
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(Path(tmp) / "store")
        pngs = images(args.clients + 1, args.megapixels, 1)
        warm, pngs = pngs[-1], pngs[:-1]
        if "cvat" in only:
            report["cvat_budgeted"] = cvat(store, args, args.budget_mb, pngs, warm)
            report["cvat_unbounded"] = cvat(store, args, 1 << 20, pngs, warm)
        if "idle" in only:
            report["idle"] = idle(store, args, pngs, warm)
        if "prompts" in only:
            report["prompts"] = prompts(store, args, warm)
        if "learn" in only:
            report["learn"] = learn(store, args)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name in ("cvat_budgeted", "cvat_unbounded"):
        if name in report:
            r = report[name]
            print(f"{name:15s} budget {r['budget_mib']:>9,.0f} MiB: {args.clients} CVAT calls of {args.megapixels:g} "
                  f"MP -> {r['statuses']} ({r['wall_s']} s, answers {r['answer_mib']} MiB), peak RSS growth "
                  f"{r['growth_mib']:,.1f} MiB over warm {r['rss_before_mib']:,.1f} (charged at most "
                  f"{r['charged_peak_mib']:,.1f})")
    if "idle" in report:
        r = report["idle"]
        print(f"idle bodies     budget {r['budget_mib']:>9,.0f} MiB: 14 sockets x 26 MB declared, 10 B sent held "
              f"{r['idle_held_bytes']} B; uploads meanwhile {r['uploads_while_idle']}; idle answers "
              f"{r['idle_answers']} after {r['seconds_to_last_answer']} s; held after {r['held_after_bytes']} B; "
              f"peak RSS growth {r['growth_mib']:,.1f} MiB")
    if "prompts" in report:
        r = report["prompts"]
        print(f"prompt sizes    --runtime {r['runtime']}: 1..65 points -> {r['statuses']}; RSS by points "
              f"{r['rss_mib_by_points']} MiB; peak growth {r['growth_mib']:,.1f} MiB")
    if "learn" in report:
        r = report["learn"]
        print(f"label studio    learn of {r['tasks']} tasks x {r['image_mp']:g} MP (cap {r['max_mp']:g} MP): "
              f"{r['state']} in {r['seconds']} s {r['error'] or ''}; reported {r['memory']}; peak RSS growth "
              f"{r['growth_mib']:,.1f} MiB over warm {r['rss_before_mib']:,.1f}; largest RLE "
              f"{r['largest_rle_bytes']:,} B, slowest /healthz meanwhile {r['healthz_slowest_ms']} ms")


if __name__ == "__main__":
    main()
