"""Peak memory of decoding one uploaded image, per file format: what `samcl.serve.budget.DECODE_BYTES_PER_PIXEL`
charges before a decode.

    python benchmarks/decode_memory.py                  # PNG, JPEG, WebP of 8 MP, one fresh process each
    python benchmarks/decode_memory.py --megapixels 36 --json

For each format a child process reads the file's bytes, resets its peak-RSS mark (/proc/self/clear_refs, so
VmHWM := VmRSS), decodes it as the server does (`samcl.serve.codec.open_image` then `load_image`: Pillow's
decode, EXIF transpose, the RGB array) and reports the growth of VmHWM over the pixel count. The images are a
synthetic photo scaled up with noise (so the encoders cannot collapse it), RGB, 8 bits.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("PNG", "JPEG", "WEBP")


def child(path: str, megapixels: float) -> None:
    sys.path.insert(0, str(ROOT))
    from samcl.serve import codec
    from samcl.serve.budget import return_large_buffers_to_the_system

    return_large_buffers_to_the_system()  # as the server runs
    data = Path(path).read_bytes()
    status = Path("/proc/self/status")

    def kib(field: str) -> int:
        line = next(x for x in status.read_text().splitlines() if x.startswith(field))
        return int(line.split()[1])

    Path("/proc/self/clear_refs").write_text("5")
    before = kib("VmRSS")
    image = codec.decode_image(data, int(megapixels * 2e6))
    growth = (kib("VmHWM") - before) * 1024
    pixels = image.shape[0] * image.shape[1]
    print(json.dumps({"pixels": pixels, "peak_growth_bytes": growth, "bytes_per_pixel": round(growth / pixels, 2)}))


def make(fmt: str, megapixels: float) -> bytes:
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    from samcl.data.synthetic import generate

    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = int(megapixels * 1e6) // width
    base = Image.fromarray(generate("polyps", 1, 0, "test")[0].image).resize((width, height))
    noisy = np.asarray(base).astype(np.int16) + np.random.default_rng(0).integers(-8, 9, (height, width, 3))
    out = io.BytesIO()
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(out, format=fmt, **({"quality": 90} if fmt != "PNG"
                                                                                     else {}))
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=8.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], float(args.child[1]))
    import tempfile

    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in FORMATS:
            path = Path(tmp) / f"image.{fmt.lower()}"
            path.write_bytes(make(fmt, args.megapixels))
            out = subprocess.run([sys.executable, __file__, "--child", str(path), str(args.megapixels)],
                                 capture_output=True, text=True, check=True, env={"OMP_NUM_THREADS": "1",
                                                                                  "PATH": "/usr/bin:/bin"})
            report[fmt] = {**json.loads(out.stdout), "file_bytes": path.stat().st_size}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for fmt, row in report.items():
        print(f"{fmt:5s} {row['pixels'] / 1e6:5.1f} MP ({row['file_bytes'] / 2**20:6.1f} MiB file): peak growth "
              f"{row['peak_growth_bytes'] / 2**20:7.1f} MiB = {row['bytes_per_pixel']:5.2f} B/px")


if __name__ == "__main__":
    main()
