"""Flags of `samcl serve`: the HTTP server's (`ServeConfig`'s fields) and its Label Studio backend's
(`LabelStudioSettings`'s), each with the help, default and range of its field."""

from __future__ import annotations

from pathlib import Path

from ..options import field_of, help_of
from . import flags as t
from .runtime_flags import add_runtime
from .shared_flags import add_base, add_precision, config_flag

MAX_EPOCHS = 100_000  # (the benchmark's --epochs)
MIB = 1 << 20  # the flags' sizes are in MiB, `ServeConfig`'s in bytes


def add_serve(p) -> None:
    """`samcl serve`'s flags: `ServeConfig`'s fields (help, default and range read from them)."""
    from ..serve import TOKEN_ENV, ServeConfig

    p.add_argument("store", type=Path, help="module-set directory (only read; a learn into it is picked up)")
    config_flag(p, "--host", ServeConfig, "host", extra=f"(--token or ${TOKEN_ENV})")
    config_flag(p, "--port", ServeConfig, "port")
    config_flag(p, "--token", ServeConfig, "token")
    # by hand: how many processes serve is `serve()`'s argument, not a setting of one process (`ServeConfig`)
    p.add_argument("--workers", type=t.int_range(1, 256), default=1,
                   help="server processes sharing the port (each opens the store and has its own cache; 1 to 256)")
    config_flag(p, "--batch-window-ms", ServeConfig, "batch_window_ms")
    config_flag(p, "--max-batch", ServeConfig, "max_batch")
    config_flag(p, "--cache-mb", ServeConfig, "cache_bytes", scale=MIB, dest="cache_mb")
    config_flag(p, "--max-upload-mb", ServeConfig, "max_upload_bytes", scale=MIB, dest="max_upload_mb")
    config_flag(p, "--max-megapixels", ServeConfig, "max_megapixels")
    config_flag(p, "--max-inflight-mb", ServeConfig, "max_inflight_bytes", scale=MIB, dest="max_inflight_mb")
    config_flag(p, "--body-timeout-seconds", ServeConfig, "body_timeout_seconds")
    config_flag(p, "--reload-seconds", ServeConfig, "reload_seconds")
    config_flag(p, "--reload-timeout-seconds", ServeConfig, "reload_timeout_seconds")
    config_flag(p, "--threads", ServeConfig, "threads")
    config_flag(p, "--no-fallback", ServeConfig, "fallback", extra="always run the selector's nearest domain")
    config_flag(p, "--refine", ServeConfig, "refine")
    config_flag(p, "--tracker-max-sessions", ServeConfig, "tracker_max_sessions")
    config_flag(p, "--tracker-max-objects", ServeConfig, "tracker_max_objects")
    config_flag(p, "--tracker-idle-seconds", ServeConfig, "tracker_idle_seconds")
    # by hand, shared with segment, eval and track: every command's default is auto, ServeConfig's the library's
    # (precision None: the base's own; runtime torch)
    add_precision(p)
    add_runtime(p)
    add_base(p, "default: the one recorded in the store")
    _label_studio(p.add_argument_group("Label Studio ML backend (at /label-studio)"))


def _label_studio(ls) -> None:
    """`samcl serve`'s flags for the Label Studio backend (into the argument group `ls`): `LabelStudioSettings`'s
    fields."""
    from ..serve import LabelStudioSettings as S

    config_flag(ls, "--label-studio-url", S, "url", metavar="URL", dest="label_studio_url")
    config_flag(ls, "--label-studio-api-key", S, "api_key", metavar="KEY", dest="label_studio_api_key")
    config_flag(ls, "--allow-image-url", S, "allowed_urls", metavar="PREFIX", action="append", default=[],
                dest="allow_image_url", extra="(repeatable)")
    config_flag(ls, "--label-studio-basic-auth", S, "basic_auth", metavar="USER:PASSWORD",
                dest="label_studio_basic_auth")
    config_flag(ls, "--train-every", S, "train_every", metavar="N")
    config_flag(ls, "--train-epochs", S, "epochs", metavar="N", dest="train_epochs")
    config_flag(ls, "--learn-max-tasks", S, "max_learn_tasks", metavar="N", dest="learn_max_tasks")
    config_flag(ls, "--learn-max-megapixels", S, "max_learn_megapixels", metavar="MP", dest="learn_max_megapixels")
    # by hand: the field's bool spelled on/off (help and default still the field's)
    ls.add_argument("--label-studio-preannotate", choices=("on", "off"),
                    default="on" if field_of(S, "preannotate").default else "off", help=help_of(S, "preannotate"))
    config_flag(ls, "--label-studio-max-masks", S, "max_masks", metavar="N", dest="label_studio_max_masks")
