"""Meta SAM checkpoints load into transformers' SamModel and match Meta's own forward pass."""

from __future__ import annotations

import pytest
import torch
from meta_sam import build_meta_sam, load_meta_modeling
from transformers import SamModel

from samcl.backbone.meta import convert_meta_state_dict, read_checkpoint, sam_model_from_state_dict

# Small custom size: 16x16 patch grid, 6x6 windows (padded to 18x18), decoder shrunk too.
SMALL = dict(
    image_size=256,
    patch_size=16,
    encoder_embed_dim=96,
    encoder_depth=4,
    encoder_num_heads=4,
    encoder_global_attn_indexes=(1, 3),
    window_size=6,
    prompt_embed_dim=64,
    mask_in_chans=8,
    decoder_mlp_dim=128,
    iou_head_hidden_dim=32,
)
# Sizes of Meta's build_sam_vit_b / _l / _h (1024 px input, patch 16, 14x14 windows, 256-d decoder).
OFFICIAL = {
    name: dict(
        encoder_embed_dim=embed_dim,
        encoder_depth=depth,
        encoder_num_heads=heads,
        encoder_global_attn_indexes=global_blocks,
    )
    for name, embed_dim, depth, heads, global_blocks in [
        ("vit_b", 768, 12, 12, (2, 5, 8, 11)),
        ("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
        ("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
    ]
}
OFFICIAL_COMMON = dict(image_size=1024, patch_size=16, window_size=14)
TOLERANCE = 1e-4


def load_meta_checkpoint(path):
    """The library's path for a Meta SAM file below `load_backbone`: one read, then the key mapping."""
    return sam_model_from_state_dict(read_checkpoint(path), str(path))


def _randomized_meta_sam(seed: int, **sizes) -> torch.nn.Module:
    """Meta ``Sam`` with every parameter (rel_pos, pos_embed, norms included) drawn from seeded noise.

    Scales keep activations O(1): weight matrices/kernels ~ N(0, 1/fan_in), norm weights ~ 1 + N(0, 0.1^2),
    biases and ``pos_embed`` ~ N(0, 0.1^2), so no parameter is left at a constant that could hide a mapping bug.
    """
    torch.manual_seed(seed)
    sam = build_meta_sam(**sizes).eval()
    norm_types = (torch.nn.LayerNorm, load_meta_modeling().common.LayerNorm2d)
    norm_weights = {id(module.weight) for module in sam.modules() if isinstance(module, norm_types)}
    with torch.no_grad():
        for name, parameter in sam.named_parameters():
            noise = torch.randn(parameter.shape)
            if id(parameter) in norm_weights:
                parameter.copy_(1 + 0.1 * noise)
            elif parameter.ndim == 1 or name.endswith("pos_embed"):
                parameter.copy_(0.1 * noise)
            else:
                parameter.copy_(noise / parameter[0].numel() ** 0.5)
    return sam


def _prompt_cases(image_size: int) -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor | None, bool]]:
    """(name, points (1, n, 2), labels (1, n), box (1, 4) or None, multimask) in input-frame pixels."""
    points = torch.tensor([[[0.3, 0.4], [0.7, 0.6], [0.5, 0.2]]]) * image_size
    labels = torch.tensor([[1, 0, 1]])  # one negative point
    box = torch.tensor([[0.2, 0.25, 0.8, 0.9]]) * image_size
    return [
        ("points", points, labels, None, True),
        ("points+box", points, labels, box, False),
        ("points+box multimask", points, labels, box, True),
    ]


def _assert_parity(tmp_path, seed: int, sizes: dict) -> None:
    """Save a randomized Meta SAM as .pth, load it via load_meta_checkpoint and compare forwards."""
    sam = _randomized_meta_sam(seed, **sizes)
    path = tmp_path / "sam_random.pth"
    torch.save(sam.state_dict(), path)
    hf = load_meta_checkpoint(path)
    assert isinstance(hf, SamModel) and not hf.training

    image_size = sizes["image_size"]
    raw_image = torch.rand(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed)) * 255
    with torch.no_grad():
        pixels = sam.preprocess(raw_image)  # (1, 3, H, W) normalized, as Meta's predictor feeds it
        meta_embeddings = sam.image_encoder(pixels)  # (1, C, H / patch, W / patch)
        hf_embeddings = hf.get_image_embeddings(pixels)
        assert (hf_embeddings - meta_embeddings).abs().max() <= TOLERANCE

        for name, points, labels, box, multimask in _prompt_cases(image_size):
            sparse, dense = sam.prompt_encoder(points=(points, labels), boxes=box, masks=None)
            meta_masks, meta_iou = sam.mask_decoder(
                image_embeddings=meta_embeddings,
                image_pe=sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
            )  # (1, K, 4 H / patch, 4 W / patch), (1, K)
            hf_out = hf(
                image_embeddings=hf_embeddings,
                input_points=points[:, None],  # (B, point_batch, n, 2)
                input_labels=labels[:, None],  # (B, point_batch, n)
                input_boxes=None if box is None else box[:, None],  # (B, n_boxes, 4)
                multimask_output=multimask,
            )
            hf_masks, hf_iou = hf_out.pred_masks[:, 0], hf_out.iou_scores[:, 0]
            assert hf_masks.shape == meta_masks.shape, name
            assert (hf_masks - meta_masks).abs().max() <= TOLERANCE, name
            assert (hf_iou - meta_iou).abs().max() <= TOLERANCE, name


