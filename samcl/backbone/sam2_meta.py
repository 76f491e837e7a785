"""Import Meta's official SAM 2 / SAM 2.1 checkpoints into transformers' ``Sam2Model``.

Meta publishes ``torch.save({"model": state_dict}, ...)`` files (``sam2.1_hiera_tiny.pt``, ``_small``,
``_base_plus``, ``_large``) whose keys follow the ``sam2`` module tree: ``image_encoder.trunk.*`` (Hiera),
``image_encoder.neck.*`` (FPN), ``sam_prompt_encoder.*``, ``sam_mask_decoder.*``, plus the video-only parts
(memory attention and encoder, object pointers, temporal encodings). This module renames the image parts to
``Sam2Model``'s keys, drops the video-only ones (``VIDEO_ONLY``: ``Sam2Model`` has no memory), and checks the
result against the key set and shapes of a ``Sam2Model`` built from the inferred config.

Sizes come from tensor shapes where the weights hold them (widths, blocks per stage, FPN channels, decoder
sizes, the windowed position embedding's sizes). Attention heads, global-attention blocks, the later stages'
window sizes and the input size are not in any weight: they come from the official variant matching the
shapes (``HIERA_VARIANTS``, Meta's ``configs/sam2.1/*.yaml``), or from explicit ``overrides`` for a custom
model; an unknown size without them is an error, never a guess (a wrong head count changes the function
without changing any shape).
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike

import torch
from transformers import Sam2Config, Sam2Model

from .meta import _indices, _mlp_pairs, _rename, _require, check_converted, read_checkpoint

TRUNK = "image_encoder.trunk."
_PE_MATRIX = "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
_HF_PE = "prompt_encoder.shared_embedding.positional_embedding"
_TIED_PE = "shared_image_embedding.positional_embedding"
_POINT_EMBEDDINGS = "sam_prompt_encoder.point_embeddings."
_HF_POINT_EMBED = "prompt_encoder.point_embed.weight"

#: Meta keys of the video model that the image model has no place for (memory, object pointers, ...).
VIDEO_ONLY = ("memory_attention.", "memory_encoder.", "maskmem_tpos_enc", "no_mem_pos_enc", "no_obj_ptr",
              "obj_ptr_proj.", "obj_ptr_tpos_proj.", "mask_downsample.", "no_obj_embed_spatial")

# Fixed by Meta's SAM2Base._build_sam_heads for every variant (not recoverable from shapes).
_MASK_DECODER_HEADS = 8
# Meta's Hiera: heads double at every stage (head_mul 2.0); queries pooled at the first 3 stage changes.
_HEAD_MUL = 2
_QUERY_POOL_STAGES = 3
# Meta's Hiera PatchEmbed: a 7 x 7 convolution with stride 4 and padding 3 (only the kernel is in the weights).
_PATCH_STRIDE = 4
#: FPN levels with top-down features (Meta's configs: level 0 and 1 use the backbone features directly).
_FPN_TOP_DOWN_LEVELS = (2, 3)


@dataclass(frozen=True)
class HieraVariant:
    """What Meta's configs say about a Hiera size beyond its weights."""

    num_heads: int
    global_attention_blocks: tuple[int, ...]
    window_size_per_stage: tuple[int, ...]
    image_size: int = 1024


#: (embed_dim, blocks per stage) -> the official variant (Meta's sam2.1_hiera_{t,s,b+,l}.yaml).
HIERA_VARIANTS = {
    (96, (1, 2, 7, 2)): HieraVariant(1, (5, 7, 9), (8, 4, 14, 7)),  # tiny
    (96, (1, 2, 11, 2)): HieraVariant(1, (7, 10, 13), (8, 4, 14, 7)),  # small
    (112, (2, 3, 16, 3)): HieraVariant(2, (12, 16, 20), (8, 4, 14, 7)),  # base plus
    (144, (2, 6, 36, 4)): HieraVariant(2, (23, 33, 43), (8, 4, 16, 8)),  # large
}


def is_sam2_state_dict(state_dict: dict[str, torch.Tensor]) -> bool:
    """Meta's SAM 2 layout (a Hiera trunk) rather than SAM 1's ViT."""
    return any(key.startswith(TRUNK) for key in state_dict)


