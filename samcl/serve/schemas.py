"""The API's request and response bodies (they are also its OpenAPI schema, at /openapi.json and /docs)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from .limits import MAX_POINTS

#: A pixel coordinate: a JSON number (strict: "12" and true are refused, not converted), finite.
Coordinate = Annotated[float, Field(strict=True, allow_inf_nan=False)]
#: A point's label: the JSON number 1 (positive) or 0 (negative); strict, so true and "1" are refused.
Label = Annotated[int, Field(strict=True, ge=0, le=1)]


class SegmentRequest(BaseModel):
    """Points and box in original image pixels, 0-based (x, y), as the image is shown (EXIF orientation applied)."""

    model_config = ConfigDict(extra="forbid")

    image_id: str | None = Field(None, description="id from POST /v1/images")
    image: str | None = Field(None, description="the image file inline, base64 (used when image_id is absent or "
                                                "no longer cached; its id is then cached too)")
    points: list[tuple[Coordinate, Coordinate]] = Field(default_factory=list, max_length=MAX_POINTS,
                                                        description="[[x, y], ...]")
    labels: list[Label] | None = Field(None, description="1 positive, 0 negative, one per point "
                                                                 "(default: all positive)")
    box: tuple[Coordinate, Coordinate, Coordinate, Coordinate] | None = Field(None, description="[x0, y0, x1, y1]")
    force: str | None = Field(None, description="run this domain's module ('base': none); default: the "
                                                 "selector chooses")
    mask_format: Literal["png", "rle"] = Field("png", description="png: base64 8-bit PNG (foreground 255); "
                                                                  "rle: COCO compressed RLE")


class Mask(BaseModel):
    format: Literal["png", "rle"]
    width: int
    height: int
    data: str | None = Field(None, description="png: base64 PNG bytes")
    counts: str | None = Field(None, description="rle: COCO compressed counts (size is [height, width])")
    size: list[int] | None = None


class SegmentResponse(BaseModel):
    image_id: str
    domain: str = Field(description="the domain whose module ran ('base': the base model, SAM without a module)")
    domain_score: float | None = Field(description="the selector's score for its pick; null when the domain was "
                                                   "forced or the selector gives none")
    score: float = Field(description="the decoder's predicted IoU of the mask")
    foreground: float = Field(description="share of the image's pixels in the mask")
    mask: Mask
    generation: int = Field(description="the store generation that served the request")
    timings: dict[str, float | int]


class ImageResponse(BaseModel):
    image_id: str
    width: int
    height: int
    domain: str = Field(description="the selector's pick for this image")
    domain_score: float | None = Field(description="the selector's score for its pick")
    generation: int
    timings: dict[str, float | int]


class Domain(BaseModel):
    name: str
    kind: str
    bytes: int
    parameters: int


class DomainsResponse(BaseModel):
    domains: list[Domain]
    base: dict
    generation: int


class ErrorBody(BaseModel):
    error: dict[str, str] = Field(description='{"code": ..., "message": ...}')


class GenerateRequest(BaseModel):
    """Automatic masks of one image (Meta's `SamAutomaticMaskGenerator` options, by their names; an option left out
    takes Meta's default, see `samcl.inference.automatic.AutoMaskConfig`)."""

    model_config = ConfigDict(extra="forbid")

    image_id: str | None = Field(None, description="id from POST /v1/images")
    image: str | None = Field(None, description="the image file inline, base64 (used when image_id is absent or no "
                                                "longer cached; needed with crop_n_layers > 0: crops are encoded anew)")
    force: str | None = Field(None, description="run this domain's module ('base': none); default: the selector "
                                                 "chooses")
    points_per_side: Annotated[int, Field(strict=True)] | None = Field(None, description="grid points a side (32)")
    points_per_batch: Annotated[int, Field(strict=True)] | None = Field(
        None, description="grid points decoded together (64; the server may decode fewer at once, same result)")
    pred_iou_thresh: Coordinate | None = Field(None, description="keep masks whose predicted IoU exceeds this (0.88)")
    stability_score_thresh: Coordinate | None = Field(None, description="keep masks at least this stable (0.95)")
    stability_score_offset: Coordinate | None = Field(None, description="logit offset of the stability score (1.0)")
    box_nms_thresh: Coordinate | None = Field(None, description="box IoU for dropping duplicates (0.7)")
    crop_n_layers: Annotated[int, Field(strict=True)] | None = Field(None, description="crop layers (0)")
    crop_nms_thresh: Coordinate | None = Field(None, description="box IoU for duplicates between crops (0.7)")
    crop_overlap_ratio: Coordinate | None = Field(None, description="crop overlap share of the short side (512/1500)")
    crop_n_points_downscale_factor: Annotated[int, Field(strict=True)] | None = Field(
        None, description="grid shrink per crop layer (1)")
    min_mask_region_area: Annotated[int, Field(strict=True)] | None = Field(
        None, description="remove holes and islands under this many pixels (0: off)")
    max_masks: int = Field(100, ge=1, le=1000, description="answer at most this many masks (the first ones, best "
                                                           "predicted IoU first within a crop)")


class GeneratedMask(BaseModel):
    segmentation: dict = Field(description="COCO compressed RLE: {size: [height, width], counts: str}")
    area: int
    bbox: list[float] = Field(description="[x, y, w, h] as Meta's generator gives it (w, h: last minus first pixel)")
    predicted_iou: float
    stability_score: float
    point_coords: list[list[float]]
    crop_box: list[float]


class GenerateResponse(BaseModel):
    image_id: str
    domain: str = Field(description="the domain whose module ran ('base': the base model, SAM without a module)")
    domain_score: float | None = Field(description="the selector's score for its pick; null when forced or none")
    width: int
    height: int
    count: int = Field(description="masks the generator kept (the answer holds at most max_masks of them)")
    masks: list[GeneratedMask]
    generation: int
    timings: dict[str, float | int]
