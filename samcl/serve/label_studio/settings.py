"""The Label Studio backend's settings: the server's (flags and environment) and each project's (from the
`extra_params` JSON given in Label Studio's model settings, sent with /setup).

Server: where Label Studio is (LABEL_STUDIO_URL) and its API key (LABEL_STUDIO_API_KEY), the names Label
Studio's own ML backends read; the http(s) prefixes task images may also come from; basic auth (the one
authentication Label Studio sends to an ML backend); learning defaults; pre-annotation (on or off, masks a task).

Project (`extra_params`, all optional), e.g. {"domain": "polyps", "pin": true, "train_every": 20, "epochs": 5}:
  domain       the domain the project's annotations are learned as (default: the project's title, made a valid
               domain name)
  pin          true: once the domain is learned, its tasks run its module; false: the selector chooses
  train_every  learn after every N new annotations (default: the server's, 0 = only on Start Training)
  epochs       training epochs (default: the server's)
  automatic    options of the automatic masks a task gets without a context (`AutoMaskConfig`'s names, Meta's
               generator's: points_per_side, pred_iou_thresh, stability_score_thresh, ...; default: Meta's)
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from ... import SamclError
from ..errors import ApiError

URL_ENV, KEY_ENV, BASIC_AUTH_ENV = "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "SAMCL_LS_BASIC_AUTH"
#: Most automatic masks one task may be given (`max_masks`).
MAX_MASKS = 1000


@dataclass
class LabelStudioSettings:
    url: str | None = None
    api_key: str | None = None
    allowed_urls: list[str] = field(default_factory=list)
    basic_auth: str | None = None  # "USER:PASSWORD"
    train_every: int = 0  # 0: learn only on Start Training
    epochs: int = 5
    batch_size: int = 4
    seed: int = 0
    preannotate: bool = True  # a /predict without a context answers automatic masks (`preannotate`)
    max_masks: int = 20  # most automatic masks a task gets, highest predicted IoU first

    def __post_init__(self) -> None:
        self.url = (self.url or os.environ.get(URL_ENV) or "").rstrip("/") or None
        self.api_key = self.api_key or os.environ.get(KEY_ENV) or None
        self.basic_auth = self.basic_auth or os.environ.get(BASIC_AUTH_ENV) or None
        for prefix in self.allowed_urls:
            parts = prefix.split("/")
            if not prefix.startswith(("http://", "https://")) or len(parts) < 4 or not parts[2]:
                rule = ("give an http(s) prefix with a host and a path, e.g. https://images.example.com/ (the "
                        "trailing / ends the host)")
                raise SamclError(f"allowed_urls {prefix!r}: {rule}", cli=f"--allow-image-url {prefix}: {rule}")
        masks = self.max_masks
        if not isinstance(masks, int) or isinstance(masks, bool) or not 1 <= masks <= MAX_MASKS:
            rule = f"give an integer from 1 to {MAX_MASKS}"
            raise SamclError(f"max_masks {self.max_masks!r}: {rule}", cli=f"--label-studio-max-masks: {rule}")
        if self.basic_auth is not None and ":" not in self.basic_auth:
            raise SamclError("basic_auth: give USER:PASSWORD", cli="--label-studio-basic-auth: give USER:PASSWORD")


_NOT_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def domain_name(title: str, project: int) -> str:
    """A project title as a domain name (letters, digits, '_', '.', '-'; at most 64; starting with one of the
    first two): "Polyps (Kvasir)" -> "Polyps_Kvasir"; a title with none of them -> "project-ID"."""
    name = _NOT_NAME.sub("_", title or "").strip("_.-")[:64].rstrip("_.-")
    return name if name and name != "base" else f"project-{project}"


@dataclass
class ProjectSettings:
    project: int
    label_config: str | None = None
    title: str | None = None
    domain: str | None = None
    pin: bool = True
    train_every: int | None = None
    epochs: int | None = None
    automatic: object | None = None  # an AutoMaskConfig (`serve.automatic.generator_config`); None: Meta's defaults

    @property
    def domain_name(self) -> str:
        return self.domain or domain_name(self.title or "", self.project)

    def update(self, extra) -> None:
        """Apply a project's `extra_params` (a JSON object or its text); ApiError 400 naming a bad one."""
        if extra in (None, "", {}):
            return
        if isinstance(extra, str):
            try:
                extra = json.loads(extra)
            except json.JSONDecodeError as exc:
                raise ApiError(400, "bad_extra_params", f"extra_params: not JSON ({exc})") from None
        if not isinstance(extra, dict):
            raise ApiError(400, "bad_extra_params", "extra_params: give a JSON object")
        unknown = sorted(set(extra) - {"domain", "pin", "train_every", "epochs", "automatic"})
        if unknown:
            raise ApiError(400, "bad_extra_params", f"extra_params: unknown setting {unknown[0]!r} (known: domain, "
                                                    "pin, train_every, epochs, automatic)")
        if "automatic" in extra:
            from ..automatic import generator_config

            self.automatic = generator_config(extra["automatic"], field="extra_params.automatic",
                                              code="bad_extra_params")
        if "domain" in extra:
            value = extra["domain"]
            if not isinstance(value, str) or domain_name(value, self.project) != value:
                raise ApiError(400, "bad_extra_params", f"extra_params.domain {value!r}: use letters, digits, '_', "
                                                        "'.', '-' (max 64), not 'base'")
            self.domain = value
        if "pin" in extra:
            if not isinstance(extra["pin"], bool):
                raise ApiError(400, "bad_extra_params", "extra_params.pin: true or false")
            self.pin = extra["pin"]
        for key, top in (("train_every", 1_000_000), ("epochs", 1000)):
            if key in extra:
                value = extra[key]
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
                    raise ApiError(400, "bad_extra_params", f"extra_params.{key}: an integer 0..{top}")
                setattr(self, key, value)


def project_id(value) -> int:
    """Label Studio names a project "ID.CREATED" in ML requests ("3.1764630000"), or by its number."""
    text = str(value if value is not None else "")
    head = text.split(".", 1)[0]
    if not head.isdigit():
        raise ApiError(400, "bad_project", f"project {text[:40]!r}: expected Label Studio's 'ID.TIMESTAMP'")
    return int(head)

