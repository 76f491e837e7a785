"""Task images and project data from Label Studio, and images from an explicit allow-list of http(s) prefixes.

    source = LabelStudioSource(settings)
    data = await source.fetch("/data/upload/3/1a2b-photo.png")      # Label Studio's upload: its URL + API key
    tasks = await source.annotated_tasks(project_id)                # for learning

A task's image URL is fetched only if it is Label Studio's (a path such as /data/upload/... or /data/local-files/
?d=..., or an absolute URL on LABEL_STUDIO_URL's origin: sent with the API key) or starts with an allow-listed
prefix (sent without credentials). Anything else (another host, s3://, file:, data:) is refused before any
connection is made; a URL whose host or port does not parse is a 400 `bad_url`, and dot segments are resolved
before the prefix is compared (`urls`). Redirects are not followed (one could lead off the allow-list), a body is
read only up to the server's upload limit, and a whole fetch (connecting, the token refresh, every byte) ends
within `deadline_s` (a 504 `fetch_timeout` after it: a server sending 1 byte a second cannot hold a request).

The API key: a personal access token (Label Studio 1.23's default; it is a JWT refresh token, exchanged at
/api/token/refresh for short-lived access tokens) or a legacy token (sent as `Token KEY`; 1.23 refuses these
unless the organization enables them).
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

from ...io import quote
from ..errors import ApiError
from ..intake import parse_json
from .settings import LabelStudioSettings
from .urls import dot_segments_resolved, origin

#: Seconds an access token obtained from a personal access token is used (Label Studio issues 5-minute ones).
ACCESS_TOKEN_SECONDS = 240
#: Seconds one whole fetch may take (an image, a project's data; the export has `EXPORT_DEADLINE_S`).
FETCH_DEADLINE_S = 60.0
EXPORT_DEADLINE_S = 300.0
#: Largest project export read (JSON; parsed in a thread, about twice its size as Python objects).
MAX_EXPORT_BYTES = 128 << 20


def _is_jwt(key: str) -> bool:
    return key.count(".") == 2 and all(key.split("."))


class LabelStudioSource:
    def __init__(self, settings: LabelStudioSettings, max_bytes: int, timeout_s: float = 30.0,
                 deadline_s: float = FETCH_DEADLINE_S):
        self.settings, self.max_bytes, self.timeout_s, self.deadline_s = settings, max_bytes, timeout_s, deadline_s
        self._access: tuple[str, float] | None = None
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ where a URL may go
    def resolve(self, url) -> tuple[str, bool]:
        """(absolute URL, whether it goes to Label Studio with the key); ApiError 400 for a URL not allowed."""
        if not isinstance(url, str) or not url:
            raise ApiError(400, "no_image_url", "the task's image field is empty or not a string")
        base = self.settings.url
        if url.startswith("/") and not url.startswith("//"):
            if not base:
                raise ApiError(400, "no_label_studio_url", f"image {url[:120]!r} is a Label Studio path, but this "
                                                           "server has no Label Studio URL (LabelStudioSettings.url, "
                                                           "or LABEL_STUDIO_URL)")
            url = base.rstrip("/") + url
        try:
            scheme = urlsplit(url).scheme.lower()
        except ValueError:  # "http://[::1/x"
            raise ApiError(400, "bad_url", f"image URL {quote(url, 120)}: its host or port does not parse") \
                from None
        if scheme in ("http", "https"):
            resolved = dot_segments_resolved(url)
            if resolved is None:
                raise ApiError(400, "bad_url", f"image URL {quote(url, 120)}: its host or port does not parse")
            if base and origin(resolved) == origin(base):
                return resolved, True
            if any(resolved.startswith(prefix) for prefix in self.settings.allowed_urls):
                return resolved, False
        raise ApiError(400, "url_not_allowed", f"image URL {url[:120]!r} is neither Label Studio's nor on this "
                                               "server's allow-list (LabelStudioSettings.allowed_urls): not fetched")

    # ------------------------------------------------------------------ credentials
    async def _auth_header(self, client, refresh: bool = False) -> dict:
        key = self.settings.api_key
        if not key:
            return {}
        if not _is_jwt(key):
            return {"Authorization": f"Token {key}"}
        async with self._lock:
            if refresh or self._access is None or self._access[1] < time.monotonic():
                url = self.settings.url.rstrip("/") + "/api/token/refresh/"
                response = await client.post(url, json={"refresh": key})
                if response.status_code != 200 or "access" not in response.json():
                    raise ApiError(502, "label_studio_auth", f"Label Studio refused the API key at /api/token/"
                                                             f"refresh ({response.status_code}): check "
                                                             "LABEL_STUDIO_API_KEY (a personal access token)")
                self._access = (response.json()["access"], time.monotonic() + ACCESS_TOKEN_SECONDS)
            return {"Authorization": f"Bearer {self._access[0]}"}

    async def _get(self, url: str, with_key: bool, limit: int) -> bytes:
        import httpx

        async with httpx.AsyncClient(follow_redirects=False, timeout=self.timeout_s) as client:
            for attempt in range(2):
                headers = await self._auth_header(client, refresh=attempt > 0) if with_key else {}
                async with client.stream("GET", url, headers=headers) as response:
                    if response.status_code == 401 and with_key and attempt == 0:
                        continue  # an access token that expired early: refresh it once
                    if response.status_code != 200:
                        raise ApiError(502, "fetch_failed", f"{url[:160]}: answered {response.status_code}")
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > limit:
                        raise ApiError(413, "image_too_large", f"{url[:160]}: {int(declared):,} bytes exceeds this "
                                                               f"server's limit of {limit:,} bytes")
                    chunks, seen = [], 0
                    async for chunk in response.aiter_bytes():
                        seen += len(chunk)
                        if seen > limit:
                            raise ApiError(413, "image_too_large", f"{url[:160]}: exceeds this server's limit of "
                                                                   f"{limit:,} bytes")
                        chunks.append(chunk)
                    return b"".join(chunks)
        raise ApiError(502, "fetch_failed", f"{url[:160]}: Label Studio refused the API key")

    async def _get_within(self, url: str, with_key: bool, limit: int, deadline_s: float) -> bytes:
        """`_get` ended after `deadline_s` seconds in all: ApiError 504 `fetch_timeout`."""
        try:
            return await asyncio.wait_for(self._get(url, with_key, limit), deadline_s)
        except (asyncio.TimeoutError, TimeoutError):
            raise ApiError(504, "fetch_timeout", f"{url[:160]}: not fetched within {deadline_s:g} s") from None

    async def fetch(self, url: str, limit: int | None = None) -> bytes:
        target, with_key = self.resolve(url)
        try:
            return await self._get_within(target, with_key, limit or self.max_bytes, self.deadline_s)
        except ApiError:
            raise
        except Exception as exc:  # connection refused, DNS, timeout, a broken stream
            raise ApiError(502, "fetch_failed", f"{target[:160]}: {type(exc).__name__}: "
                                                f"{' '.join(str(exc).split())[:160]}") from None

    async def get_json(self, path: str, limit: int = 1 << 24, deadline_s: float | None = None):
        if not self.settings.url:
            raise ApiError(400, "no_label_studio_url", "this needs the Label Studio URL (LabelStudioSettings.url, or "
                                                       "LABEL_STUDIO_URL) and API key")
        url = f"{self.settings.url.rstrip('/')}{path}"
        try:
            data = await self._get_within(url, True, limit, deadline_s or self.deadline_s)
        except ApiError:
            raise
        except Exception as exc:  # connection refused, timeout
            raise ApiError(502, "fetch_failed", f"{url}: {type(exc).__name__}: "
                                                f"{' '.join(str(exc).split())[:160]}") from None
        try:  # parsed in a thread with the depth limit: an export is large
            return await asyncio.get_running_loop().run_in_executor(None, parse_json, data)
        except ApiError as exc:
            raise ApiError(502, "fetch_failed", f"{url}: Label Studio's answer is not usable JSON "
                                                f"({exc.message})") from None

    async def project(self, number: int) -> dict | None:
        """A project's title, labeling config and this backend's extra_params, from Label Studio (None when it
        cannot be asked or does not answer)."""
        if not self.settings.url or not self.settings.api_key:
            return None
        try:
            project = await self.get_json(f"/api/projects/{int(number)}", 1 << 24)
            backends = await self.get_json(f"/api/ml?project={int(number)}", 1 << 24)
        except ApiError:
            return None
        extra = next((b.get("extra_params") for b in backends if isinstance(b, dict) and
                      str(b.get("url", "")).rstrip("/").endswith("/label-studio")), None) \
            if isinstance(backends, list) else None
        return {"title": project.get("title"), "label_config": project.get("label_config"), "extra_params": extra}

    async def annotated_tasks(self, project: int) -> list[dict]:
        """Every task of `project` with at least one annotation, as Label Studio's JSON export gives them."""
        tasks = await self.get_json(f"/api/projects/{int(project)}/export?exportType=JSON", MAX_EXPORT_BYTES,
                                    deadline_s=max(self.deadline_s, EXPORT_DEADLINE_S))
        if not isinstance(tasks, list):
            raise ApiError(502, "fetch_failed", f"project {project}'s export is not a list of tasks")
        return tasks
