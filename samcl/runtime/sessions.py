"""Running an exported graph: ONNX Runtime or OpenVINO behind one call, `session.run(feeds) -> outputs`. Feeds
the graph has no input for are dropped (a module without prompt augmentation has no use for the heat, so its
suffix graph has no heat input).

Both are optional extras (`samcl[onnx]`, `samcl[openvino]`); a missing one is a `SamclError` naming the install.
Each session runs on the CPU with the thread count torch uses (`torch.get_num_threads()`), so `--threads` and
the tests' one-thread setting hold for every runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SamclError
from . import EXTRAS


def missing(runtime: str, exc: ImportError) -> SamclError:
    problem = f"{exc.name or runtime} is not installed (pip install '{EXTRAS[runtime]}')"
    return SamclError(f"runtime {runtime!r}: {problem}", cli=f"--runtime {runtime}: {problem}")


class OrtSession:
    """One ONNX Runtime session on the CPU (float32)."""

    def __init__(self, path: Path, threads: int, precision: str = "float32"):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise missing("onnxruntime", exc) from None
        if precision != "float32":
            raise SamclError(f"runtime 'onnxruntime' runs float32 only (precision {precision!r}: use 'float32', or "
                             "runtime 'openvino' / 'torch' for bfloat16)",
                             cli=f"--runtime onnxruntime runs float32 only (--precision {precision}: use --precision "
                                 "float32, or --runtime openvino / torch for bfloat16)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initialisers are not the user's business
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.inputs = {i.name for i in self.session.get_inputs()}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.outputs, {k: v for k, v in feeds.items() if k in self.inputs})


class OpenVinoSession:
    """OpenVINO on the CPU; `precision` sets its inference precision hint (f32 or bf16). The graph is compiled
    for the concrete input shapes of each call (batch size, point count) on first use and kept: OpenVINO runs a
    static-shape model markedly faster than the dynamic one (a ViT-B prefix graph at 256 px: 170 ms dynamic)."""

    def __init__(self, path: Path, threads: int, precision: str = "float32"):
        try:
            import openvino as ov
        except ImportError as exc:
            raise missing("openvino", exc) from None
        self.core = ov.Core()
        self.model = self.core.read_model(str(path))
        self.config = {"INFERENCE_PRECISION_HINT": {"float32": "f32", "bfloat16": "bf16"}[precision],
                       "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        self.compiled: dict[tuple, object] = {}
        self.inputs = {name for port in self.model.inputs for name in port.get_names()}

    def _compiled(self, feeds: dict[str, np.ndarray]):
        key = tuple((name, array.shape) for name, array in feeds.items())
        if key not in self.compiled:
            model = self.model.clone()
            model.reshape({name: list(array.shape) for name, array in feeds.items()})
            compiled = self.core.compile_model(model, "CPU", self.config)
            self.compiled[key] = (compiled, compiled.create_infer_request())
        return self.compiled[key]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        feeds = {k: v for k, v in feeds.items() if k in self.inputs}
        compiled, request = self._compiled(feeds)
        results = request.infer(feeds, share_inputs=False)
        return [np.array(results[output]) for output in compiled.outputs]


SESSIONS = {"onnxruntime": OrtSession, "openvino": OpenVinoSession}


def open_session(runtime: str, path: Path, threads: int, precision: str = "float32"):
    return SESSIONS[runtime](path, threads, precision)
