"""The README's torch-free script runs as written in a fresh venv holding only numpy, Pillow and onnxruntime (from
the package registry; the test skips where it cannot be reached), and writes samcl's own mask."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import toy_samples
from PIL import Image

from samcl import SAMCL, Prompt, SelectorConfig, TrainConfig, load_backbone
from samcl.runtime import export_store

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
#: The venv's environment: no PYTHONPATH (it would make a samcl checkout importable there).
CLEAN = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def torch_free_script() -> str:
    (script,) = re.findall(r"```py\n(.*?)```", README, flags=re.S)
    return script


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """python -m venv (no system site-packages: torch, transformers and samcl are not importable there)."""
    folder = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "numpy", "pillow", "onnxruntime"],
                          capture_output=True, text=True, timeout=300, env=CLEAN)
    if done.returncode != 0:
        pytest.skip(f"pip could not install numpy, pillow, onnxruntime: {done.stderr.strip()[-300:]}")
    for absent in ("torch", "transformers", "samcl", "safetensors"):
        assert subprocess.run([str(python), "-c", f"import {absent}"], capture_output=True, env=CLEAN,
                              cwd=folder).returncode != 0, absent
    return python


def test_readme_torch_free_script_writes_samcls_mask(venv, tmp_path):
    samcl = SAMCL.create(load_backbone("builtin:tiny-sam"), tmp_path / "set", device="cpu",
                         selector=SelectorConfig(samples_per_domain=4, epochs=20))
    samcl.learn("blue", toy_samples(4, (30, 30, 200), 1), TrainConfig(epochs=1, batch_size=2, progress=False))
    export_store(samcl, tmp_path / "export")
    (tmp_path / "segment_onnx.py").write_text(torch_free_script())
    for domain, seed in (("blue", 5), ("base", 6)):
        sample = toy_samples(1, (30, 30, 200), seed)[0]
        Image.fromarray(sample.image).save(tmp_path / "photo.png")
        x, y = sample.points[0]
        done = subprocess.run([str(venv), "segment_onnx.py", "export", "photo.png", f"{x:g}", f"{y:g}", domain,
                               "mask.png"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=CLEAN)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.startswith(f"mask.png: {domain}, predicted IoU")
        theirs = np.asarray(Image.open(tmp_path / "mask.png")) > 127
        ours = samcl.segment([sample.image], [Prompt.of([[x, y]])], force=domain)[0].masks[0]
        assert theirs.shape == ours.shape and ours.any()
    height, width = sample.image.shape[:2]
    for argv, message in ((["1", "1", "nope"], "unknown domain 'nope'; this export has base, blue"),
                          ([str(width), "1", "blue"], f"point ({width}, 1) is outside the {width}x{height} image")):
        done = subprocess.run([str(venv), "segment_onnx.py", "export", "photo.png", *argv, "mask.png"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300, env=CLEAN)
        assert done.returncode == 1 and done.stderr.strip() == f"segment_onnx.py: {message}", done.stderr[-2000:]
        assert (theirs == ours).mean() > 0.999
