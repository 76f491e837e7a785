"""Flags of `samcl serve`: the HTTP server's (`ServeConfig`'s defaults) and its Label Studio backend's."""

from __future__ import annotations

from pathlib import Path

from . import flags as t
from .runtime_flags import add_runtime
from .shared_flags import add_base, add_precision, defaults

MAX_EPOCHS = 100_000


def add_serve(p) -> None:
    from ..serve import TOKEN_ENV, ServeConfig

    d = defaults(ServeConfig)
    p.add_argument("store", type=Path, help="module-set directory (only read; a learn into it is picked up)")
    p.add_argument("--host", default=d["host"],
                   help=f"address to listen on; anything but loopback needs a token (--token or ${TOKEN_ENV})")
    p.add_argument("--port", type=t.int_range(1, 65535), default=d["port"], help="TCP port")
    p.add_argument("--token", default=None,
                   help=f"API token clients send as 'Authorization: Bearer TOKEN' (default: ${TOKEN_ENV}; "
                        "the variable keeps it out of the process list)")
    p.add_argument("--workers", type=t.int_range(1, 256), default=1,
                   help="server processes sharing the port (each opens the store and has its own cache)")
    p.add_argument("--batch-window-ms", type=t.float_range(0, 1000), default=d["batch_window_ms"],
                   help="how long a request waits for others to share its batch")
    p.add_argument("--max-batch", type=t.int_range(1, 1024), default=d["max_batch"],
                   help="most requests in one batch; 1 turns cross-request batching off")
    p.add_argument("--cache-mb", type=t.float_range(0, 1 << 20), default=d["cache_bytes"] / 2**20,
                   help="MiB of per-image encoder prefixes kept (least recently used evicted)")
    p.add_argument("--max-upload-mb", type=t.float_range(0, 4096, low_open=True), default=d["max_upload_bytes"] / 2**20,
                   help="largest image upload in MiB")
    p.add_argument("--max-megapixels", type=t.float_range(0, 1000, low_open=True), default=d["max_megapixels"],
                   help="largest image in megapixels (refused before decoding)")
    p.add_argument("--max-inflight-mb", type=t.float_range(0, 1 << 20, low_open=True),
                   default=d["max_inflight_bytes"] / 2**20,
                   help="MiB that all requests in flight may hold together (bodies, and decoded images at "
                        "16 to 26 bytes a pixel by format); beyond it a request gets 503 with Retry-After")
    p.add_argument("--body-timeout-seconds", type=t.float_range(0.1, 3600), default=d["body_timeout_seconds"],
                   help="a request body not complete this long after its headers (or silent for 10 s) is "
                        "answered 408 and its share of --max-inflight-mb given back")
    p.add_argument("--reload-seconds", type=t.float_range(0.05, 3600), default=d["reload_seconds"],
                   help="how often the store's manifest is checked for a new generation")
    p.add_argument("--reload-timeout-seconds", type=t.float_range(0.1, 3600), default=d["reload_timeout_seconds"],
                   help="a new generation still loading after this long is abandoned (reported by /healthz); "
                        "the previous one keeps serving")
    p.add_argument("--threads", type=t.int_range(1, 1024), default=None, help="torch threads (default: torch's)")
    p.add_argument("--no-fallback", action="store_true",
                   help="always run the selector's nearest domain, even for images no learned domain fits")
    p.add_argument("--refine", choices=["first", "all", "outside"], default=d["refine"],
                   help="which clicks heat the encoder: first (a further click of an object costs only the "
                        "decoder), all (every click re-runs the adapted blocks), outside (only a click outside the "
                        "heated region does)")
    add_precision(p)
    add_runtime(p)
    add_base(p, "default: the one recorded in the store")
    _label_studio(p.add_argument_group("Label Studio ML backend (at /label-studio)"))


def _label_studio(ls) -> None:
    """`samcl serve`'s flags for the Label Studio backend (into the argument group `ls`)."""
    ls.add_argument("--label-studio-url", metavar="URL", default=None,
                    help="Label Studio's address, for task images and learning (default: $LABEL_STUDIO_URL)")
    ls.add_argument("--label-studio-api-key", metavar="KEY", default=None,
                    help="a personal access token of Label Studio (default: $LABEL_STUDIO_API_KEY, which keeps it "
                         "out of the process list)")
    ls.add_argument("--allow-image-url", metavar="PREFIX", action="append", default=[],
                    help="task images may also come from URLs starting with this http(s) prefix (repeatable); "
                         "any other URL is refused without a fetch")
    ls.add_argument("--label-studio-basic-auth", metavar="USER:PASSWORD", default=None,
                    help="basic auth Label Studio must send (default: $SAMCL_LS_BASIC_AUTH; without it a server "
                         "with --token takes the token as the basic-auth password)")
    ls.add_argument("--train-every", metavar="N", type=t.int_range(0, 1_000_000), default=0,
                    help="learn a project after every N new annotations (0: only on Start Training)")
    ls.add_argument("--train-epochs", metavar="N", type=t.int_range(1, MAX_EPOCHS), default=5,
                    help="epochs of a project's learn (a project's extra_params may set its own)")
    ls.add_argument("--learn-max-tasks", metavar="N", type=t.int_range(1, 1_000_000), default=1000,
                    help="most annotated tasks a project's learn takes (more: the learn fails, saying so)")
    ls.add_argument("--learn-max-megapixels", metavar="MP", type=t.float_range(0, 100_000, low_open=True),
                    default=400.0, help="most megapixels of task images a project's learn holds together")
    ls.add_argument("--label-studio-preannotate", choices=("on", "off"), default="on",
                    help="a /predict without a context (a task opened) gets automatic masks; off: none")
    ls.add_argument("--label-studio-max-masks", metavar="N", type=t.int_range(1, 1000), default=20,
                    help="most automatic masks a task gets, highest predicted IoU first")