def test_official_key_mapping_on_meta_layout():
    state_dict = build_meta_sam(**SMALL).state_dict()
    config, converted = convert_meta_state_dict(state_dict)

    vision = config.vision_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (96, 4, 4)
    assert (vision.image_size, vision.patch_size, vision.window_size) == (256, 16, 6)
    assert list(vision.global_attn_indexes) == [1, 3]
    assert (config.mask_decoder_config.hidden_size, config.mask_decoder_config.mlp_dim) == (64, 128)
    expected = SamModel(config).state_dict()
    assert converted.keys() == expected.keys()
    assert all(converted[key].shape == tensor.shape for key, tensor in expected.items())
    pe = state_dict["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    assert converted["shared_image_embedding.positional_embedding"] is pe
    assert converted["prompt_encoder.shared_embedding.positional_embedding"] is pe


@pytest.mark.parametrize("variant", sorted(OFFICIAL))
def test_official_variant_sizes_are_inferred(variant):
    sizes = OFFICIAL[variant]
    with torch.device("meta"):  # shapes only, no memory
        state_dict = build_meta_sam(**OFFICIAL_COMMON, **sizes).state_dict()
    vision = convert_meta_state_dict(state_dict)[0].vision_config
    assert vision.hidden_size == sizes["encoder_embed_dim"]
    assert vision.num_hidden_layers == sizes["encoder_depth"]
    assert vision.num_attention_heads == sizes["encoder_num_heads"]
    assert tuple(vision.global_attn_indexes) == sizes["encoder_global_attn_indexes"]
    assert (vision.image_size, vision.patch_size, vision.window_size) == (1024, 16, 14)
    assert vision.mlp_dim == 4 * sizes["encoder_embed_dim"]
    assert vision.initializer_range == 0.02


def test_parity_with_meta_small(tmp_path):
    _assert_parity(tmp_path, seed=0, sizes=SMALL)


@pytest.mark.slow  # a ViT-B through Meta's code and ours: about two minutes on 2 cores
def test_parity_with_meta_vit_b(tmp_path):
    _assert_parity(tmp_path, seed=1, sizes={**OFFICIAL_COMMON, **OFFICIAL["vit_b"]})


def test_wrapped_state_dict_loads(tmp_path):
    path = tmp_path / "wrapped.pt"
    torch.save({"model": build_meta_sam(**SMALL).state_dict(), "epoch": 3}, path)
    assert isinstance(load_meta_checkpoint(path), SamModel)


def test_unknown_and_missing_keys_are_named():
    state_dict = dict(build_meta_sam(**SMALL).state_dict())
    state_dict["image_encoder.blocks.0.attn.extra"] = torch.zeros(1)
    del state_dict["mask_decoder.iou_prediction_head.layers.1.bias"]
    with pytest.raises(ValueError, match=r"unknown keys: image_encoder\.blocks\.0\.attn\.extra") as error:
        convert_meta_state_dict(state_dict)
    assert "missing keys: mask_decoder.iou_prediction_head.layers.1.bias" in str(error.value)


class _NotATensor:
    """An arbitrary object that ``torch.load(weights_only=True)`` refuses to unpickle."""


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda path: torch.save({"weight": torch.zeros(2)}, path), "not a Segment Anything checkpoint"),
        (lambda path: torch.save({"model": _NotATensor()}, path), "weights_only=True"),
        (lambda path: None, "cannot read file"),
    ],
    ids=["non-sam-dict", "arbitrary-object", "missing-file"],
)
def test_bad_files_raise_value_error_naming_the_file(tmp_path, write, message):
    path = tmp_path / "bad.pth"
    write(path)
    with pytest.raises(ValueError, match=message) as error:
        load_meta_checkpoint(path)
    assert str(error.value).startswith(f"{path}: ")


def test_truncated_file_raises_value_error_naming_the_file(tmp_path):
    path = tmp_path / "truncated.pth"
    torch.save(build_meta_sam(**SMALL).state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or corrupt") as error:
        load_meta_checkpoint(path)
    assert str(error.value).startswith(f"{path}: ")
