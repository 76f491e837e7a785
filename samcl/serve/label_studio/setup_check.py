"""What Label Studio's "Connect Model" (POST /setup) refuses: a connection under which every later prediction
would fail. Label Studio shows the 400's message on Connect Model; a prediction's error it keeps in its own log,
where the annotator never sees it (a smart click just shows no mask).

    tags = check_setup(settings, label_config)     # ApiError 400 with the reason, else the config's tags

Refused:
- no way to fetch the project's images: a task's image is one of Label Studio's uploads or local files, which
  Label Studio serves only to a logged-in user, so the server needs Label Studio's URL and an API key
  (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY), unless it may fetch images from an allow-listed http(s) prefix;
- a labeling config samcl cannot answer (no Image tag, no BrushLabels or PolygonLabels on it: `Tags.of`).
"""

from __future__ import annotations

from ..errors import ApiError
from .labels import Tags
from .settings import KEY_ENV, URL_ENV, LabelStudioSettings


def check_setup(settings: LabelStudioSettings, label_config: str | None) -> Tags:
    """The tags of `label_config`, or ApiError 400 naming why no prediction for the project could succeed."""
    tags = Tags.of(label_config)
    if settings.allowed_urls:  # images may come from there, without Label Studio's key
        return tags
    if not settings.url:
        raise ApiError(400, "no_label_studio_url", f"this server has no Label Studio URL ({URL_ENV}), so it cannot "
                                                   "fetch any task's image: restart it with the URL Label Studio runs "
                                                   f"at and {KEY_ENV} (a personal access token)")
    if not settings.api_key:
        raise ApiError(400, "no_label_studio_key", f"this server has no Label Studio API key ({KEY_ENV}), and Label "
                                                   f"Studio at {settings.url} serves task images to a logged-in user "
                                                   "only: restart it with a personal access token (Account & "
                                                   "Settings)")
    return tags
