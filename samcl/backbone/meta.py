"""Import Meta's official Segment Anything checkpoints into transformers' ``SamModel``.

Meta publishes plain ``torch.save`` state dicts (``sam_vit_b_01ec64.pth``,
``sam_vit_l_0b3195.pth``, ``sam_vit_h_4b8939.pth``) whose keys follow the
``segment_anything`` module tree (``image_encoder.*``, ``prompt_encoder.*``,
``mask_decoder.*``). This module infers every architecture size from the tensor
shapes, renames the keys to ``SamModel``'s and checks the result against the key
set and shapes of a ``SamModel`` built from the inferred config.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterator
from os import PathLike

import torch
from transformers import SamConfig, SamModel

from ..errors import SamclError
from ..io import NoSuchFile, open_regular

_META_PREFIXES = ("image_encoder.", "prompt_encoder.", "mask_decoder.")
_WRAPPER_KEYS = ("model", "state_dict")

# Not recoverable from tensor shapes (attention heads only split projections); Meta's
# ``build_sam`` uses 8 heads in the mask decoder's TwoWayTransformer for every variant.
_MASK_DECODER_HEADS = 8
# Meta's TwoWayTransformer uses ``nn.LayerNorm`` defaults; SamMaskDecoderConfig defaults to 1e-6.
_MASK_DECODER_LAYER_NORM_EPS = 1e-5
# SamVisionConfig defaults to 1e-10, which would make fine-tuned/new vision weights near zero.
_VISION_INITIALIZER_RANGE = 0.02

_PE_MATRIX = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
_TIED_PE = "shared_image_embedding.positional_embedding"
_HYPERNETWORK_MLP = "mask_decoder.output_hypernetworks_mlps.{n}"
_IOU_HEAD = "mask_decoder.iou_prediction_head"


def sam_model_from_state_dict(state_dict: dict[str, torch.Tensor], source: str) -> SamModel:
    """A Meta SAM state dict already read from `source` (named in errors) -> eval-mode ``SamModel``."""
    try:
        config, hf_state_dict = convert_meta_state_dict(state_dict)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    model = SamModel(config)
    model.load_state_dict(hf_state_dict, strict=True)
    return model.eval()


def convert_meta_state_dict(
    state_dict: dict[str, torch.Tensor],
) -> tuple[SamConfig, dict[str, torch.Tensor]]:
    """Convert a Meta SAM state dict to a ``SamConfig`` and a ``SamModel`` state dict.

    Sizes are inferred from shapes: ``patch_embed.proj.weight`` is ``(D, C, P, P)``,
    ``pos_embed`` is ``(1, G, G, D)`` (image size ``G * P``), each block's ``rel_pos_h`` is
    ``(2 * S - 1, D / heads)`` with ``S = G`` for global attention and the window size
    otherwise. Tensors are shared with the input, not copied. Raises ``ValueError`` naming
    unknown, missing or mis-shaped keys.
    """
    if not any(key.startswith(_META_PREFIXES) for key in state_dict):
        raise ValueError(
            "not a Segment Anything checkpoint: no image_encoder.*, prompt_encoder.* or mask_decoder.* keys"
        )
    config = _infer_config(state_dict)
    pairs = _key_pairs(state_dict)
    converted = {_rename(key, pairs): tensor for key, tensor in state_dict.items()}
    converted[_TIED_PE] = state_dict[_PE_MATRIX]
    check_converted(SamModel, config, state_dict, converted, pairs)
    return config, converted


def read_checkpoint(path: str | PathLike) -> dict[str, torch.Tensor]:
    """Read ``path`` with ``torch.load(weights_only=True)`` and unwrap it to a flat state dict."""
    try:
        with open_regular(path, "checkpoint file") as handle:  # (a fifo or device is refused before it blocks)
            checkpoint = torch.load(handle, map_location="cpu", weights_only=True)
    except NoSuchFile:
        raise ValueError(f"{path}: cannot read file (no such file)") from None
    except SamclError as err:
        raise ValueError(str(err)) from None
    except OSError as err:
        raise ValueError(f"{path}: cannot read file ({err.strerror or err})") from err
    except pickle.UnpicklingError as err:
        culprit = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        detail = f" ({culprit.group(1)})" if culprit else ""
        raise ValueError(
            f"{path}: holds pickled objects{detail} that torch.load(weights_only=True) refuses; "
            "expected a plain tensor state dict"
        ) from err
    # torch.load reports truncated or corrupt files through many exception types
    # (RuntimeError, EOFError, KeyError, ...).
    except Exception as err:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {err!r:.200}") from err
    if isinstance(checkpoint, dict):
        wrapper = next((key for key in _WRAPPER_KEYS if isinstance(checkpoint.get(key), dict)), None)
        checkpoint = checkpoint[wrapper] if wrapper else checkpoint
    if not isinstance(checkpoint, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in checkpoint.items()
    ):
        raise ValueError(f"{path}: not a Segment Anything checkpoint: expected a dict of tensors")
    return checkpoint


def _require(state_dict: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    """Return ``state_dict[key]`` or raise ``ValueError`` naming the missing key."""
    if key not in state_dict:
        raise ValueError(f"missing key {key!r}")
    return state_dict[key]


def _indices(state_dict: dict[str, torch.Tensor], prefix: str) -> range:
    """``range(max_index + 1)`` over the numbered children ``<prefix><index>.*`` in ``state_dict``."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = [int(match.group(1)) for key in state_dict if (match := pattern.match(key))]
    if not found:
        raise ValueError(f"missing keys {prefix}0.*")
    return range(max(found) + 1)


