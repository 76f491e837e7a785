"""A graph runtime for a set's engine: its graphs from the cache (exported on first use) and sessions opened once,
as a backbone the engine calls (`SAMCL.set_runtime` puts it behind the engine)."""

from __future__ import annotations

from . import covered, graph_precision, resolve
from .backbone import GraphBackbone
from .export import cached_graphs


def set_runtime(samcl, runtime: str | None, precision: str | None = None) -> str:
    """`samcl.set_runtime(runtime, precision)`: the runtime now in use; SamclError for one that cannot run here."""
    return samcl.set_runtime(runtime, precision)


def resolved(runtime: str | None, device, backbone=None, aug_config=None) -> str:
    """`resolve` for a torch device (None: the default device); given the set's `backbone` and `aug_config`, auto
    is torch where the graphs do not cover the set (`samcl.runtime.covered`)."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if device is None else torch.device(device)
    graphs = backbone is None or covered(getattr(backbone, "family", "sam"), getattr(aug_config, "heat_mode", None))
    return resolve(runtime, str(device), graphs=graphs)


def graph_backbone(backbone, aug_config, selector_block: int, runtime: str, precision: str | None = None,
                   threads: int | None = None) -> GraphBackbone:
    """`backbone`'s encoder and decoder as graphs on `runtime` (from the cache, exported on first use).

    Arguments:
      backbone: the set's frozen backbone; aug_config, selector_block: the set's module config and selector block.
      runtime (str): "onnxruntime" or "openvino"; precision (str | None): as `graph_precision` takes it.
      threads (int | None): the sessions' threads (None: the runtime's default).

    Returns:
      (GraphBackbone): what `Engine.use_backbone` takes."""
    chosen = graph_precision(runtime, precision)
    folder = cached_graphs(backbone, aug_config, selector_block)
    return GraphBackbone(backbone, folder, runtime, aug_config, selector_block, chosen, threads)
