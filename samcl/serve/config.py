"""What `samcl serve` is told: where the store is, where to listen, who may call, how much it may take."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from .. import SamclError
from ..inference import DEFAULT_REFINE, REFINE
from ..inference import precision as precisions
from ..options import config, option
from ..runtime import CHOICES as RUNTIMES

#: The environment variable that gives the API token when it is not given (a token in a command line is visible
#: to every user of the machine through `ps`).
TOKEN_ENV = "SAMCL_SERVE_TOKEN"
MIB = 1 << 20


@config
class ServeConfig:
    """Settings of one server process: where the store is, where to listen, who may call, how much it may take.
    Sizes in bytes. Every field checks its type and range when the config is made (one line naming it);
    `samcl serve` reads its flags' help, defaults and ranges from these fields."""

    store: Path
    host: str = option("127.0.0.1", "address to listen on; anything but loopback needs a token")
    port: int = option(8000, "TCP port", low=1, high=65535, integer=True)
    token: str | None = option(None, "API token clients send as 'Authorization: Bearer TOKEN' (default: "
                                     f"${TOKEN_ENV}; the variable keeps it out of the process list)")
    device: str | None = option(None, "torch device (default: cuda if available, else cpu)")
    base: str | None = option(None, "the base model (default: the one recorded in the store)")
    batch_window_ms: float = option(5.0, "how long a request waits for others to share its batch", low=0,
                                    high=10_000)
    max_batch: int = option(16, "most requests in one batch; 1 turns cross-request batching off", low=1,
                            high=1024, integer=True)
    cache_bytes: int = option(512 * MIB, "MiB of per-image encoder prefixes kept (least recently used evicted)",
                              low=0, high=MIB * MIB, integer=True)
    max_upload_bytes: int = option(20 * MIB, "largest image upload in MiB", low=0, low_open=True,
                                   high=4096 * MIB, integer=True)
    max_megapixels: float = option(40.0, "largest image in megapixels (refused before decoding)", low=0,
                                   low_open=True, high=1000)
    max_inflight_bytes: int = option(1 << 30, "MiB that all requests in flight may hold together (bodies, and "
                                              "decoded images at 16 to 26 bytes a pixel by format); beyond it a "
                                              "request gets 503 with Retry-After", low=0, low_open=True,
                                     high=MIB * MIB, integer=True)
    body_timeout_seconds: float = option(60.0, "a request body not complete this long after its headers (or "
                                               "silent for 10 s) is answered 408 and its share of the in-flight "
                                               "memory given back", low=0.1, high=3600)
    reload_seconds: float = option(1.0, "how often the store's manifest is checked for a new generation",
                                   low=0.05, high=3600)
    reload_timeout_seconds: float = option(60.0, "a new generation still loading after this long is abandoned "
                                                 "(reported by /healthz); the previous one keeps serving",
                                           low=0.1, high=3600)
    threads: int | None = option(None, "torch threads (default: torch's)", low=1, high=1024, integer=True,
                                 optional=True)
    precision: str | None = option(None, "inference precision of the image encoder (None: the base's own)",
                                   choices=precisions.CHOICES, optional=True)
    fallback: bool = option(True, "images no learned domain fits run on the base (statistics selectors)",
                            choices=(True, False))
    label_studio: dict | None = option(None, "`label_studio.settings.LabelStudioSettings` fields")
    runtime: str = option("torch", "what runs the encoder and decoder (`samcl.runtime`)", choices=RUNTIMES)
    refine: str = option(DEFAULT_REFINE, "which clicks heat the encoder: first (a further click of an object costs "
                                         "only the decoder), all (every click re-runs the adapted blocks), outside "
                                         "(only a click outside the heated region does)", choices=REFINE)
    tracker_max_sessions: int = option(32, "most CVAT tracking sessions live at once (the least recently used is "
                                           "dropped; its states then restart their tracks)", low=1, high=4096,
                                       integer=True)
    tracker_max_objects: int = option(128, "most objects tracked in those sessions together (the least recently "
                                           "used session is dropped)", low=1, high=65_536, integer=True)
    tracker_idle_seconds: float = option(900.0, "a CVAT tracking session unused this long is dropped", low=1,
                                         high=86_400)

    def __post_init__(self) -> None:
        if self.token is None:
            self.token = os.environ.get(TOKEN_ENV) or None
        if not is_loopback(self.host) and not self.token:
            problem = "not a loopback address; serving beyond this machine needs a token"
            raise SamclError(f"host {self.host!r}: {problem} (ServeConfig.token, or the {TOKEN_ENV} environment "
                             "variable)", code="needs_token", field="host")

    @property
    def batch_window_s(self) -> float:
        return self.batch_window_ms / 1000.0

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1_000_000)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and 'localhost' only; a name or 0.0.0.0 reaches (or may reach) other machines."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
