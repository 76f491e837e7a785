"""The Label Studio backend's settings: the server's (flags and environment) and each project's (from the
`extra_params` JSON given in Label Studio's model settings, sent with /setup).

Server: where Label Studio is (LABEL_STUDIO_URL) and its API key (LABEL_STUDIO_API_KEY), the names Label
Studio's own ML backends read; the http(s) prefixes task images may also come from; basic auth (the one
authentication Label Studio sends to an ML backend); learning defaults; pre-annotation (on or off, masks a task).

Project (`extra_params`, all optional), e.g. {"domain": "polyps", "pin": true, "train_every": 20, "epochs": 5}:
  domain       the domain the project's annotations are learned as (default: the project's title, made a valid
               domain name); fixed when the project is first set up (`projects`)
  replace      true: take the domain over from another project or a domain learned elsewhere, or move this
               project to another domain
  pin          true: once the domain is learned, its tasks run its module; false: the selector chooses
  train_every  learn after every N new annotations (default: the server's, 0 = only on Start Training)
  epochs       training epochs (default: the server's)
  automatic    options of the automatic masks a task gets without a context (`AutoMaskConfig`'s names, Meta's
               generator's: points_per_side, pred_iou_thresh, stability_score_thresh, ...; default: Meta's)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ... import SamclError
from ...io import quote
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
    max_learn_tasks: int = 1000  # a project with more annotated tasks is not learned (the reason is reported)
    max_learn_megapixels: float = 400.0  # the task images of one learn, held together
    preannotate: bool = True  # a /predict without a context answers automatic masks (`preannotate`)
    max_masks: int = 20  # most automatic masks a task gets, highest predicted IoU first

    def __post_init__(self) -> None:
        from .urls import checked_url, dot_segments_resolved

        self.url = (self.url or os.environ.get(URL_ENV) or "").rstrip("/") or None
        self.api_key = self.api_key or os.environ.get(KEY_ENV) or None
        self.basic_auth = self.basic_auth or os.environ.get(BASIC_AUTH_ENV) or None
        if self.url is not None and checked_url(self.url) is None:
            rule = "give Label Studio's http(s) address with a valid host and port, e.g. http://localhost:8080"
            raise SamclError(f"LabelStudioSettings.url {self.url!r}: {rule}", field="LabelStudioSettings.url")
        for prefix in self.allowed_urls:
            parts = prefix.split("/")
            rule = None
            if not prefix.startswith(("http://", "https://")) or len(parts) < 4 or not parts[2] or \
                    checked_url(prefix) is None:
                rule = ("give an http(s) prefix with a host and a path, e.g. https://images.example.com/ (the "
                        "trailing / ends the host)")
            elif not prefix.endswith("/") or "?" in prefix or "#" in prefix:
                rule = (f"end it with '/' (a path boundary: {prefix}/ rather than a prefix that also matches "
                        f"{prefix}-private/...)")
            elif dot_segments_resolved(prefix) != prefix:
                rule = "give it without dot segments ('.', '..') or an empty segment ('//')"
            if rule:
                raise SamclError(f"allowed_urls {prefix!r}: {rule}", field="allowed_urls")
        if self.basic_auth is not None:
            user, colon, password = self.basic_auth.partition(":")
            if not colon or not user or not password:
                rule = "give USER:PASSWORD, both non-empty (an empty password would turn the check off)"
                raise SamclError(f"basic_auth: {rule}", field="basic_auth")
        for name, value in (("max_learn_tasks", self.max_learn_tasks), ("max_learn_megapixels",
                                                                         self.max_learn_megapixels)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise SamclError(f"{name} {value!r}: give a number above 0", field=name)
        masks = self.max_masks
        if not isinstance(masks, int) or isinstance(masks, bool) or not 1 <= masks <= MAX_MASKS:
            rule = f"give an integer from 1 to {MAX_MASKS}"
            raise SamclError(f"max_masks {self.max_masks!r}: {rule}", field="max_masks")


#: Longest extra_params text read (Label Studio's field holds a small JSON object).
MAX_EXTRA_CHARS = 64 << 10
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
    replace: bool = False
    fixed: str | None = None  # the domain recorded for this project (`projects.ProjectDomains`)
    automatic: object | None = None  # an AutoMaskConfig (`serve.automatic.generator_config`); None: Meta's defaults

    @property
    def wanted_domain(self) -> str:
        """The domain the project's settings name: its extra_params' "domain", else its title made a name."""
        return self.domain or domain_name(self.title or "", self.project)

    @property
    def domain_name(self) -> str:
        return self.fixed or self.wanted_domain

    def update(self, extra) -> None:
        """Apply a project's `extra_params` (a JSON object or its text); ApiError 400 naming a bad one."""
        if extra in (None, "", {}):
            return
        if isinstance(extra, str):
            from ..intake import parse_json

            if len(extra) > MAX_EXTRA_CHARS:
                raise ApiError(400, "bad_extra_params", f"extra_params: {len(extra):,} characters; at most "
                                                        f"{MAX_EXTRA_CHARS:,}")
            try:
                extra = parse_json(extra.encode("utf-8", "replace"), depth=4)
            except ApiError as exc:
                raise ApiError(400, "bad_extra_params", f"extra_params: {exc.message.removeprefix('body: ')}") \
                    from None
        if not isinstance(extra, dict):
            raise ApiError(400, "bad_extra_params", "extra_params: give a JSON object")
        unknown = sorted(set(extra) - {"domain", "pin", "train_every", "epochs", "replace", "automatic"})
        if unknown:
            raise ApiError(400, "bad_extra_params", f"extra_params: unknown setting {quote(unknown[0])} (known: "
                                                    "domain, pin, train_every, epochs, replace, automatic)")
        if "automatic" in extra:
            from ..automatic import generator_config

            self.automatic = generator_config(extra["automatic"], field="extra_params.automatic",
                                              code="bad_extra_params")
        if "domain" in extra:
            value = extra["domain"]
            if not isinstance(value, str) or domain_name(value, self.project) != value:
                raise ApiError(400, "bad_extra_params", f"extra_params.domain {quote(value)}: use letters, digits, "
                                                        "'_', '.', '-' (max 64), not 'base'")
            self.domain = value
        for key in ("pin", "replace"):
            if key in extra:
                if not isinstance(extra[key], bool):
                    raise ApiError(400, "bad_extra_params", f"extra_params.{key}: true or false")
                setattr(self, key, extra[key])
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
    if not (head.isascii() and head.isdigit()) or len(head) > 18:  # a 5,000-digit id is not a project
        raise ApiError(400, "bad_project", f"project {text[:40]!r}: expected Label Studio's 'ID.TIMESTAMP'")
    return int(head)