def _infer_config(state_dict: dict[str, torch.Tensor]) -> SamConfig:
    """Infer the full ``SamConfig`` (ViT-B/L/H or any custom size) from tensor shapes."""
    hidden_size, num_channels, patch_size, _ = _require(state_dict, "image_encoder.patch_embed.proj.weight").shape
    grid = _require(state_dict, "image_encoder.pos_embed").shape[1]
    image_size = grid * patch_size

    blocks = _indices(state_dict, "image_encoder.blocks.")
    attention_spans, head_dims = [], set()
    for block in blocks:
        rel_pos = _require(state_dict, f"image_encoder.blocks.{block}.attn.rel_pos_h")
        attention_spans.append((rel_pos.shape[0] + 1) // 2)
        head_dims.add(rel_pos.shape[1])
    if len(head_dims) != 1:
        raise ValueError(f"inconsistent attention head sizes across image_encoder.blocks: {sorted(head_dims)}")
    (head_dim,) = head_dims
    global_blocks = [block for block, span in zip(blocks, attention_spans) if span == grid]
    window_sizes = {span for span in attention_spans if span != grid}
    if len(window_sizes) > 1:
        raise ValueError(f"inconsistent window sizes across image_encoder.blocks: {sorted(window_sizes)}")
    window_size = window_sizes.pop() if window_sizes else grid

    output_channels = _require(state_dict, "image_encoder.neck.0.weight").shape[0]
    decoder_hidden = _require(state_dict, "mask_decoder.iou_token.weight").shape[1]
    cross_attention_dim = _require(
        state_dict, "mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight"
    ).shape[0]
    return SamConfig(
        vision_config=dict(
            hidden_size=hidden_size,
            output_channels=output_channels,
            num_hidden_layers=len(blocks),
            num_attention_heads=hidden_size // head_dim,
            num_channels=num_channels,
            image_size=image_size,
            patch_size=patch_size,
            qkv_bias="image_encoder.blocks.0.attn.qkv.bias" in state_dict,
            window_size=window_size,
            global_attn_indexes=global_blocks,
            num_pos_feats=_require(state_dict, _PE_MATRIX).shape[1],
            mlp_dim=_require(state_dict, "image_encoder.blocks.0.mlp.lin1.weight").shape[0],
            initializer_range=_VISION_INITIALIZER_RANGE,
        ),
        prompt_encoder_config=dict(
            hidden_size=_require(state_dict, "prompt_encoder.no_mask_embed.weight").shape[1],
            image_size=image_size,
            patch_size=patch_size,
            mask_input_channels=_require(state_dict, "prompt_encoder.mask_downscaling.3.weight").shape[0],
            num_point_embeddings=len(_indices(state_dict, "prompt_encoder.point_embeddings.")),
        ),
        mask_decoder_config=dict(
            hidden_size=decoder_hidden,
            mlp_dim=_require(state_dict, "mask_decoder.transformer.layers.0.mlp.lin1.weight").shape[0],
            num_hidden_layers=len(_indices(state_dict, "mask_decoder.transformer.layers.")),
            num_attention_heads=_MASK_DECODER_HEADS,
            attention_downsample_rate=decoder_hidden // cross_attention_dim,
            num_multimask_outputs=_require(state_dict, "mask_decoder.mask_tokens.weight").shape[0] - 1,
            iou_head_depth=len(_indices(state_dict, f"{_IOU_HEAD}.layers.")),
            iou_head_hidden_dim=_require(state_dict, f"{_IOU_HEAD}.layers.0.weight").shape[0],
            layer_norm_eps=_MASK_DECODER_LAYER_NORM_EPS,
        ),
    )


def _key_pairs(state_dict: dict[str, torch.Tensor]) -> list[tuple[str, str]]:
    """(Meta prefix, SamModel prefix) renames, first match wins; ``{n}`` is any index.

    Keys matching no prefix keep their name (they are identical in both models).
    """
    pairs = [
        ("image_encoder.pos_embed", "vision_encoder.pos_embed"),
        ("image_encoder.patch_embed.proj.", "vision_encoder.patch_embed.projection."),
        ("image_encoder.blocks.{n}.norm", "vision_encoder.layers.{n}.layer_norm"),
        ("image_encoder.blocks.{n}.", "vision_encoder.layers.{n}."),
        ("image_encoder.neck.0.", "vision_encoder.neck.conv1."),
        ("image_encoder.neck.1.", "vision_encoder.neck.layer_norm1."),
        ("image_encoder.neck.2.", "vision_encoder.neck.conv2."),
        ("image_encoder.neck.3.", "vision_encoder.neck.layer_norm2."),
        (_PE_MATRIX, "prompt_encoder.shared_embedding.positional_embedding"),
        ("prompt_encoder.point_embeddings.", "prompt_encoder.point_embed."),
        ("prompt_encoder.mask_downscaling.0.", "prompt_encoder.mask_embed.conv1."),
        ("prompt_encoder.mask_downscaling.1.", "prompt_encoder.mask_embed.layer_norm1."),
        ("prompt_encoder.mask_downscaling.3.", "prompt_encoder.mask_embed.conv2."),
        ("prompt_encoder.mask_downscaling.4.", "prompt_encoder.mask_embed.layer_norm2."),
        ("prompt_encoder.mask_downscaling.6.", "prompt_encoder.mask_embed.conv3."),
        ("mask_decoder.transformer.layers.{n}.norm", "mask_decoder.transformer.layers.{n}.layer_norm"),
        ("mask_decoder.transformer.norm_final_attn.", "mask_decoder.transformer.layer_norm_final_attn."),
        ("mask_decoder.output_upscaling.0.", "mask_decoder.upscale_conv1."),
        ("mask_decoder.output_upscaling.1.", "mask_decoder.upscale_layer_norm."),
        ("mask_decoder.output_upscaling.3.", "mask_decoder.upscale_conv2."),
    ]
    hypernetwork_depth = len(_indices(state_dict, "mask_decoder.output_hypernetworks_mlps.0.layers."))
    iou_head_depth = len(_indices(state_dict, f"{_IOU_HEAD}.layers."))
    pairs += _mlp_pairs(_HYPERNETWORK_MLP, hypernetwork_depth)
    pairs += _mlp_pairs(_IOU_HEAD, iou_head_depth)
    return pairs


def _mlp_pairs(prefix: str, depth: int) -> Iterator[tuple[str, str]]:
    """Meta's ``MLP.layers.{0..depth-1}`` to ``SamFeedForward``'s ``proj_in``, ``layers.*``, ``proj_out``."""
    yield f"{prefix}.layers.0.", f"{prefix}.proj_in."
    for index in range(1, depth - 1):
        yield f"{prefix}.layers.{index}.", f"{prefix}.layers.{index - 1}."
    yield f"{prefix}.layers.{depth - 1}.", f"{prefix}.proj_out."


def _rename(key: str, pairs: list[tuple[str, str]]) -> str:
    """Rename ``key`` with the first matching ``(source prefix, target prefix)`` pair."""
    for source, target in pairs:
        match = re.match(re.escape(source).replace(r"\{n\}", r"(?P<n>\d+)"), key)
        if match:
            return target.replace("{n}", match.groupdict().get("n", "")) + key[match.end() :]
    return key


def check_converted(model_class, config, meta_keys, converted: dict[str, torch.Tensor],
                    pairs: list[tuple[str, str]]) -> None:
    """Raise ``ValueError`` unless ``converted`` has exactly ``model_class(config)``'s keys and shapes (SAM, SAM 2
    and SAM 2 video conversions alike).

    Arguments:
      meta_keys: the checkpoint keys the conversion was to use (a key no rename places is "unknown").
      pairs: the conversion's (Meta prefix, transformers prefix) renames; keys are reported with Meta's names.

    The model is built on the meta device (no memory).
    """
    with torch.device("meta"):
        expected = {key: tensor.shape for key, tensor in model_class(config).state_dict().items()}
    back = [(target, source) for source, target in pairs]
    unknown = [key for key in meta_keys if _rename(key, pairs) not in expected]
    missing = sorted({_rename(key, back) for key in expected.keys() - converted.keys()})
    mis_shaped = [f"{_rename(key, back)} {tuple(tensor.shape)} (expected {tuple(expected[key])})"
                  for key, tensor in converted.items() if key in expected and tensor.shape != expected[key]]
    problems = [f"{label}: {_shorten(keys)}" for label, keys in
                (("unknown keys", unknown), ("missing keys", missing), ("wrong shapes", mis_shaped)) if keys]
    if problems:
        raise ValueError("; ".join(problems))


def _shorten(items: list[str], limit: int = 5) -> str:
    """Join at most ``limit`` items, summarising the rest as ``... and N more``."""
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
