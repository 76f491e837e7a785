"""Import Meta's SAM 2 / SAM 2.1 checkpoints with their video memory into transformers' ``Sam2VideoModel``.

The image parts are renamed as `sam2_meta` does for ``Sam2Model`` (the same pairs, the same checks); the parts
that image prediction drops (`sam2_meta.VIDEO_ONLY`: memory attention, memory encoder, object pointers, temporal
encodings) are renamed here to ``Sam2VideoModel``'s names. The names were checked against Meta's
``SAM2VideoPredictor`` (tests/test_video.py builds one from Meta's modules and maps its state dict onto
``Sam2VideoModel`` key for key, shape for shape).

Memory sizes come from the weights (memory width, number of memories, layers, feed-forward and fuser widths,
kernel sizes); what no weight says is fixed by Meta's configs for every official variant (one attention head in
the memory attention, the mask downsampler's stride 2 / kernel 3 / total stride 16, the RoPE grid = the image
embedding's grid).
"""

from __future__ import annotations

from transformers import Sam2Config, Sam2VideoConfig, Sam2VideoModel

from .meta import _indices, _rename, _require, check_converted
from .sam2_meta import VIDEO_ONLY, _mlp, convert_sam2_state_dict

# Fixed by Meta's configs/sam2.1/*.yaml for every variant (not recoverable from shapes).
_MEMORY_ATTENTION_HEADS = 1
_MASK_DOWNSAMPLER = dict(mask_downsampler_kernel_size=3, mask_downsampler_stride=2, mask_downsampler_padding=1,
                         mask_downsampler_total_stride=16)


def video_key_pairs(mask_downsampler_layers: int) -> list[tuple[str, str]]:
    """(Meta prefix, Sam2VideoModel prefix) renames of the video-only parts (first match wins; ``{n}`` any index).
    Meta's mask downsampler is one ``nn.Sequential`` (conv, norm, GELU per layer, then a 1 x 1 conv);
    transformers names each layer."""
    memory, layers = "memory_attention.", "memory_attention.layers.{n}."
    downsampler, hf_downsampler = "memory_encoder.mask_downsampler.encoder.", "memory_encoder.mask_downsampler."
    pairs = [
        ("maskmem_tpos_enc", "memory_temporal_positional_encoding"),
        ("no_mem_pos_enc", "no_memory_positional_encoding"),
        ("no_obj_ptr", "no_object_pointer"),
        ("no_obj_embed_spatial", "occlusion_spatial_embedding_parameter"),
        ("mask_downsample.", "mask_downsample."),
        (f"{layers}self_attn.out_proj.", f"{layers}self_attn.o_proj."),
        (f"{layers}cross_attn_image.out_proj.", f"{layers}cross_attn_image.o_proj."),
        *[(f"{layers}norm{i}.", f"{layers}layer_norm{i}.") for i in (1, 2, 3)],
        (layers, layers),
        (f"{memory}norm.", f"{memory}layer_norm."),
        *[(f"{downsampler}{3 * i}.", f"{hf_downsampler}layers.{i}.conv.") for i in range(mask_downsampler_layers)],
        *[(f"{downsampler}{3 * i + 1}.", f"{hf_downsampler}layers.{i}.layer_norm.")
          for i in range(mask_downsampler_layers)],
        (f"{downsampler}{3 * mask_downsampler_layers}.", f"{hf_downsampler}final_conv."),
        ("memory_encoder.pix_feat_proj.", "memory_encoder.feature_projection."),
        ("memory_encoder.fuser.layers.{n}.gamma", "memory_encoder.memory_fuser.layers.{n}.scale"),
        ("memory_encoder.fuser.layers.{n}.dwconv.", "memory_encoder.memory_fuser.layers.{n}.depthwise_conv."),
        ("memory_encoder.fuser.layers.{n}.norm.", "memory_encoder.memory_fuser.layers.{n}.layer_norm."),
        ("memory_encoder.fuser.layers.{n}.pwconv1.", "memory_encoder.memory_fuser.layers.{n}.pointwise_conv1."),
        ("memory_encoder.fuser.layers.{n}.pwconv2.", "memory_encoder.memory_fuser.layers.{n}.pointwise_conv2."),
        ("memory_encoder.out_proj.", "memory_encoder.projection."),
        ("obj_ptr_tpos_proj.", "temporal_positional_encoding_projection_layer."),
    ]
    return pairs


