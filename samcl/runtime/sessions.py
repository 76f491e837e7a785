"""Running an exported graph: ONNX Runtime or OpenVINO behind one call, `session.run(feeds) -> outputs`. Feeds
the graph has no input for are dropped (a module without prompt augmentation has no use for the heat, so its
suffix graph has no heat input).

Both are optional extras (`samcl[onnx]`, `samcl[openvino]`); a missing one is a `SamclError` naming the install.
Each session runs on the CPU with the thread count torch uses (`torch.get_num_threads()`), so `--threads` and
the tests' one-thread setting hold for every runtime.
"""

from __future__ import annotations

import os
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np

from ..errors import SamclError
from ..io.files import one_line
from . import EXTRAS


def missing(runtime: str, exc: ImportError) -> SamclError:
    problem = f"{exc.name or runtime} is not installed (pip install '{EXTRAS[runtime]}')"
    return SamclError(f"runtime {runtime!r}: {problem}", code="not_installed", field="runtime")


class OrtSession:
    """One ONNX Runtime session on the CPU (float32)."""

    def __init__(self, path: Path, threads: int, precision: str = "float32"):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise missing("onnxruntime", exc) from None
        if precision != "float32":
            raise SamclError(f"runtime 'onnxruntime' runs float32 only (precision {precision!r}: use 'float32', or "
                             "runtime 'openvino' / 'torch' for bfloat16)", code="unsupported", field="runtime")
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
    """OpenVINO on the CPU; `precision` sets its inference precision hint (f32 or bf16). OpenVINO runs a
    static-shape model markedly faster than the dynamic one (a ViT-B prefix graph at 256 px: 170 ms dynamic), but
    each static compile holds its own copy of the graph (about 20 MiB for SAM's decoder), so the shapes compiled
    are bounded whatever clients send (`ShapeCache`): at most `max_static` static models, and every other shape
    on one dynamic-shape model whose per-shape kernel cache is capped (`DYNAMIC_CACHE`). Padding prompts to a few
    fixed point counts is not an option: the decoder's padding points are tokens its attention reads, so each one
    added moves the masks (tests/test_graph_shapes.py measures it)."""

    def __init__(self, path: Path, threads: int, precision: str = "float32", max_static: int | None = None):
        try:
            import openvino as ov
        except ImportError as exc:
            raise missing("openvino", exc) from None
        self.core = ov.Core()
        self.model = self.core.read_model(str(path))
        self.config = {"INFERENCE_PRECISION_HINT": {"float32": "f32", "bfloat16": "bf16"}[precision],
                       "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        self.shapes = ShapeCache(self._compile_static, self._compile_dynamic,
                                 MAX_STATIC_SHAPES if max_static is None else max_static)
        self.inputs = {name for port in self.model.inputs for name in port.get_names()}

    def _compile_static(self, feeds: dict[str, np.ndarray]):
        model = self.model.clone()
        model.reshape({name: list(array.shape) for name, array in feeds.items()})
        compiled = self.core.compile_model(model, "CPU", self.config)
        return compiled, compiled.create_infer_request()

    def _compile_dynamic(self):
        compiled = self.core.compile_model(self.model, "CPU", {**self.config, "CPU_RUNTIME_CACHE_CAPACITY":
                                                               DYNAMIC_CACHE})
        return compiled, compiled.create_infer_request()

    @property
    def compiled_bytes(self) -> int:
        """What the compiled models hold, as measured (RSS growth) when each was compiled."""
        return self.shapes.bytes

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        feeds = {k: v for k, v in feeds.items() if k in self.inputs}
        compiled, request = self.shapes.get(feeds)
        results = request.infer(feeds, share_inputs=False)
        return [np.array(results[output]) for output in compiled.outputs]


