"""A backbone whose prefix, suffix and decoder are exported graphs: what the engine runs with `--runtime
onnxruntime` or `openvino`. It offers the calls `samcl.inference.engine` makes of a torch backbone (same shapes, torch
tensors in and out), so the engine's data path, selection, batching and the predictor's re-runs are the same
code for every runtime; only the three graph calls run elsewhere.

    graphs = GraphBackbone(torch_backbone, folder, "onnxruntime", module_config)   # folder: `export_graphs`'s
    tokens = graphs.prefix(pixels, stop_block)          # the prefix graph (stop_block must be the exported one)
    embeddings = graphs.suffix(tokens, start, injection)  # module rows and heat from the engine's Injection
    low_res, iou = graphs.decode(embeddings, points, labels, boxes, multimask_output)

Preprocessing, the heat, pooling for the selector and the selector itself stay the torch backbone's (CPU, small),
so routing reads the same features whichever runtime encodes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..method.augmodule import AugModuleConfig, parameter_shapes
from .graphs import row_input
from .sessions import open_session


class GraphBackbone:
    """The torch backbone's preprocessing and geometry, with the encoder and decoder run as graphs."""

    def __init__(self, backbone, folder: Path, runtime: str, config: AugModuleConfig, stop_block: int,
                 precision: str = "float32", threads: int | None = None):
        self.torch_backbone, self.runtime, self.config = backbone, runtime, config
        self.stop_block, self.precision = stop_block, precision
        threads = threads or torch.get_num_threads()
        folder = Path(folder)
        # the decoder runs in float32 at every precision, as torch's bfloat16 path keeps it (a small share of the
        # time; the logits keep their precision)
        self.sessions = {name: open_session(runtime, folder / f"{name}.onnx", threads,
                                            "float32" if name.startswith("decoder") else precision)
                         for name in ("prefix", "suffix", "decoder_low")}
        self.shapes = parameter_shapes(config)

    # ----------------------------------------------------------------- what stays the torch backbone's
    def __getattr__(self, name):
        """Geometry, preprocessing, heat, pooling, sizes: the torch backbone's own (`grid`, `site`, `preprocess`,
        `heat`, `pool_stats`, `image_size`, ...)."""
        if name in ("torch_backbone", "__setstate__"):
            raise AttributeError(name)
        return getattr(self.torch_backbone, name)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def encoder_dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def compiled(self) -> dict:
        """What the graph runtime has compiled: shapes per graph and the bytes they hold (OpenVINO compiles per
        shape, bounded by `sessions.ShapeCache`; ONNX Runtime holds one session per graph: nothing counted)."""
        shapes = {name: len(s.shapes.static) + (s.shapes.dynamic is not None)
                  for name, s in self.sessions.items() if hasattr(s, "shapes")}
        return {"shapes": shapes, "bytes": sum(getattr(s, "compiled_bytes", 0) for s in self.sessions.values())}

    # ----------------------------------------------------------------- the graphs
    def prefix(self, pixel_values: torch.Tensor, stop_block: int) -> torch.Tensor:
        if stop_block != self.stop_block:
            raise ValueError(f"the prefix graph stops after block {self.stop_block}, not {stop_block}")
        tokens, _ = self.sessions["prefix"].run({"pixels": _array(pixel_values)})
        return torch.from_numpy(tokens)

    def suffix(self, tokens: torch.Tensor, start_block: int, adapter=None) -> torch.Tensor:
        """adapter: the engine's `Injection` (its grouped rows, G = 1 or B, and its heat) or None (the base: zero
        rows, no heat)."""
        if start_block != self.stop_block + 1:
            raise ValueError(f"the suffix graph starts at block {self.stop_block + 1}, not {start_block}")
        batch = tokens.shape[0]
        feeds = {"tokens": _array(tokens)}
        if adapter is None:
            feeds["heat"] = np.zeros((batch, *self.torch_backbone.grid), np.float32)
            feeds.update({row_input(name): np.zeros((batch, *shape), np.float32)
                          for name, shape in self.shapes.items()})
        else:
            feeds["heat"] = _array(adapter.heat)
            feeds.update({row_input(name): _array(adapter.params[name].expand(batch, *shape))
                          for name, shape in self.shapes.items()})
        (embeddings,) = self.sessions["suffix"].run(feeds)
        return torch.from_numpy(embeddings)

    def decode(self, embeddings: torch.Tensor, points: torch.Tensor | None = None,
               labels: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
               multimask_output: bool = False, *, mask_input: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """As `SamBackbone.decode` (model-input pixels; one prompt per image; `mask_input` B x 1 x 4h x 4w or
        None): the decoder graph's four masks, the first (single) or the last three (multimask), as Meta's and
        transformers' decoders select them."""
        coords, codes = meta_prompt(embeddings.shape[0], points, labels, boxes)
        low = 4 * embeddings.shape[-1]
        masks = (np.zeros((embeddings.shape[0], 1, low, low), np.float32) if mask_input is None
                 else _array(mask_input.float()))
        feeds = {"image_embeddings": _array(embeddings), "point_coords": coords, "point_labels": codes,
                 "mask_input": masks, "has_mask_input": np.full(1, float(mask_input is not None), np.float32)}
        iou, low_res = self.sessions["decoder_low"].run(feeds)  # Meta's decoder less its resizing
        pick = slice(1, None) if multimask_output else slice(0, 1)
        return torch.from_numpy(low_res[:, pick].copy()), torch.from_numpy(iou[:, pick].copy())


def meta_prompt(batch: int, points: torch.Tensor | None, labels: torch.Tensor | None,
                boxes: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
    """Points (B x N x 2, labels B x N) and a box (B x 4) in model-input pixels -> Meta's `point_coords`,
    `point_labels`: the points, then the box's corners labelled 2 and 3, or a padding point (label -1) where no
    box is given (as Meta's and transformers' prompt encoders pad)."""
    parts, codes = [], []
    if points is not None:
        parts.append(_array(points).reshape(batch, -1, 2))
        codes.append(np.ones(parts[0].shape[:2], np.float32) if labels is None else _array(labels).reshape(batch, -1))
    if boxes is not None:
        parts.append(_array(boxes).reshape(batch, 2, 2))
        codes.append(np.tile(np.array([[2.0, 3.0]], np.float32), (batch, 1)))
    else:
        parts.append(np.zeros((batch, 1, 2), np.float32))
        codes.append(-np.ones((batch, 1), np.float32))
    return np.concatenate(parts, axis=1), np.concatenate(codes, axis=1).astype(np.float32)


def _array(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().to("cpu", torch.float32).numpy())
