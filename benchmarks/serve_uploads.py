"""32 concurrent uploads just under the megapixel cap against a real `samcl serve` process: the in-flight budget
holds the server's memory, and every request is answered 200 or 503 (with Retry-After).

    python benchmarks/serve_uploads.py                       # 32 uploads of 3.96 MP, budget 256 MiB
    python benchmarks/serve_uploads.py --clients 32 --megapixels 4 --budget-mb 256 --json

Two servers on one store (the shipped tiny SAM), run one after the other in this run: one with
`--max-inflight-mb BUDGET`, and a baseline whose budget is too large to ever refuse (what the server did before
the budget). For each: the server is warmed up (one upload of the same size), its peak-RSS mark reset
(/proc/PID/clear_refs), then CLIENTS uploads of distinct PNG images just under `--max-megapixels` start at once.
Printed: the answers by status, the peak RSS over the warm server's RSS (the kernel's VmHWM: every page the
process touched, no sampling gap) against the budget, and then the same burst with clients that retry on 503
after Retry-After (all must end 200).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's samcl, not another
from serve_helpers import make_store, png  # noqa: E402
from serve_load import start as start_server  # noqa: E402

from samcl.data.synthetic import generate  # noqa: E402

MiB = 2**20


def start(store: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    """`samcl serve STORE` on a free port with one torch thread (serve_load's launcher), once /healthz answers."""
    return start_server(store, 1, *flags)


def images(count: int, megapixels: float, seed: int) -> list[bytes]:
    """`count` distinct PNGs of 0.99 x the cap (each differs, so none is a cache hit), from a synthetic photo."""
    from PIL import Image

    pixels = int(megapixels * 1e6 * 0.99)
    width = int((pixels * 4 / 3) ** 0.5)
    height = pixels // width
    base = np.asarray(Image.fromarray(generate("polyps", 1, seed, "test")[0].image).resize((width, height)))
    out = []
    for i in range(count):
        image = base.copy()
        image[0, : i + 1] = 255 - image[0, : i + 1]  # a different first row: a different image id
        out.append(png(image))
    return out


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of `pid` in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def burst(url: str, bodies: list[bytes], retry: bool) -> dict:
    statuses, retry_after, tries = collections.Counter(), set(), 0

    async def one(body: bytes, http: httpx.AsyncClient) -> None:
        nonlocal tries
        while True:
            tries += 1
            try:
                answer = await http.post(url + "/v1/images", content=body)
                status = answer.status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            if status == 503:
                retry_after.add(answer.headers.get("retry-after"))
                if retry:
                    await asyncio.sleep(float(answer.headers.get("retry-after", 1)))
                    continue
            statuses[status] += 1
            return

    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(one(body, http) for body in bodies))
    return {"statuses": dict(statuses), "tries": tries, "retry_after": sorted(map(str, retry_after)),
            "wall_s": round(time.perf_counter() - start, 2)}


def measure(store: Path, args, budget_mb: float, bodies: list[bytes], warm: bytes) -> dict:
    """Two bursts on one server: every client once (first half of `bodies`), then clients that retry (second
    half: other images, so none is answered from the cache)."""
    flags = ["--max-megapixels", str(args.megapixels), "--max-upload-mb", str(args.max_upload_mb),
             "--max-inflight-mb", str(budget_mb), "--cache-mb", "64"]
    process, url = start(store, *flags)
    try:
        assert httpx.post(url + "/v1/images", content=warm, timeout=300).status_code == 200
        result = {"budget_mib": budget_mb}
        for retry in (False, True):
            Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS now
            before, _ = rss_mib(process.pid)
            half = len(bodies) // 2
            answers = asyncio.run(burst(url, bodies[half:] if retry else bodies[:half], retry))
            _, peak = rss_mib(process.pid)
            answers.update(rss_before_mib=round(before, 1), peak_rss_mib=round(peak, 1),
                           growth_mib=round(peak - before, 1),
                           server_peak_charged_mib=round(httpx.get(url + "/healthz").json()["inflight"]["peak"]
                                                         / MiB, 1))
            result["with_retries" if retry else "once"] = answers
        return result
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--megapixels", type=float, default=4.0, help="the server's --max-megapixels")
    parser.add_argument("--budget-mb", type=float, default=256.0, help="the server's --max-inflight-mb")
    parser.add_argument("--max-upload-mb", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(Path(tmp) / "store")
        bodies = images(2 * args.clients + 1, args.megapixels, args.seed)
        warm, bodies = bodies[-1], bodies[:-1]
        report = {"clients": args.clients, "megapixels": args.megapixels,
                  "body_mib": round(sum(map(len, bodies)) / len(bodies) / MiB, 2),
                  "budgeted": measure(store, args, args.budget_mb, bodies, warm),
                  "unbounded": measure(store, args, 1 << 20, bodies, warm)}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.clients} concurrent uploads of {args.megapixels * 0.99:.2f} MP PNGs ({report['body_mib']} MiB "
          f"each) to samcl serve --max-megapixels {args.megapixels:g}, tiny SAM, 1 torch thread")
    for name in ("budgeted", "unbounded"):
        run = report[name]
        for how in ("once", "with_retries"):
            r = run[how]
            print(f"  {name:9s} budget {run['budget_mib']:>9,.0f} MiB  {how:12s}: answers {r['statuses']} "
                  f"({r['tries']} tries, {r['wall_s']} s), peak RSS {r['peak_rss_mib']:,.1f} MiB = warm "
                  f"{r['rss_before_mib']:,.1f} + {r['growth_mib']:,.1f} (charged at most "
                  f"{r['server_peak_charged_mib']:,.1f})")
    ratio = report["unbounded"]["once"]["growth_mib"] / max(report["budgeted"]["once"]["growth_mib"], 1e-9)
    print(f"  growth unbounded / budgeted: {ratio:.2f}x")


if __name__ == "__main__":
    main()
