"""Putting a graph runtime behind a set's engine: its graphs from the cache (exported on first use), sessions
opened once, the engine's backbone calls pointed at them."""

from __future__ import annotations

from . import graph_precision, resolve
from .backbone import GraphBackbone
from .export import cached_graphs


def set_runtime(samcl, runtime: str | None, precision: str | None = None) -> str:
    """`SAMCL.set_runtime`: run `samcl`'s engine on `runtime` ("auto" resolved here) at `precision`; torch puts
    the set's own backbone back. Returns the runtime now in use; SamclError for one that cannot run here."""
    chosen = resolved(runtime, samcl.device)
    if chosen == "torch":
        if samcl.engine.runtime != "torch":
            samcl.engine.use_backbone(samcl.backbone, "torch")
        return chosen
    attach(samcl, chosen, precision)
    return chosen


def resolved(runtime: str | None, device) -> str:
    """`resolve` for a torch device (None: the default device)."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if device is None else torch.device(device)
    return resolve(runtime, str(device))


def attach(samcl, runtime: str, precision: str | None = None, threads: int | None = None) -> None:
    """Run `samcl`'s engine on graph `runtime` (its graphs from the cache, exported on first use)."""
    chosen = graph_precision(runtime, precision)
    folder = cached_graphs(samcl.backbone, samcl.aug_config, samcl.selector_block)
    graphs = GraphBackbone(samcl.backbone, folder, runtime, samcl.aug_config, samcl.selector_block, chosen, threads)
    samcl.engine.use_backbone(graphs, runtime)
