"""Runtimes and export: which code runs the encoder and decoder behind the engine, and the ONNX graphs.

    torch        the backbone's own modules (any device, float32 or bfloat16)
    onnxruntime  the exported graphs on ONNX Runtime (CPU, float32)               pip install 'samcl[onnx]'
    openvino     the exported graphs on OpenVINO (CPU, f32 or bf16 precision hint)  pip install 'samcl[openvino]'
    auto         what `benchmarks/latency_runtimes.py` measured fastest on this kind of machine (`AUTO_ORDER`)

The engine's data path (prefix, selection, suffix with per-sample module rows, decode) is the same for every
runtime: a graph runtime replaces only the backbone's three calls (`samcl.runtime.backbone.GraphBackbone`).
Graphs are exported once per base and settings and cached (`samcl.runtime.export.cached_graphs`). Routing and the
store never depend on the runtime. This module imports no torch (the CLI's `--help` and `samcl info` read it).
"""

from __future__ import annotations

import importlib.util

from .._lazy import lazy_names
from ..errors import SamclError

RUNTIMES = ("torch", "onnxruntime", "openvino")
CHOICES = ("auto", *RUNTIMES)
#: The Python module each graph runtime needs, and the extra that installs it.
MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
EXTRAS = {"onnxruntime": "samcl[onnx]", "openvino": "samcl[openvino]"}
#: What auto picks on a CPU, fastest first, among the installed runtimes (benchmarks/latency_runtimes.py, one
#: thread, ViT-B: OpenVINO's bf16 encoder beats torch's bfloat16, which beats ONNX Runtime's float32).
AUTO_ORDER = ("openvino", "torch")


__all__ = ["AUTO_ORDER", "CHOICES", "EXTRAS", "MODULES", "RUNTIMES", "covered", "describe_auto", "export_store",
           "graph_precision", "installed", "resolve", "set_runtime"]
#: The names that need torch, loaded on first use.
__getattr__, __dir__ = lazy_names(__name__, {"export_store": ".export", "set_runtime": ".attach"})

def installed(runtime: str) -> bool:
    """Is the runtime's package importable here (torch always is)?"""
    return runtime == "torch" or importlib.util.find_spec(MODULES[runtime]) is not None


def covered(family: str, heat_mode: str | None = None) -> bool:
    """Can a set on a base of `family` whose modules have `heat_mode` run as graphs? SAM (ViT) bases with samcl's
    own modules only (`samcl.runtime.export.refuse_unsupported` says why not for the others)."""
    return family == "sam" and heat_mode != "reference"


def resolve(name: str | None, device: str | None = None, *, graphs: bool = True) -> str:
    """A runtime name, or "auto"/None -> the runtime to use. Graph runtimes run on the CPU only; auto picks torch
    on any other device and for a set the graphs do not cover (`graphs` False: see `covered`), else the first
    installed of `AUTO_ORDER`. A graph runtime that is not installed, or asked for on a GPU, is a SamclError
    naming the fix."""
    on_cpu = device is None or str(device) == "cpu"
    if name in (None, "auto"):
        if not on_cpu or not graphs:
            return "torch"
        return next(r for r in AUTO_ORDER if installed(r))
    if name not in RUNTIMES:
        raise SamclError(f"runtime {name!r}: expected one of {', '.join(CHOICES)}", field="runtime")
    if name != "torch" and not installed(name):
        missing = f"{MODULES[name]} is not installed (pip install '{EXTRAS[name]}')"
        raise SamclError(f"runtime {name!r}: {missing}", code="not_installed", field="runtime")
    if name != "torch" and not on_cpu:
        raise SamclError(f"runtime {name!r} runs on the CPU: use device 'cpu', or runtime 'torch' on {device}",
                         code="unsupported", field="runtime")
    return name


def describe_auto(device: str | None = None) -> str:
    """One line for `--help` and `samcl info`: what auto picks here, and why."""
    have = [r for r in RUNTIMES if installed(r)]
    return (f"auto: the fastest installed on a CPU ({' > '.join(AUTO_ORDER)}), torch on a GPU and for SAM 2, SAM 3 "
            f"and imported sets (no graphs); installed here: {', '.join(have)}")


def graph_precision(runtime: str, precision: str | None, device: str | None = None) -> str:
    """The precision a graph runtime runs at: ONNX Runtime float32 only; OpenVINO's hint from `precision` (auto:
    as torch's auto, bfloat16 on a CPU with native bfloat16)."""
    from ..inference.precision import resolve as resolve_precision

    if runtime == "onnxruntime":
        if precision == "bfloat16":
            raise SamclError("runtime 'onnxruntime' runs float32 only: use precision 'float32' (or 'auto'), or "
                             "runtime 'openvino' / 'torch' for bfloat16", code="unsupported", field="runtime")
        return "float32"
    return resolve_precision(precision, device or "cpu")
