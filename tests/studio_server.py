"""A stand-in for Label Studio's HTTP side on 127.0.0.1 (a real socket, so the backend's fetcher runs as it runs
against Label Studio: httpx, the token refresh, the 401 retry, the size cap, the deadline).

    with StudioServer(images={"/data/upload/1/a.png": png_bytes}, export=[...]) as studio:
        settings = {"url": studio.url, "api_key": studio.refresh_token}
        ...
        studio.fetched          # paths (with query) of every GET, in order
        studio.authorizations   # the Authorization header of each GET

What it speaks, as Label Studio 1.23 does (label_studio/jwt_auth, data_export, ml/api): POST /api/token/refresh/
{"refresh": PAT} -> {"access": TOKEN}; GET /api/projects/ID/export?exportType=JSON -> the tasks; GET
/api/projects/ID -> the project (404 unless `projects` has it); GET /api/ml?project=ID -> []; files under /data/.
A request with a missing or stale access token (one not issued by the latest refresh) is answered 401.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


def jwt(payload: dict) -> str:
    """A token shaped like Label Studio's personal access token (header.payload.signature)."""
    part = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJIUzI1NiJ9.{part}.c2ln"


class StudioServer:
    def __init__(self, images: dict[str, bytes] | None = None, export: list | None = None,
                 projects: dict[int, dict] | None = None):
        self.images, self.export, self.projects = images or {}, export or [], projects or {}
        self.fetched: list[str] = []
        self.authorizations: list[str | None] = []
        self.refreshes = 0
        self.refresh_token = jwt({"token_type": "refresh", "user_id": 1})
        self.access: str | None = None
        self.expire_next = 0  # answer this many authorized GETs 401 (an access token expired early)
        self.refuse_refresh = False
        self.slow: dict[str, float] = {}  # path -> seconds between bytes (a trickling server)
        self.declared: dict[str, int] = {}  # path -> Content-Length to declare instead of the real one
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def files(self) -> list[str]:
        """The fetched paths under /data/ (task images), in order."""
        return [path for path in self.fetched if path.startswith("/data/")]

    def __enter__(self) -> "StudioServer":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        studio = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def answer(self, status: int, body: bytes, declared: int | None = None, pause: float = 0.0) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body) if declared is None else declared))
                self.end_headers()
                try:
                    if pause:
                        for i in range(len(body)):
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                            time.sleep(pause)
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                if self.path == "/api/token/refresh/":
                    if studio.refuse_refresh or body.get("refresh") != studio.refresh_token:
                        return self.answer(401, b'{"detail": "Token is invalid"}')
                    studio.refreshes += 1
                    studio.access = f"access-{studio.refreshes}"
                    return self.answer(200, json.dumps({"access": studio.access}).encode())
                self.answer(404, b"{}")

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                studio.fetched.append(self.path)
                given = self.headers.get("Authorization")
                studio.authorizations.append(given)
                keyed = parts.path.startswith(("/api/", "/data/"))
                if keyed and given != f"Bearer {studio.access}":
                    return self.answer(401, b'{"detail": "Authentication credentials were not provided."}')
                if keyed and studio.expire_next > 0:
                    studio.expire_next -= 1
                    studio.access = None  # that token is no longer accepted
                    return self.answer(401, b'{"detail": "Given token not valid"}')
                if parts.path.endswith("/export"):
                    return self.answer(200, json.dumps(studio.export).encode())
                if parts.path.startswith("/api/projects/"):
                    project = studio.projects.get(int(parts.path.rstrip("/").rsplit("/", 1)[1]))
                    return self.answer(200 if project else 404, json.dumps(project or {}).encode())
                if parts.path == "/api/ml":
                    return self.answer(200, b"[]")
                data = studio.images.get(self.path, studio.images.get(parts.path))
                if data is None:
                    return self.answer(404, b"not found")
                self.answer(200, data, studio.declared.get(parts.path), studio.slow.get(parts.path, 0.0))

        return Handler
