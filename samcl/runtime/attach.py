"""Putting a graph runtime behind a set's engine: its graphs from the cache (exported on first use), sessions
opened once, the engine's backbone calls pointed at them."""

from __future__ import annotations

from . import graph_precision
from .backbone import GraphBackbone
from .export import cached_graphs


def attach(samcl, runtime: str, precision: str | None = None, threads: int | None = None) -> None:
    """Run `samcl`'s engine on graph `runtime` (its graphs from the cache, exported on first use)."""
    chosen = graph_precision(runtime, precision)
    folder = cached_graphs(samcl.backbone, samcl.aug_config, samcl.selector_block)
    graphs = GraphBackbone(samcl.backbone, folder, runtime, samcl.aug_config, samcl.selector_block, chosen, threads)
    samcl.engine.use_backbone(graphs, runtime)