def load_sam2_checkpoint(path: str | PathLike, **overrides) -> Sam2Model:
    """Load an official SAM 2 / 2.1 checkpoint into an eval-mode ``Sam2Model`` (``torch.load(weights_only=True)``).

    ``overrides`` (custom sizes only): ``num_heads``, ``global_attention_blocks``, ``window_size_per_stage``,
    ``image_size``, ``fpn_top_down_levels``. Any problem raises ``ValueError("<path>: <problem>")``.
    """
    state_dict = read_checkpoint(path)
    return sam2_model_from_state_dict(state_dict, str(path), **overrides)


def sam2_model_from_state_dict(state_dict: dict[str, torch.Tensor], source: str, **overrides) -> Sam2Model:
    """A Meta SAM 2 state dict already read from `source` (named in errors) -> eval-mode ``Sam2Model``."""
    try:
        config, converted = convert_sam2_state_dict(state_dict, **overrides)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    model = Sam2Model(config)
    model.load_state_dict(converted, strict=True)
    return model.eval()


def convert_sam2_state_dict(state_dict: dict[str, torch.Tensor], **overrides) -> tuple[Sam2Config, dict]:
    """Meta SAM 2 state dict -> (``Sam2Config``, ``Sam2Model`` state dict). Tensors are shared, not copied
    (except the four point embeddings, stacked into one). Raises ``ValueError`` naming unknown, missing or
    mis-shaped keys."""
    if not is_sam2_state_dict(state_dict):
        raise ValueError(f"not a SAM 2 checkpoint: no {TRUNK}* keys")
    config = infer_sam2_config(state_dict, **overrides)
    pairs = key_pairs(_meta_head_depths(state_dict))
    image_keys = {k: v for k, v in state_dict.items() if not k.startswith(VIDEO_ONLY)}
    points = sorted((k for k in image_keys if k.startswith(_POINT_EMBEDDINGS)),
                    key=lambda k: int(k[len(_POINT_EMBEDDINGS):].split(".")[0]))
    converted = {_rename(k, pairs): v for k, v in image_keys.items() if k not in points}
    if points:
        converted[_HF_POINT_EMBED] = torch.cat([image_keys[k] for k in points])
    if _PE_MATRIX in image_keys:
        converted[_TIED_PE] = image_keys[_PE_MATRIX]
    check_converted(Sam2Model, config, [k for k in image_keys if k not in points], converted, pairs)
    return config, converted


