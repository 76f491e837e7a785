"""A check both backbones' tests run: a point's heat reaches exactly the token under the point."""

from __future__ import annotations

import torch

from samcl.method import Injection


def assert_heat_lands_on_its_token(backbone, config, module, heat, token: tuple[int, int]) -> None:
    """Each adapted block run with the point's heat vs with none (same module) changes exactly `token` (row, col):
    in windowed blocks (padded windows included) and in global ones."""
    with_point = Injection(config, module.params(), heat)
    without = Injection(config, module.params(), torch.zeros_like(heat))
    tokens = torch.randn(1, *backbone.grid, backbone.hidden_size, generator=torch.Generator().manual_seed(2))
    for block in config.adapted_blocks:
        with torch.no_grad():
            a = backbone.run_block(block, tokens, with_point)
            b = backbone.run_block(block, tokens, without)
        changed = ((a - b).abs().amax(-1)[0] > 1e-6).nonzero().tolist()
        assert changed == [list(token)], (block, changed)
