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
from dataclasses import dataclass
from typing import Any

from ... import SamclError
from ...io import quote
from ...options import ConfigError, config, option
from ..errors import ApiError

URL_ENV, KEY_ENV, BASIC_AUTH_ENV = "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "SAMCL_LS_BASIC_AUTH"
#: Most automatic masks one task may be given (`max_masks`).
MAX_MASKS = 1000


@config
class LabelStudioSettings:
    """The Label Studio backend's server settings (module docstring); `samcl serve` reads its Label Studio flags'
    help, defaults and ranges from these fields. The address, key and basic auth come from the environment when
    not given."""

    url: str | None = option(None, f"Label Studio's address, for task images and learning (default: ${URL_ENV})")
    api_key: str | None = option(None, f"a personal access token of Label Studio (default: ${KEY_ENV}, which keeps "
                                       "it out of the process list)")
    allowed_urls: list[str] = option(help="task images may also come from URLs starting with these http(s) "
                                          "prefixes; any other URL is refused without a fetch", factory=list)
    basic_auth: str | None = option(None, f"basic auth Label Studio must send, as USER:PASSWORD (default: "
                                          f"${BASIC_AUTH_ENV}; without it a server with a token takes the token as "
                                          "the basic-auth password)")
    train_every: int = option(0, "learn a project after every N new annotations (0: only on Start Training)",
                              low=0, high=1_000_000, integer=True)
    epochs: int = option(5, "epochs of a project's learn (a project's extra_params may set its own)", low=1,
                         high=100_000, integer=True)
    batch_size: int = option(4, "batch of a project's learn", low=1, high=4096, integer=True)
    seed: int = option(0, "seed of a project's learn", low=0, high=2**32 - 1, integer=True)
    max_learn_tasks: int = option(1000, "most annotated tasks a project's learn takes (more: the learn fails, "
                                        "saying so)", low=1, high=1_000_000, integer=True)
    max_learn_megapixels: float = option(400.0, "most megapixels of task images a project's learn holds together",
                                         low=0, low_open=True, high=100_000)
    preannotate: bool = option(True, "a /predict without a context (a task opened) gets automatic masks; off: none",
                               choices=(True, False))
    max_masks: int = option(20, "most automatic masks a task gets, highest predicted IoU first", low=1,
                            high=MAX_MASKS, integer=True)

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
        try:
            params = ProjectParams(**extra)
        except ConfigError as exc:
            raise ApiError(400, "bad_extra_params", str(exc)) from None
        if "automatic" in extra:
            from ..automatic import generator_config

            self.automatic = generator_config(extra["automatic"], field="extra_params.automatic",
                                              code="bad_extra_params")
        for key in ("domain", "pin", "replace", "train_every", "epochs"):
            if key in extra:
                setattr(self, key, getattr(params, key))


@config(frozen=True, name="extra_params")
class ProjectParams:
    """A project's settings as its `extra_params` gives them (the module docstring); None: not given (an explicit
    null is refused). `automatic` is checked by `serve.automatic.generator_config` (AutoMaskConfig's fields)."""

    domain: str = option(None, "the domain the project's annotations are learned as")
    pin: bool = option(None, "once the domain is learned, its tasks run its module", choices=(True, False))
    replace: bool = option(None, "take the domain over, or move this project to another domain",
                           choices=(True, False))
    train_every: int = option(None, "learn after every N new annotations (0: only on Start Training)", low=0,
                              high=1_000_000, integer=True)
    epochs: int = option(None, "training epochs (0: the server's)", low=0, high=1000, integer=True)
    automatic: Any = None

    def __post_init__(self):
        if self.domain is not None and domain_name(self.domain, 0) != self.domain:
            raise ConfigError(f"extra_params.domain {quote(self.domain)}: use letters, digits, '_', '.', '-' "
                              "(max 64), not 'base'", field="extra_params.domain")


def project_id(value) -> int:
    """Label Studio names a project "ID.CREATED" in ML requests ("3.1764630000"), or by its number."""
    text = str(value if value is not None else "")
    head = text.split(".", 1)[0]
    if not (head.isascii() and head.isdigit()) or len(head) > 18:  # a 5,000-digit id is not a project
        raise ApiError(400, "bad_project", f"project {text[:40]!r}: expected Label Studio's 'ID.TIMESTAMP'")
    return int(head)