def _downsampler_layers(state_dict) -> int:
    """Conv layers of Meta's mask downsampler before its final 1 x 1 conv (every third Sequential index)."""
    indices = _indices(state_dict, "memory_encoder.mask_downsampler.encoder.")
    return (len(indices) - 1) // 3


def infer_sam2_video_config(state_dict, image_config: Sam2Config) -> Sam2VideoConfig:
    """The memory sizes from shapes (see the module doc), around the image model's config."""
    tpos = _require(state_dict, "maskmem_tpos_enc")
    vision = image_config.vision_config
    grid = [int(size) for size in vision.backbone_feature_sizes[-1]]
    fuser = _require(state_dict, "memory_encoder.fuser.layers.0.dwconv.weight")
    downsampler = _downsampler_layers(state_dict)
    final = _require(state_dict, f"memory_encoder.mask_downsampler.encoder.{3 * downsampler}.weight")
    return Sam2VideoConfig(
        vision_config=vision.to_dict(), prompt_encoder_config=image_config.prompt_encoder_config.to_dict(),
        mask_decoder_config=image_config.mask_decoder_config.to_dict(),
        image_size=int(image_config.prompt_encoder_config.image_size),
        num_maskmem=tpos.shape[0], memory_encoder_output_channels=tpos.shape[-1],
        memory_attention_hidden_size=_require(state_dict, "memory_attention.norm.weight").shape[0],
        memory_attention_num_layers=len(_indices(state_dict, "memory_attention.layers.")),
        memory_attention_num_attention_heads=_MEMORY_ATTENTION_HEADS,
        memory_attention_feed_forward_hidden_size=_require(
            state_dict, "memory_attention.layers.0.linear1.weight").shape[0],
        memory_attention_rope_feat_sizes=grid,
        memory_encoder_hidden_size=_require(state_dict, "memory_encoder.pix_feat_proj.weight").shape[0],
        mask_downsampler_embed_dim=final.shape[0], memory_fuser_embed_dim=fuser.shape[0],
        memory_fuser_num_layers=len(_indices(state_dict, "memory_encoder.fuser.layers.")),
        memory_fuser_kernel_size=fuser.shape[-1], memory_fuser_padding=fuser.shape[-1] // 2,
        memory_fuser_intermediate_dim=_require(state_dict, "memory_encoder.fuser.layers.0.pwconv1.weight").shape[0],
        enable_occlusion_spatial_embedding="no_obj_embed_spatial" in state_dict,
        enable_temporal_pos_encoding_for_object_pointers="obj_ptr_tpos_proj.weight" in state_dict,
        **_MASK_DOWNSAMPLER,
    )


def convert_sam2_video_state_dict(state_dict, **overrides) -> tuple[Sam2Config, Sam2VideoConfig, dict]:
    """Meta SAM 2 state dict (with its memory) -> (the image ``Sam2Config``, ``Sam2VideoConfig``,
    ``Sam2VideoModel`` state dict). The image parts go through `convert_sam2_state_dict` unchanged; tensors are
    shared, not copied. Raises ``ValueError`` naming unknown, missing or mis-shaped keys (Meta's names)."""
    image_config, converted = convert_sam2_state_dict(state_dict, **overrides)
    video = {k: v for k, v in state_dict.items() if k.startswith(VIDEO_ONLY)}
    if not video:
        raise ValueError("no video memory weights (memory_attention.*, memory_encoder.*): an image-only SAM 2 "
                         "checkpoint cannot track")
    config = infer_sam2_video_config(state_dict, image_config)
    pointer_depth = len(_indices(state_dict, "obj_ptr_proj.layers."))
    pairs = [*video_key_pairs(_downsampler_layers(state_dict)),
             *_mlp("obj_ptr_proj", "object_pointer_proj", pointer_depth)]
    converted = {**converted, **{_rename(k, pairs): v for k, v in video.items()}}
    check_converted(Sam2VideoModel, config, video, converted, pairs)
    return image_config, config, converted


def sam2_video_model_from_state_dict(state_dict, source: str, **overrides) -> tuple[Sam2Config, Sam2VideoModel]:
    """A Meta SAM 2 state dict read from `source` (named in errors) -> (image config, eval-mode Sam2VideoModel)."""
    try:
        image_config, config, converted = convert_sam2_video_state_dict(state_dict, **overrides)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    model = Sam2VideoModel(config)
    model.load_state_dict(converted, strict=True)
    return image_config, model.eval()


__all__ = ["convert_sam2_video_state_dict", "sam2_video_model_from_state_dict", "infer_sam2_video_config",
           "video_key_pairs"]
