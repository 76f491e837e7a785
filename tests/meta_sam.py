"""Meta's reference Segment Anything model, importable without torchvision.

The ``segment-anything`` package's top-level ``__init__`` imports ``SamPredictor``,
which imports torchvision, while its ``modeling/`` sub-package only needs torch.
We therefore locate the installed package with ``importlib.util.find_spec`` (which
does not execute ``__init__``) and load just ``modeling/`` under a private module
name, so nothing is stubbed and the real ``segment_anything`` name stays untouched.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from functools import partial
from pathlib import Path
from types import ModuleType

import pytest
import torch

_MODULE_NAME = "_meta_segment_anything_modeling"


def load_meta_modeling() -> ModuleType:
    """Return Meta's ``segment_anything.modeling`` module, or skip the test if not installed."""
    if _MODULE_NAME in sys.modules:
        return sys.modules[_MODULE_NAME]
    package = importlib.util.find_spec("segment_anything")
    if package is None or package.origin is None:
        pytest.skip("segment-anything is not installed (pip install --no-deps segment-anything)")
    modeling_dir = Path(package.origin).parent / "modeling"
    spec = importlib.util.spec_from_file_location(
        _MODULE_NAME, modeling_dir / "__init__.py", submodule_search_locations=[str(modeling_dir)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


def build_meta_sam(
    *,
    image_size: int,
    patch_size: int,
    encoder_embed_dim: int,
    encoder_depth: int,
    encoder_num_heads: int,
    encoder_global_attn_indexes: tuple[int, ...],
    window_size: int,
    prompt_embed_dim: int = 256,
    mask_in_chans: int = 16,
    decoder_mlp_dim: int = 2048,
    iou_head_hidden_dim: int = 256,
    decoder_num_heads: int = 8,
) -> torch.nn.Module:
    """Build Meta's ``Sam`` the way ``segment_anything.build_sam._build_sam`` does, at any size.

    Meta's builder fixes image size 1024, patch 16, window 14 and the decoder sizes; exposing
    them lets tests use small models. Image embeddings are ``(B, prompt_embed_dim, S, S)``
    with ``S = image_size // patch_size``; low-res masks are ``(B, C, 4 * S, 4 * S)``.
    """
    modeling = load_meta_modeling()
    embedding_size = image_size // patch_size
    return modeling.Sam(
        image_encoder=modeling.ImageEncoderViT(
            depth=encoder_depth,
            embed_dim=encoder_embed_dim,
            img_size=image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=encoder_num_heads,
            patch_size=patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=encoder_global_attn_indexes,
            window_size=window_size,
            out_chans=prompt_embed_dim,
        ),
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=prompt_embed_dim,
            image_embedding_size=(embedding_size, embedding_size),
            input_image_size=(image_size, image_size),
            mask_in_chans=mask_in_chans,
        ),
        mask_decoder=modeling.MaskDecoder(
            num_multimask_outputs=3,
            transformer=modeling.TwoWayTransformer(
                depth=2, embedding_dim=prompt_embed_dim, mlp_dim=decoder_mlp_dim, num_heads=decoder_num_heads
            ),
            transformer_dim=prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def load_meta_onnx_model() -> type:
    """Meta's ``segment_anything.utils.onnx.SamOnnxModel`` (the class Meta's ONNX export script wraps), loaded
    the same way: the installed package's folder as a private package whose ``__init__`` is not run."""
    name = "_meta_segment_anything"
    if name not in sys.modules:
        package = importlib.util.find_spec("segment_anything")
        if package is None or package.origin is None:
            pytest.skip("segment-anything is not installed (pip install --no-deps segment-anything)")
        module = ModuleType(name)
        module.__path__ = [str(Path(package.origin).parent)]
        sys.modules[name] = module
    return importlib.import_module(f"{name}.utils.onnx").SamOnnxModel
