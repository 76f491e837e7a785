"""The annotate-and-learn loop against a real Label Studio: pre-labels, annotations, training, pre-labels again.

    python benchmarks/label_studio_loop.py --ls-venv /work/venvs/ls [--record tests/fixtures/label_studio]

Expects Label Studio and label-studio-sdk in their own venv (`python3 -m venv V && V/bin/pip install
label-studio`; this script installs nothing). It starts Label Studio on 127.0.0.1 with a fresh data directory,
logs in and makes a personal access token (Label Studio 1.23 refuses legacy tokens), and starts `samcl serve`
on a fresh store on builtin:tiny-sam with LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY set. Label Studio reaches
the backend through a small recording proxy here (so the exchanges can be saved as test fixtures). Then for
each of two synthetic domains: a project with brush labels and keypoint prompts, its images uploaded, the
backend connected, pre-labels asked for the held-out tasks through Label Studio's interactive-annotating API
(keypoints with is_positive), annotations made from the ground truth (brush RLE by label-studio-sdk's encoder
and the sample's points as keypoints) for the training tasks, training started (Label Studio's START_TRAINING
webhook), and the held-out pre-labels again once the new generation serves. Finally the first project's
held-out IoU once more. Prints a table of IoUs and the wall time of every step; --json writes them.

The SDK part (benchmarks/label_studio_driver.py) runs in Label Studio's venv, the samcl part in this Python:
the two never share an interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).resolve().parent / "label_studio_driver.py"  # the SDK side, run in Label Studio's venv
CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <KeyPointLabels name="prompt" toName="image" smart="true">
    <Label value="Object" background="#00ff00"/>
  </KeyPointLabels>
  <BrushLabels name="mask" toName="image">
    <Label value="Object" background="#ff0000"/>
  </BrushLabels>
</View>"""
EMAIL, PASSWORD = "loop@example.com", "loop-password-1"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