def to_meta_state_dict(hf_state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of the key mapping: a ``Sam2Model`` state dict in Meta's layout (image parts only).
    Meta's model has one random-feature matrix for points and the image grid; ``Sam2Model`` keeps two copies."""
    if _TIED_PE in hf_state_dict and not torch.equal(hf_state_dict[_TIED_PE], hf_state_dict[_HF_PE]):
        raise ValueError(f"{_TIED_PE} differs from {_HF_PE}: Meta's layout has a single matrix for both")
    back = [(target, source) for source, target in key_pairs(_hf_head_depths(hf_state_dict))]
    out = {}
    for key, tensor in hf_state_dict.items():
        if key == _TIED_PE:
            continue
        if key == _HF_POINT_EMBED:
            out.update({f"{_POINT_EMBEDDINGS}{i}.weight": row[None] for i, row in enumerate(tensor)})
        else:
            out[_rename(key, back)] = tensor
    return out


def infer_sam2_config(state_dict: dict[str, torch.Tensor], num_heads: int | None = None,
                      global_attention_blocks: tuple[int, ...] | None = None,
                      window_size_per_stage: tuple[int, ...] | None = None,
                      image_size: int | None = None,
                      fpn_top_down_levels: tuple[int, ...] = _FPN_TOP_DOWN_LEVELS) -> Sam2Config:
    """The full ``Sam2Config`` from shapes, the official variant table and ``overrides`` (see the module doc)."""
    embed_dim, channels, kernel, _ = _require(state_dict, f"{TRUNK}patch_embed.proj.weight").shape
    blocks = _indices(state_dict, f"{TRUNK}blocks.")
    widths = [_require(state_dict, f"{TRUNK}blocks.{b}.attn.qkv.weight").shape[0] // 3 for b in blocks]
    starts = [0] + [b for b in blocks if b > 0 and f"{TRUNK}blocks.{b}.proj.weight" in state_dict]
    blocks_per_stage = [end - start for start, end in zip(starts, starts[1:] + [len(blocks)])]
    dims = [widths[start] for start in starts]
    variant = HIERA_VARIANTS.get((embed_dim, tuple(blocks_per_stage)))
    chosen = {"num_heads": num_heads, "global_attention_blocks": global_attention_blocks,
              "window_size_per_stage": window_size_per_stage, "image_size": image_size}
    for name in chosen:
        if chosen[name] is None:
            if variant is None:
                raise ValueError(f"Hiera with embed_dim {embed_dim} and blocks per stage {blocks_per_stage} is not an "
                                 f"official SAM 2 size: pass {', '.join(k for k, v in chosen.items() if v is None)}")
            chosen[name] = getattr(variant, name)
    windows, image_size = list(chosen["window_size_per_stage"]), int(chosen["image_size"])
    first_window = _require(state_dict, f"{TRUNK}pos_embed_window").shape[-1]
    if len(windows) != len(blocks_per_stage) or windows[0] != first_window:
        raise ValueError(f"window sizes {windows} do not fit {len(blocks_per_stage)} stages with a first window of "
                         f"{first_window} ({TRUNK}pos_embed_window)")
    background = list(_require(state_dict, f"{TRUNK}pos_embed").shape[-2:])
    neck = [_require(state_dict, f"image_encoder.neck.convs.{i}.conv.weight")
            for i in _indices(state_dict, "image_encoder.neck.convs.")]
    fpn_hidden = neck[0].shape[0]
    pool_stages = min(_QUERY_POOL_STAGES, len(blocks_per_stage) - 1)
    patch_stride = _PATCH_STRIDE
    grids = [image_size // (patch_stride * 2 ** min(s, pool_stages)) for s in range(3)]
    decoder = "sam_mask_decoder."
    decoder_hidden = _require(state_dict, f"{decoder}iou_token.weight").shape[1]
    cross = _require(state_dict, f"{decoder}transformer.layers.0.cross_attn_token_to_image.q_proj.weight").shape[0]
    return Sam2Config(
        vision_config=dict(
            backbone_config=dict(
                model_type="sam2_hiera_det_model", hidden_size=embed_dim, num_attention_heads=chosen["num_heads"],
                num_channels=channels, image_size=[image_size, image_size], patch_kernel_size=[kernel, kernel],
                patch_stride=[patch_stride, patch_stride], patch_padding=[kernel // 2, kernel // 2],
                query_stride=[2, 2], window_positional_embedding_background_size=background,
                num_query_pool_stages=pool_stages, blocks_per_stage=blocks_per_stage, embed_dim_per_stage=dims,
                num_attention_heads_per_stage=[chosen["num_heads"] * _HEAD_MUL ** s for s in range(len(dims))],
                window_size_per_stage=windows, global_attention_blocks=list(chosen["global_attention_blocks"]),
            ),
            backbone_channel_list=[conv.shape[1] for conv in neck],
            backbone_feature_sizes=[[g, g] for g in grids],
            fpn_hidden_size=fpn_hidden, fpn_kernel_size=neck[0].shape[-1],
            fpn_padding=neck[0].shape[-1] // 2, fpn_top_down_levels=list(fpn_top_down_levels),
        ),
        prompt_encoder_config=dict(
            hidden_size=_require(state_dict, "sam_prompt_encoder.no_mask_embed.weight").shape[1],
            image_size=image_size, patch_size=image_size // grids[2],
            mask_input_channels=_require(state_dict, "sam_prompt_encoder.mask_downscaling.3.weight").shape[0],
            num_point_embeddings=len(_indices(state_dict, _POINT_EMBEDDINGS)),
        ),
        mask_decoder_config=dict(
            hidden_size=decoder_hidden,
            mlp_dim=_require(state_dict, f"{decoder}transformer.layers.0.mlp.layers.0.weight").shape[0],
            num_hidden_layers=len(_indices(state_dict, f"{decoder}transformer.layers.")),
            num_attention_heads=_MASK_DECODER_HEADS, attention_downsample_rate=decoder_hidden // cross,
            num_multimask_outputs=_require(state_dict, f"{decoder}mask_tokens.weight").shape[0] - 1,
            iou_head_depth=len(_indices(state_dict, f"{decoder}iou_prediction_head.layers.")),
            iou_head_hidden_dim=_require(state_dict, f"{decoder}iou_prediction_head.layers.0.weight").shape[0],
        ),
    )


_HEADS = ("output_hypernetworks_mlps.{n}", "iou_prediction_head", "pred_obj_score_head")


def key_pairs(head_depths: dict[str, int]) -> list[tuple[str, str]]:
    """(Meta prefix, Sam2Model prefix) renames, first match wins; ``{n}`` is any index. Meta's ``MLP.layers.*``
    become ``proj_in``, ``layers.*``, ``proj_out``; `head_depths` gives the decoder heads' depths (`_HEADS`)."""
    trunk, hf = TRUNK, "vision_encoder.backbone."
    meta_layers, hf_layers = "sam_mask_decoder.transformer.layers.{n}.", "mask_decoder.transformer.layers.{n}."
    attentions = ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token")
    pairs = [
        (f"{trunk}patch_embed.proj.", f"{hf}patch_embed.projection."),
        (f"{trunk}pos_embed", f"{hf}pos_embed"),
        *_mlp(f"{trunk}blocks.{{n}}.mlp", f"{hf}blocks.{{n}}.mlp", 2),
        (f"{trunk}blocks.{{n}}.norm", f"{hf}blocks.{{n}}.layer_norm"),
        (f"{trunk}blocks.{{n}}.", f"{hf}blocks.{{n}}."),
        ("image_encoder.neck.convs.{n}.conv.", "vision_encoder.neck.convs.{n}."),
        ("no_mem_embed", "no_memory_embedding"),
        (_PE_MATRIX, _HF_PE),
        ("sam_prompt_encoder.mask_downscaling.0.", "prompt_encoder.mask_embed.conv1."),
        ("sam_prompt_encoder.mask_downscaling.1.", "prompt_encoder.mask_embed.layer_norm1."),
        ("sam_prompt_encoder.mask_downscaling.3.", "prompt_encoder.mask_embed.conv2."),
        ("sam_prompt_encoder.mask_downscaling.4.", "prompt_encoder.mask_embed.layer_norm2."),
        ("sam_prompt_encoder.mask_downscaling.6.", "prompt_encoder.mask_embed.conv3."),
        ("sam_prompt_encoder.", "prompt_encoder."),
        *[(f"{meta_layers}{attn}.out_proj.", f"{hf_layers}{attn}.o_proj.") for attn in attentions],
        ("sam_mask_decoder.transformer.final_attn_token_to_image.out_proj.",
         "mask_decoder.transformer.final_attn_token_to_image.o_proj."),
        *_mlp(f"{meta_layers}mlp", f"{hf_layers}mlp", 2),
        (f"{meta_layers}norm", f"{hf_layers}layer_norm"),
        ("sam_mask_decoder.transformer.norm_final_attn.", "mask_decoder.transformer.layer_norm_final_attn."),
        ("sam_mask_decoder.output_upscaling.0.", "mask_decoder.upscale_conv1."),
        ("sam_mask_decoder.output_upscaling.1.", "mask_decoder.upscale_layer_norm."),
        ("sam_mask_decoder.output_upscaling.3.", "mask_decoder.upscale_conv2."),
    ]
    for head, depth in head_depths.items():
        pairs += _mlp(f"sam_mask_decoder.{head}", f"mask_decoder.{head}", depth)
    pairs.append(("sam_mask_decoder.", "mask_decoder."))
    return pairs


def _mlp(source: str, target: str, depth: int) -> list[tuple[str, str]]:
    return [(src, dst.replace(source, target, 1)) for src, dst in _mlp_pairs(source, depth)]


def _meta_head_depths(state_dict: dict[str, torch.Tensor]) -> dict[str, int]:
    depths = {}
    for head in _HEADS:
        prefix = f"sam_mask_decoder.{head.replace('{n}', '0')}.layers."
        if any(k.startswith(prefix) for k in state_dict):
            depths[head] = len(_indices(state_dict, prefix))
    return depths


def _hf_head_depths(state_dict: dict[str, torch.Tensor]) -> dict[str, int]:
    depths = {}
    for head in _HEADS:
        prefix = f"mask_decoder.{head.replace('{n}', '0')}."
        if f"{prefix}proj_in.weight" in state_dict:
            hidden = [k for k in state_dict if k.startswith(f"{prefix}layers.") and k.endswith(".weight")]
            depths[head] = len(hidden) + 2
    return depths
