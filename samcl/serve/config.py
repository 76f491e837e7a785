"""What `samcl serve` is told: where the store is, where to listen, who may call, how much it may take."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from .. import SamclError
from ..inference import DEFAULT_REFINE, REFINE

#: The environment variable that gives the API token when --token is not on the command line (a token in a
#: command line is visible to every user of the machine through `ps`).
TOKEN_ENV = "SAMCL_SERVE_TOKEN"


@dataclass
class ServeConfig:
    """Settings of one server process. Sizes in bytes; `batch_window_ms`: how long the first request of a batch
    waits for others to join it; `max_batch` 1 turns cross-request batching off."""

    store: Path
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    device: str | None = None
    base: str | None = None
    batch_window_ms: float = 5.0
    max_batch: int = 16
    cache_bytes: int = 512 << 20
    max_upload_bytes: int = 20 << 20
    max_megapixels: float = 40.0
    max_inflight_bytes: int = 1 << 30  # bodies and decoded images of all requests in flight together
    body_timeout_seconds: float = 60.0  # a request body not complete this long after its headers: 408
    reload_seconds: float = 1.0
    reload_timeout_seconds: float = 60.0  # a new generation still loading after this is abandoned
    threads: int | None = None
    precision: str | None = None  # None: the base's own (float32); "auto", "float32", "bfloat16"
    fallback: bool = True  # images no learned domain fits run on the base (statistics selectors)
    label_studio: dict | None = None  # `label_studio.settings.LabelStudioSettings` fields (flags; env otherwise)
    runtime: str = "torch"  # what runs the encoder and decoder: torch, onnxruntime, openvino, auto (`samcl.runtime`)
    refine: str = DEFAULT_REFINE  # which clicks heat the encoder (`samcl.inference.refine`): a further click of
    # an object whose first prompt the image keeps runs the decoder alone

    def __post_init__(self) -> None:
        if self.refine not in REFINE:
            raise SamclError(f"refine {self.refine!r}: expected one of {', '.join(REFINE)}",
                             field="refine")
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