# ------------------------------------------------------------------------------------------------ recording proxy
class Recorder:
    """A reverse proxy Label Studio talks to instead of the backend; keeps every exchange."""

    def __init__(self, target: str):
        self.target, self.exchanges, self.lock = target.rstrip("/"), [], threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self):
                import httpx

                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
                start = time.perf_counter()
                answer = httpx.request(self.command, recorder.target + self.path, content=body, headers=headers,
                                       timeout=600)
                with recorder.lock:
                    recorder.exchanges.append({"method": self.command, "path": self.path,
                                               "request": json.loads(body) if body else None,
                                               "status": answer.status_code, "response": answer.json(),
                                               "ms": round((time.perf_counter() - start) * 1e3, 1)})
                self.send_response(answer.status_code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


# ------------------------------------------------------------------------------------------------ samcl side
def make_store(path: Path) -> None:
    from samcl import SAMCL, load_backbone

    samcl = SAMCL.create(load_backbone("builtin:tiny-sam"), path)
    with samcl.store.lock():
        samcl.store.save(samcl.module_set)  # an empty set: every image runs on the base until a project is learned


def write_samples(folder: Path, domain: str, n_train: int, n_test: int, seed: int) -> dict:
    """PNG images of the domain (train and held-out), their masks and points, for the SDK side."""
    import numpy as np
    from PIL import Image

    from samcl.data.synthetic import generate

    folder.mkdir(parents=True)
    items = []
    for split, n in (("train", n_train), ("test", n_test)):
        for k, sample in enumerate(generate(domain, n, seed, split)):
            name = f"{domain}-{split}-{k:03d}.png"
            Image.fromarray(sample.image).save(folder / name)
            np.save(folder / f"{name}.mask.npy", sample.mask)
            points = sample.points if sample.points is not None else np.zeros((0, 2))
            items.append({"file": name, "split": split, "points": np.asarray(points).tolist()})
    return {"domain": domain, "folder": str(folder), "items": items}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ls-venv", type=Path, default=Path(os.environ.get("LS_VENV", "/work/venvs/ls")),
                        help="the venv holding label-studio and label-studio-sdk")
    parser.add_argument("--domains", default="polyps,cells", help="two synthetic domains, in learning order")
    parser.add_argument("--train", type=int, default=12, help="annotated tasks per project")
    parser.add_argument("--test", type=int, default=8, help="held-out tasks per project")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of each project's learn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--selector", action="store_true",
                        help="projects do not pin their domain (extra_params pin: false): the selector chooses")
    parser.add_argument("--record", type=Path, default=None, help="write the recorded exchanges here (fixtures)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = parser.parse_args()
    python = args.ls_venv / "bin" / "python"
    if not (args.ls_venv / "bin" / "label-studio").exists():
        print(f"{args.ls_venv}: no label-studio there; make it with: python3 -m venv {args.ls_venv} && "
              f"{args.ls_venv}/bin/pip install label-studio", file=sys.stderr)
        return 2
    work = args.keep or Path(tempfile.mkdtemp(prefix="ls-loop-"))
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    procs: list[subprocess.Popen] = []
    try:
        start = time.perf_counter()
        ls_port, samcl_port = free_port(), free_port()
        ls_url = f"http://127.0.0.1:{ls_port}"
        # Label Studio refuses ML backends and webhooks on local addresses unless told otherwise (its SSRF guard)
        env = dict(os.environ, LABEL_STUDIO_BASE_DATA_DIR=str(work / "ls-data"), ML_BLOCK_LOCAL_IP="false",
                   USE_DEFAULT_BANNED_SUBNETS="false")
        env.pop("PYTHONPATH", None)
        ls_log = open(work / "label-studio.log", "w")
        env.pop("HOST", None)  # Label Studio's HOST is its public URL; --internal-host is where it listens
        procs.append(subprocess.Popen([str(args.ls_venv / "bin" / "label-studio"), "start", "--no-browser",
                                       "--internal-host", "127.0.0.1", "--port", str(ls_port), "--username", EMAIL,
                                       "--password", PASSWORD], env=env, stdout=ls_log, stderr=subprocess.STDOUT))
        make_store(work / "store")
        projects = [write_samples(work / "images" / d, d, args.train, args.test, args.seed + k)
                    for k, d in enumerate(args.domains.split(","))]
        wait_http(f"{ls_url}/health", 300, procs[0])
        timings["start Label Studio (fresh data dir, migrations)"] = time.perf_counter() - start

        start = time.perf_counter()
        login = {"step": "login", "url": ls_url, "email": EMAIL, "password": PASSWORD}
        token = subprocess.run([str(python), str(DRIVER), str(write_json(work / "login.json", login))],
                               capture_output=True, text=True, check=True).stdout.strip()
        serve_env = dict(os.environ, LABEL_STUDIO_URL=ls_url, LABEL_STUDIO_API_KEY=token, OMP_NUM_THREADS="1",
                         PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        serve_log = open(work / "serve.log", "w")
        procs.append(subprocess.Popen([sys.executable, "-m", "samcl.cli", "serve", str(work / "store"), "--port",
                                       str(samcl_port), "--reload-seconds", "0.5", "--train-epochs", str(args.epochs)],
                                      env=serve_env, stdout=serve_log, stderr=subprocess.STDOUT, cwd=work))
        wait_http(f"http://127.0.0.1:{samcl_port}/healthz", 300, procs[1])
        recorder = Recorder(f"http://127.0.0.1:{samcl_port}")
        timings["log in, make a personal access token, start samcl serve"] = time.perf_counter() - start

        plan = {"step": "loop", "url": ls_url, "token": token, "backend": f"{recorder.url}/label-studio",
                "samcl": f"http://127.0.0.1:{samcl_port}", "config": CONFIG, "projects": projects,
                "pin": not args.selector}
        out = subprocess.run([str(python), str(DRIVER), str(write_json(work / "plan.json", plan))],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stdout[-4000:], out.stderr[-4000:], file=sys.stderr)
            return 1
        result = json.loads(out.stdout.strip().splitlines()[-1])
        timings.update(result.pop("timings"))
        result["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
        result["pinned"] = not args.selector
        report(result)
        if args.json:
            write_json(args.json, result)
        if args.record:
            record(args.record, recorder.exchanges, projects[0], work)
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def report(result: dict) -> None:
    print(f"{'project':<10} {'held-out IoU before':>20} {'after its learn':>16} {'after the next':>15}")
    for row in result["projects"]:
        later = f"{row['iou_later']:.4f}" if row.get("iou_later") is not None else "-"
        print(f"{row['domain']:<10} {row['iou_before']:>20.4f} {row['iou_after']:>16.4f} {later:>15}")
    print()
    for step, seconds in result["timings_s"].items():
        print(f"{seconds:8.1f} s  {step}")


def record(folder: Path, exchanges: list[dict], first: dict, work: Path) -> None:
    """One exchange of each kind Label Studio made, and the image of the recorded interactive request."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    kinds = {}
    for exchange in exchanges:
        body = exchange["request"] or {}
        kind = exchange["path"].rsplit("/", 1)[-1]
        if kind == "predict":
            kind += "-interactive" if (body.get("params") or {}).get("context") else "-batch"
        if kind == "webhook":
            kind += "-" + str(body.get("action", "")).lower()
        kinds.setdefault(kind, exchange)
    for kind, exchange in kinds.items():
        if kind == "setup":  # the throwaway instance's legacy token for its user: not kept
            exchange["request"]["access_token"] = "legacy-token-of-the-recording-instance"
        write_json(folder / f"{kind}.json", exchange)
    interactive = kinds.get("predict-interactive")
    if interactive:
        url = interactive["request"]["tasks"][0]["data"]["image"]
        original = next(i["file"] for i in first["items"] if url.endswith(i["file"]))
        shutil.copy(work / "images" / first["domain"] / original, folder / "predict-interactive-image.png")
    print(f"recorded {', '.join(sorted(kinds))} into {folder}")


if __name__ == "__main__":
    sys.exit(main())
