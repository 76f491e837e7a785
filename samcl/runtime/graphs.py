"""The three graphs of a SAMCL export, as torch modules that `torch.onnx.export` traces, and their export.

    prefix   pixels B x 3 x S x S (normalized, padded)  -> tokens B x H x W x D after the selector block,
                                                           pooled B x 2D (grid mean, then grid std: the selector's input)
    suffix   tokens, heat B x rows x cols, one input per AugModule tensor with a leading batch dimension
             (`augmodule.parameter_shapes`; row of zeros = base)  -> image_embeddings B x C x h x w
    decoder  Meta's ONNX interface (`segment_anything.utils.onnx.SamOnnxModel`, return_single_mask=False):
             image_embeddings, point_coords B x N x 2 (model-input pixels), point_labels B x N (1 positive,
             0 negative, 2 / 3 box corners, -1 padding), mask_input B x 1 x 4h x 4w, has_mask_input 1,
             orig_im_size 2 -> masks B x 4 x H x W (logits at the original size), iou_predictions B x 4,
             low_res_masks B x 4 x 4h x 4w

The module's rows are inputs, so one suffix graph serves every domain and a batch may mix them; the base is the
zero row. The graphs run the backbone's own code (`SamBackbone.prefix/suffix`, transformers' prompt encoder and
mask decoder modules), so they compute what the torch runtime computes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..method.augmodule import AugModuleConfig, Injection, parameter_shapes

#: ONNX opset of every graph: 17 has LayerNormalization as one op (ONNX Runtime >= 1.14, OpenVINO >= 2023.0).
OPSET = 17
PREFIX_INPUTS, PREFIX_OUTPUTS = ["pixels"], ["tokens", "pooled"]
DECODER_INPUTS = ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size"]
DECODER_OUTPUTS = ["masks", "iou_predictions", "low_res_masks"]


def row_input(name: str) -> str:
    """The graph input of one AugModule tensor ("b.weight" -> "module.b.weight")."""
    return f"module.{name}"


class PrefixGraph(nn.Module):
    """Patch embedding and blocks 0..s (no module), and the pooled selector features."""

    def __init__(self, backbone, stop_block: int):
        super().__init__()
        self.backbone, self.stop_block = backbone, stop_block

    def forward(self, pixels: torch.Tensor):
        tokens = self.backbone.prefix(pixels, self.stop_block)
        return tokens, self.backbone.pool_stats(tokens)


class SuffixGraph(nn.Module):
    """Blocks s+1.. and the neck, each sample through its own module rows (G = B) and heat."""

    def __init__(self, backbone, start_block: int, config: AugModuleConfig):
        super().__init__()
        self.backbone, self.start_block, self.config = backbone, start_block, config
        self.names = list(parameter_shapes(config))

    def forward(self, tokens: torch.Tensor, heat: torch.Tensor, *rows: torch.Tensor) -> torch.Tensor:
        injection = Injection(self.config, dict(zip(self.names, rows)), heat)
        return self.backbone.suffix(tokens, self.start_block, injection)


class DecoderGraph(nn.Module):
    """Meta's `SamOnnxModel` (all four masks) on transformers' prompt encoder and mask decoder weights."""

    def __init__(self, backbone):
        super().__init__()
        model = backbone.model
        self.prompt, self.decoder = model.prompt_encoder, model.mask_decoder
        self.image_size = int(backbone.image_size)
        self.register_buffer("image_pe", model.get_image_wide_positional_embeddings().detach().clone())

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """B x N x 2, B x N -> B x N x C, as Meta's `SamOnnxModel._embed_points`."""
        normalized = (coords + 0.5) / self.image_size
        embedding = self.prompt.shared_embedding(normalized[:, None])[:, 0]  # B x N x C
        labels = labels[..., None]
        embedding = embedding * (labels != -1) + self.prompt.not_a_point_embed.weight * (labels == -1)
        for index, point_embed in enumerate(self.prompt.point_embed):
            embedding = embedding + point_embed.weight * (labels == index)
        return embedding

    def embed_mask(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        no_mask = self.prompt.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return has_mask_input * self.prompt.mask_embed(mask_input) + (1 - has_mask_input) * no_mask

    def masks_and_scores(self, embeddings, sparse, dense) -> tuple[torch.Tensor, torch.Tensor]:
        """transformers' `SamMaskDecoder.forward` for one prompt per image, keeping all four mask tokens (Meta's
        `predict_masks`): B x 4 x 4h x 4w logits, B x 4 IoU."""
        decoder = self.decoder
        batch, channels, height, width = embeddings.shape
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens[None].expand(batch, -1, -1), sparse], dim=1)[:, None]
        points, image = decoder.transformer(point_embeddings=tokens, image_embeddings=embeddings + dense,
                                            image_positional_embeddings=self.image_pe.expand(batch, -1, -1, -1),
                                            attention_similarity=None)
        iou_token, mask_tokens = points[:, 0, 0], points[:, 0, 1:1 + decoder.num_mask_tokens]
        image = image.transpose(2, 3).reshape(batch, channels, height, width)
        upscaled = decoder.activation(decoder.upscale_layer_norm(decoder.upscale_conv1(image)))
        upscaled = decoder.activation(decoder.upscale_conv2(upscaled))
        hyper = torch.stack([mlp(mask_tokens[:, i]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], 1)
        _, up_channels, up_h, up_w = upscaled.shape
        masks = (hyper @ upscaled.reshape(batch, up_channels, up_h * up_w)).reshape(batch, -1, up_h, up_w)
        return masks, decoder.iou_prediction_head(iou_token)

    def postprocess(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """Low-res logits -> the original size, as Meta's `mask_postprocessing` (resize, crop the padding, resize)."""
        size = self.image_size
        masks = F.interpolate(masks, size=(size, size), mode="bilinear", align_corners=False)
        original = orig_im_size.to(torch.float32)
        resized = torch.floor(size / torch.max(original) * original + 0.5).to(torch.int64)
        masks = masks[..., : resized[0], : resized[1]]
        orig = orig_im_size.to(torch.int64)
        return F.interpolate(masks, size=(orig[0], orig[1]), mode="bilinear", align_corners=False)

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input, orig_im_size):
        sparse = self.embed_points(point_coords, point_labels)
        dense = self.embed_mask(mask_input, has_mask_input)
        low_res, iou = self.masks_and_scores(image_embeddings, sparse, dense)
        return self.postprocess(low_res, orig_im_size), iou, low_res


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
            dynamic: dict[str, dict[int, str]]) -> None:
    """One graph (TorchScript-based exporter: seconds where the dynamo exporter takes minutes on ViT-B)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes about Python values held constant (sizes: fixed per graph)
        torch.onnx.export(module.eval(), args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False, do_constant_folding=True)


def export_decoder(backbone, path: Path) -> None:
    """decoder.onnx alone (Meta's interface): batch and point count dynamic, any original size."""
    rows, cols = backbone.grid
    channels, low, size = backbone.neck_channels, 4 * rows, backbone.image_size
    batch = {0: "batch"}
    example = (torch.zeros(2, channels, rows, cols), torch.zeros(2, 3, 2), torch.tensor([[1.0, 0.0, -1.0]] * 2),
               torch.zeros(2, 1, low, low), torch.zeros(1), torch.tensor([size * 3 / 4, size]))
    _export(DecoderGraph(backbone), example, path, DECODER_INPUTS, DECODER_OUTPUTS,
            {"image_embeddings": batch, "point_coords": {0: "batch", 1: "points"},
             "point_labels": {0: "batch", 1: "points"}, "mask_input": batch,
             "masks": {0: "batch", 2: "height", 3: "width"}, "iou_predictions": batch, "low_res_masks": batch})


def extract_low_res_decoder(folder: Path) -> None:
    """decoder_low.onnx: the decoder graph without Meta's resizing to the original size, for the engine (which
    resizes the low-res logits itself, as on torch): the same nodes, cut by ONNX's own extractor."""
    import onnx.utils

    onnx.utils.extract_model(str(folder / "decoder.onnx"), str(folder / "decoder_low.onnx"),
                             [name for name in DECODER_INPUTS if name != "orig_im_size"],
                             ["iou_predictions", "low_res_masks"])


def export_graphs(backbone, config: AugModuleConfig, selector_block: int, folder: Path) -> dict:
    """prefix.onnx, suffix.onnx and decoder.onnx of `backbone` (float32) into `folder`; returns their interface
    (input and output names, fixed sizes) for the export's JSON."""
    if backbone.encoder_dtype != torch.float32:
        raise ValueError("graphs are exported from the float32 encoder")
    folder = Path(folder)
    size, (rows, cols), dim = backbone.image_size, backbone.grid, backbone.hidden_size
    batch = {0: "batch"}
    _export(PrefixGraph(backbone, selector_block), (torch.zeros(2, 3, size, size),), folder / "prefix.onnx",
            PREFIX_INPUTS, PREFIX_OUTPUTS, {"pixels": batch, "tokens": batch, "pooled": batch})
    names = list(parameter_shapes(config))
    rows_in = [torch.zeros(2, *shape) for shape in parameter_shapes(config).values()]
    suffix_inputs = ["tokens", "heat", *(row_input(n) for n in names)]
    _export(SuffixGraph(backbone, selector_block + 1, config), (torch.zeros(2, rows, cols, dim),
            torch.zeros(2, rows, cols), *rows_in), folder / "suffix.onnx", suffix_inputs, ["image_embeddings"],
            {name: batch for name in [*suffix_inputs, "image_embeddings"]})
    export_decoder(backbone, folder / "decoder.onnx")
    extract_low_res_decoder(folder)
    return {"prefix": {"file": "prefix.onnx", "inputs": PREFIX_INPUTS, "outputs": PREFIX_OUTPUTS},
            "suffix": {"file": "suffix.onnx", "inputs": suffix_inputs, "outputs": ["image_embeddings"]},
            "decoder": {"file": "decoder.onnx", "inputs": DECODER_INPUTS, "outputs": DECODER_OUTPUTS,
                        "interface": "segment_anything.utils.onnx.SamOnnxModel (return_single_mask=False)"},
            "opset": OPSET, "image_size": size, "grid": [rows, cols], "dim": dim,
            "embedding_channels": backbone.neck_channels, "low_res_size": 4 * rows}