#: Static-shape compiled models one OpenVINO graph keeps (batch sizes and point counts in use): every other shape
#: runs on the graph's one dynamic-shape model.
MAX_STATIC_SHAPES = 6
#: A shape runs this many times on the dynamic model before it takes the least recently used static slot (so a
#: client cycling through point counts costs no compile per request).
PROMOTE_AFTER = 3
#: Kernels per input shape OpenVINO's CPU plugin caches for the dynamic model (its default is 5,000).
DYNAMIC_CACHE = 16
#: What one graph's static models may hold together: the first compile's measured size sets how many fit (a
#: ViT-H prefix, over a GiB a copy, keeps one; SAM's decoder, about 20 MiB, keeps MAX_STATIC_SHAPES).
MAX_STATIC_BYTES = 1 << 30


class ShapeCache:
    """Compiled models per input shape, bounded: `max_static` static ones in least-recently-used order (fewer
    where the first compile's size times `max_static` exceeds `max_bytes`), and one dynamic model for every shape
    without a slot. A shape gets a slot at once while slots are free, else after
    `promote_after` runs on the dynamic model (the least recently used static one is dropped). The RSS growth
    of each compile is recorded (`bytes`), so what the graphs hold can be counted.

        cache = ShapeCache(compile_static, compile_dynamic, max_static=6)
        compiled = cache.get(feeds)        # feeds: input name -> array; the key is their shapes
    """

    def __init__(self, compile_static, compile_dynamic, max_static: int, promote_after: int = PROMOTE_AFTER,
                 max_bytes: int | None = None):
        self.compile_static, self.compile_dynamic = compile_static, compile_dynamic
        self.max_static, self.promote_after = max(int(max_static), 0), promote_after
        self.max_bytes = MAX_STATIC_BYTES if max_bytes is None else max_bytes
        self.static: OrderedDict[tuple, tuple[object, int]] = OrderedDict()
        self.dynamic: tuple[object, int] | None = None
        self.misses: Counter = Counter()
        self.compiles = 0

    @property
    def bytes(self) -> int:
        held = [cost for _, cost in self.static.values()]
        return sum(held) + (self.dynamic[1] if self.dynamic else 0)

    def get(self, feeds: dict[str, np.ndarray]):
        key = tuple((name, tuple(array.shape)) for name, array in feeds.items())
        if key in self.static:
            self.static.move_to_end(key)
            return self.static[key][0]
        if self.max_static and (len(self.static) < self.max_static or self._promoted(key)):
            while len(self.static) >= self.max_static:
                self.static.popitem(last=False)
            self.static[key] = _measured(lambda: self.compile_static(feeds))
            self.compiles += 1
            if self.compiles == 1 and self.static[key][1] > 0:  # the first size says how many fit the bytes
                self.max_static = max(1, min(self.max_static, self.max_bytes // self.static[key][1]))
            self.misses.pop(key, None)
            return self.static[key][0]
        if self.dynamic is None:
            self.dynamic = _measured(self.compile_dynamic)
            self.compiles += 1
        return self.dynamic[0]

    def _promoted(self, key: tuple) -> bool:
        if len(self.misses) >= 4 * max(self.max_static, 1) and key not in self.misses:
            self.misses.clear()  # the counts stay bounded too
        self.misses[key] += 1
        return self.misses[key] > self.promote_after


def _measured(compile_) -> tuple[object, int]:
    """compile_() and the process's RSS growth during it (what the compiled model holds, near enough)."""
    before = _rss()
    compiled = compile_()
    return compiled, max(_rss() - before, 0)


def _rss() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


SESSIONS = {"onnxruntime": OrtSession, "openvino": OpenVinoSession}


def open_session(runtime: str, path: Path, threads: int, precision: str = "float32"):
    """A session on graph `path`; a graph the runtime cannot load is one SamclError naming it."""
    try:
        return SESSIONS[runtime](path, threads, precision)
    except SamclError:
        raise
    except Exception as exc:  # (ONNX Runtime and OpenVINO raise their own types for an unreadable graph)
        raise SamclError(f"{path}: {runtime} cannot load this graph ({one_line(exc)}); delete the folder to have "
                         "it rebuilt") from None
