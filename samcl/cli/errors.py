"""How the command reports what went wrong: one line on stderr, in the command line's terms.

The library names the argument or config field at fault (`SamclError.field`) and mentions it in its message as
`field 'value'`, `field=True`, or `field` or `field NUMBER` before a `:`, `;`, `)` or the end (or a `,` when
the name cannot be an English word);
`FLAGS`, the one table from fields to flags, turns those mentions into the flag (`runtime 'openvino'` ->
`--runtime openvino`), and every mention of a field whose name cannot be an English word (`ServeConfig.token`,
`points_frame`) whatever the error's field; warnings and notes go through the same table. So the library never
names a flag."""

from __future__ import annotations

import re

from .. import SamclError

#: The library's field (as `SamclError.field` names it) -> the flag that sets it.
FLAGS = {
    "runtime": "--runtime",
    "group_by": "--group-by",
    "precision": "--precision",
    "device": "--device",
    "base": "--base",
    "ServeConfig.base": "--base",
    "refine": "--refine",
    "host": "--host",
    "ServeConfig.token": "--token",
    "replace": "--replace",
    "without_module": "--without-module",
    "rename": "--rename",
    "domains": "--domains",
    "selector": "--selector-file",
    "points_frame": "--points-frame",
    "TrainConfig.lr": "--lr",
    "Prompt": "--point, --negative or --box",
    "BenchmarkConfig.state": "--state",
    "LabelStudioSettings.url": "--label-studio-url",
    "allowed_urls": "--allow-image-url",
    "LabelStudioSettings.allowed_urls": "--allow-image-url",
    "max_learn_tasks": "--learn-max-tasks",
    "max_learn_megapixels": "--learn-max-megapixels",
    "basic_auth": "--label-studio-basic-auth",
    "max_masks": "--label-studio-max-masks",
    # the config fields the command line sets (`shared_flags.config_flag`)
    "TrainConfig.epochs": "--epochs",
    "TrainConfig.batch_size": "--batch-size",
    "TrainConfig.seed": "--seed",
    "TrainConfig.points_per_image": "--points-per-image",
    "TrainConfig.prompts": "--prompts",
    "TrainConfig.amp": "--amp",
    "AugModuleConfig.rank": "--rank",
    "SelectorConfig.block": "--selector-block",
    "SelectorConfig.features": "--selector-features",
    "SelectorConfig.samples_per_domain": "--samples-per-domain",
    "SelectorConfig.epochs": "--selector-epochs",
    "AutoMaskConfig.points_per_side": "--points-per-side",
    "AutoMaskConfig.points_per_batch": "--points-per-batch",
    "AutoMaskConfig.pred_iou_thresh": "--pred-iou-thresh",
    "AutoMaskConfig.stability_score_thresh": "--stability-score-thresh",
    "AutoMaskConfig.stability_score_offset": "--stability-score-offset",
    "AutoMaskConfig.box_nms_thresh": "--box-nms-thresh",
    "AutoMaskConfig.crop_n_layers": "--crop-n-layers",
    "AutoMaskConfig.crop_nms_thresh": "--crop-nms-thresh",
    "AutoMaskConfig.crop_overlap_ratio": "--crop-overlap-ratio",
    "AutoMaskConfig.crop_n_points_downscale_factor": "--crop-n-points-downscale-factor",
    "AutoMaskConfig.min_mask_region_area": "--min-mask-region-area",
    "ServeConfig.host": "--host",
    "ServeConfig.port": "--port",
    "ServeConfig.batch_window_ms": "--batch-window-ms",
    "ServeConfig.max_batch": "--max-batch",
    "ServeConfig.max_megapixels": "--max-megapixels",
    "ServeConfig.body_timeout_seconds": "--body-timeout-seconds",
    "ServeConfig.reload_seconds": "--reload-seconds",
    "ServeConfig.reload_timeout_seconds": "--reload-timeout-seconds",
    "ServeConfig.threads": "--threads",
    "ServeConfig.refine": "--refine",
    "ServeConfig.tracker_max_sessions": "--tracker-max-sessions",
    "ServeConfig.tracker_max_objects": "--tracker-max-objects",
    "ServeConfig.tracker_idle_seconds": "--tracker-idle-seconds",
    "LabelStudioSettings.api_key": "--label-studio-api-key",
    "LabelStudioSettings.basic_auth": "--label-studio-basic-auth",
    "LabelStudioSettings.train_every": "--train-every",
    "LabelStudioSettings.epochs": "--train-epochs",
    "LabelStudioSettings.max_learn_tasks": "--learn-max-tasks",
    "LabelStudioSettings.max_learn_megapixels": "--learn-max-megapixels",
    "LabelStudioSettings.max_masks": "--label-studio-max-masks",
}


def in_flags(message: str, field: str | None) -> str:
    """`message` (an error, a warning, a note) with each mention of `field`, and of every field whose name cannot be
    an English word (`TrainConfig.lr`, `points_frame`), written as its flag."""
    for name in [field] * (field in FLAGS) + [f for f in FLAGS if ("." in f or "_" in f) and f != field]:
        flag = FLAGS[name]
        ends = "[:;,)]" if "." in name or "_" in name else "[:;)]"  # "6 domains, but" is no mention of domains
        mention = re.compile(rf"(?<![\w.-]){re.escape(name)}(?: '([^'\n]*)'| ([-+]?\d[^\s':;,()]*)(?={ends})|=True"
                             rf"|(?={ends}|$))")
        message = mention.sub(lambda m, flag=flag: " ".join([flag, *filter(None, m.groups())][:2]), message)
    return message


def error_line(exc: BaseException) -> str:
    """An error as one line; an OSError from below (permission denied, disk full...) as 'FILE: reason'."""
    if isinstance(exc, OSError) and not isinstance(exc, SamclError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    text = in_flags(str(exc), getattr(exc, "field", None)).strip()
    return text.splitlines()[0] if text else type(exc).__name__
