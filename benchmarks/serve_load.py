"""`samcl serve` under load, cross-request batching on vs off, both measured in this run (localhost only).

    python benchmarks/serve_load.py                       # tiny SAM and a ViT-B-config model, 1/4/16 clients
    python benchmarks/serve_load.py --models tiny --requests 40 --json

For each model a store with three domains is served twice at once, by a server with batching on
(`--batch-window-ms W --max-batch 16`) and one with it off (`--max-batch 1`); each client count N runs on one
server then the other, interleaved, so both see the same machine load. N clients each send a fixed number of
segment requests (closed loop: the next request when the previous answer came), cycling through images of
different synthetic domains (uploaded once, so requests cost the prompt-dependent part) with varying points.
Printed: throughput (requests/s), p50/p95/p99 latency, the mean batch size, failures, and on/off ratios. Then
1,000 more requests against the batching server with its resident memory (RSS) sampled every 100.

The ViT-B model has SAM ViT-B's configuration (transformers' SamConfig defaults) with random weights, saved as an
HF directory; `--vit-b-size` shrinks its input (default 256 px instead of 1024) to keep the run short.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]  # this checkout's samcl, not another
from latency import add_random_domains, vit_b_backbone  # noqa: E402
from serve_helpers import make_store, png  # noqa: E402

from samcl import SAMCL, load_backbone  # noqa: E402
from samcl.data.synthetic import generate  # noqa: E402

DOMAINS = ("polyps", "cells", "shadows", "camouflage", "skin_lesions")


def vit_b_store(root: Path, size: int) -> Path:
    """A store on a random-weight ViT-B-config SAM (saved as an HF directory) with three random modules."""
    base = root / "vit-b-base"
    vit_b_backbone(size).model.save_pretrained(base)
    samcl = SAMCL.create(load_backbone(base), root / "vit-b-store", base_hint=str(base), device="cpu")
    add_random_domains(samcl, 3)
    with samcl.store.lock():
        samcl.store.save(samcl.module_set)
    return root / "vit-b-store"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(store: Path, threads: int, *flags: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "samcl.cli", "serve", str(store), "--port", str(port), "--threads",
               str(threads), *flags]
    log = tempfile.TemporaryFile()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    log.seek(0)
    raise SystemExit(f"server for {store} did not start (exit code {process.poll()}): {log.read().decode()[-2000:]}")


def requests_for(images: list[dict], count: int, client: int) -> list[dict]:
    """`count` segment requests cycling through the images, points varying (one to three, one negative)."""
    rng = np.random.default_rng(client)
    out = []
    for i in range(count):
        image = images[(client + i) % len(images)]
        n = 1 + i % 3
        points = np.stack([rng.uniform(0, image["width"], n), rng.uniform(0, image["height"], n)], 1)
        labels = [1] * (n - 1) + [1 if n == 1 else 0]
        out.append({"image_id": image["image_id"], "points": points.tolist(), "labels": labels, "mask_format": "rle"})
    return out


async def load(url: str, images: list[dict], clients: int, per_client: int) -> dict:
    latencies, batches, failures = [], [], 0

    async def client(k: int, http: httpx.AsyncClient):
        nonlocal failures
        for body in requests_for(images, per_client, k):
            start = time.perf_counter()
            try:
                answer = await http.post(url + "/v1/segment", json=body)
                ok = answer.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - start)
            if ok:
                batches.append(answer.json()["timings"]["batch_size"])
            else:
                failures += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(k, http) for k in range(clients)))
        wall = time.perf_counter() - start
    ms = np.array(latencies) * 1e3
    return {"requests": len(latencies), "failures": failures, "throughput": len(latencies) / wall,
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_batch": statistics.fmean(batches) if batches else 0.0}


def upload(url: str, seed: int, size: int | None) -> list[dict]:
    images = []
    for i, domain in enumerate(DOMAINS):
        image = generate(domain, 1, seed + i, "test")[0].image
        if size:  # the ViT-B run: images near its input size
            from PIL import Image
            image = np.asarray(Image.fromarray(image).resize((size, size * 3 // 4)))
        images.append(httpx.post(url + "/v1/images", content=png(image), timeout=120).json())
    return images


def rss_over(url: str, pid: int, images: list[dict], total: int, clients: int) -> dict:
    process = psutil.Process(pid)
    samples = [process.memory_info().rss]
    for _ in range(total // 100):
        result = asyncio.run(load(url, images, clients, 100 // clients))  # 10 clients x 10 requests
        if result["failures"]:
            raise SystemExit(f"{result['failures']} requests failed during the RSS run")
        samples.append(process.memory_info().rss)
    mib = [s / 2**20 for s in samples]
    return {"requests": (total // 100) * (100 // clients) * clients, "rss_mib": [round(m, 1) for m in mib],
            "growth_mib": round(mib[-1] - mib[1], 1)}


def run_model(name: str, store: Path, args, size: int | None) -> dict:
    on, on_url = start(store, args.threads, "--batch-window-ms", str(args.window_ms), "--max-batch", "16")
    off, off_url = start(store, args.threads, "--max-batch", "1")
    try:
        images = {url: upload(url, 0, size) for url in (on_url, off_url)}
        per_client = args.requests if name == "tiny" else args.vit_b_requests
        rows = []
        for clients in args.clients:
            for url in (on_url, off_url):  # warm-up of this concurrency, not measured
                asyncio.run(load(url, images[url], clients, 2))
            result_on = asyncio.run(load(on_url, images[on_url], clients, per_client))
            result_off = asyncio.run(load(off_url, images[off_url], clients, per_client))
            rows.append({"clients": clients, "on": result_on, "off": result_off,
                         "throughput_ratio": result_on["throughput"] / result_off["throughput"]})
            print(f"  {name} {clients:>2} clients: on {result_on['throughput']:.1f} req/s, off "
                  f"{result_off['throughput']:.1f} req/s", file=sys.stderr)
        out = {"model": name, "rows": rows}
        if name == "tiny" and args.rss_requests:
            out["rss"] = rss_over(on_url, on.pid, images[on_url], args.rss_requests, 10)
        return out
    finally:
        for process in (on, off):
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,vit-b")
    parser.add_argument("--clients", default="1,4,16", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--requests", type=int, default=30, help="requests per client, tiny SAM")
    parser.add_argument("--vit-b-requests", type=int, default=6, help="requests per client, ViT-B")
    parser.add_argument("--vit-b-size", type=int, default=256, help="ViT-B input size in pixels")
    parser.add_argument("--window-ms", type=float, default=5.0, help="batching window of the batching server")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per server")
    parser.add_argument("--rss-requests", type=int, default=1000, help="requests of the RSS run (0: none)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {"machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()}, "models": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in args.models.split(","):
            store = make_store(root / "tiny-store", ("polyps", "cells", "shadows")) if name == "tiny" \
                else vit_b_store(root, args.vit_b_size)
            results["models"].append(run_model(name, store, args, None if name == "tiny" else args.vit_b_size))
    results["machine"]["load_average_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(f"machine: {results['machine']['cpus']} CPUs, load average {results['machine']['load_average'][0]:.1f} "
          f"before, {results['machine']['load_average_after'][0]:.1f} after; torch threads per server {args.threads}; "
          f"batching window {args.window_ms:g} ms, max batch 16")
    print(f"{'model':<6} {'N':>3} | {'req/s on':>8} {'off':>6} {'ratio':>5} | {'p50 on':>7} {'p95':>6} {'p99':>6} | "
          f"{'p50 off':>7} {'p95':>6} {'p99':>6} | {'batch':>5} {'fail':>4}")
    for model in results["models"]:
        for row in model["rows"]:
            on, off = row["on"], row["off"]
            print(f"{model['model']:<6} {row['clients']:>3} | {on['throughput']:>8.1f} {off['throughput']:>6.1f} "
                  f"{row['throughput_ratio']:>5.2f} | {on['p50_ms']:>7.1f} {on['p95_ms']:>6.1f} {on['p99_ms']:>6.1f} | "
                  f"{off['p50_ms']:>7.1f} {off['p95_ms']:>6.1f} {off['p99_ms']:>6.1f} | {on['mean_batch']:>5.1f} "
                  f"{on['failures'] + off['failures']:>4}")
        if "rss" in model:
            rss = model["rss"]
            print(f"{model['model']} RSS of the batching server over {rss['requests']} requests (MiB, every 100): "
                  f"{' '.join(map(str, rss['rss_mib']))}; growth after the first 100: {rss['growth_mib']} MiB")


if __name__ == "__main__":
    main()
