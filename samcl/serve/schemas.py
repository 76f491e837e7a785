"""The API's request and response bodies (they are also its OpenAPI schema, at /openapi.json and /docs)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

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


class _GenerateRequest(BaseModel):
    """Automatic masks of one image (Meta's `SamAutomaticMaskGenerator` options, by their names; an option left out
    takes Meta's default, see `samcl.inference.automatic.AutoMaskConfig`)."""

    model_config = ConfigDict(extra="forbid")

    image_id: str | None = Field(None, description="id from POST /v1/images")
    image: str | None = Field(None, description="the image file inline, base64 (used when image_id is absent or no "
                                                "longer cached; needed with crop_n_layers > 0: crops are encoded anew)")
    force: str | None = Field(None, description="run this domain's module ('base': none); default: the selector "
                                                 "chooses")
    max_masks: int = Field(100, ge=1, le=1000, description="answer at most this many masks (the first ones, best "
                                                           "predicted IoU first within a crop)")


def _generator_options() -> dict:
    """`AutoMaskConfig`'s options as request fields (left out: None, Meta's default): the field's help and default,
    its JSON type strictly; its range is AutoMaskConfig's own check (a 422 naming the field, `api.auto_config`)."""
    import dataclasses

    from ..inference import AutoMaskConfig

    options = {}
    for field in dataclasses.fields(AutoMaskConfig):
        if field.name != "output_mode":
            numeric = AutoMaskConfig.__pydantic_fields__[field.name].annotation
            kind = Coordinate if numeric is float else Annotated[int, Field(strict=True)]
            options[field.name] = (kind | None, Field(None, description=f"{field.metadata['help']} (default: "
                                                                        f"{field.default:g})"))
    return options


GenerateRequest = create_model("GenerateRequest", __base__=_GenerateRequest, __doc__=_GenerateRequest.__doc__,
                               **_generator_options())


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
