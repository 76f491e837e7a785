import torch
from helpers import assert_mixed_batch_matches_single

from samcl.method import AugModule, AugModuleConfig, AugModuleSize, Injection, config_for, render_heat


def test_vit_b_sizes_follow_from_config():
    config = AugModuleConfig(dim=768, adapted_blocks=(7, 8, 9, 10, 11), neck_channels=256, rank=10)
    size = AugModuleSize.of(config)
    assert size.parameters == 61_524
    assert size.bytes == 246_096
    assert size.layernorm_parameters == 220
    assert size.parameters - size.layernorm_parameters == 61_304  # the paper's 0.233 MB count
    assert sum(p.numel() for p in AugModule(config).parameters()) == 61_524


def test_fresh_module_reproduces_base(tiny_backbone):
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, tiny_backbone.image_size, tiny_backbone.image_size)
    block = tiny_backbone.default_selector_block
    config = config_for(tiny_backbone.site)
    heat = render_heat(torch.tensor([[[9.0, 30.0]], [[50.0, 12.0]]]), None, None, tiny_backbone.grid,
                       tiny_backbone.patch_size, tiny_backbone.heat_config)
    with torch.no_grad():
        base = tiny_backbone.model.vision_encoder(pixels).last_hidden_state
        tokens = tiny_backbone.prefix(pixels, block)
        adapted = tiny_backbone.suffix(tokens, block + 1, Injection(config, AugModule(config).params(), heat))
    assert (adapted - base).abs().max() <= 1e-5


def test_trained_module_changes_output_and_stacking_matches_single(tiny_backbone):
    config = config_for(tiny_backbone.site)
    modules = []
    for seed in (1, 2):
        module = AugModule(config, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            for p in module.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)) * 0.1)
        modules.append(module)
    tokens, mixed, block = assert_mixed_batch_matches_single(tiny_backbone, config, [modules[0], None, modules[1]])
    with torch.no_grad():
        assert (mixed[0] - tiny_backbone.suffix(tokens[:1], block + 1)[0]).abs().max() > 1e-3
