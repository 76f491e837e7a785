"""The ML-backend protocol as Label Studio 1.23 speaks it (label_studio/ml/api_connector.py), under /label-studio:

    GET  /health    {"status": "UP", ...}                       Label Studio's connection check (1 s timeout)
    POST /setup     {project: "ID.CREATED", schema, hostname, access_token, extra_params} -> {"model_version"}
    POST /predict   {tasks: [...], project, label_config, params: {context}} -> {"results": [one per task]}
    POST /webhook   {action, project: {...}, annotation?}   START_TRAINING (or every N annotations): learn

An interactive request's context (keypoints with is_positive, rectangles) prompts the model on the task's image;
the answer is a brushlabels result in Label Studio's RLE (and polygonlabels when the config has PolygonLabels)
with the score and the model version "samcl-gGENERATION-DOMAIN". Without a context (a task opened, Retrieve
Predictions) each task gets automatic masks from the project's module (`preannotate`). Requests run through the
server's batcher like /v1/segment.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import uuid

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from ..context import Serving
from ..errors import ApiError
from ..limits import MAX_TASKS, check_count
from . import rle as brush_rle
from .fetch import LabelStudioSource
from .labels import ContextPrompt, Tags, mask_polygons
from .preannotate import preannotate
from .projects import ProjectDomains
from .settings import LabelStudioSettings, ProjectSettings, project_id
from .setup_check import check_setup
from .training import LearningWorker

#: Largest JSON body of a Label Studio request (a task with its annotations and drafts inlined).
MAX_JSON_BYTES = 16 << 20


class Backend:
    def __init__(self, serving: Serving, settings: LabelStudioSettings):
        self.serving, self.settings = serving, settings
        self.host, self.config = serving.host, serving.config
        self.source = LabelStudioSource(settings, self.config.max_upload_bytes)
        self.projects: dict[int, ProjectSettings] = {}
        self.domains = ProjectDomains(self.config.store)  # project -> domain, fixed at first setup
        self.worker = LearningWorker(self.config, settings, self.source)

    # ------------------------------------------------------------------ auth
    def authorised(self, request: Request) -> None:
        """Basic auth (what Label Studio sends when the model's settings have it) with the configured USER:PASS;
        without one, a server with an API token takes it as the basic-auth password."""
        expected_user, expected_pass = None, self.config.token
        if self.settings.basic_auth:
            expected_user, _, expected_pass = self.settings.basic_auth.partition(":")
        if not expected_pass:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        try:
            user, _, password = base64.b64decode(given.strip(), validate=True).decode().partition(":")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            user = password = ""
        ok = scheme.lower() == "basic" and hmac.compare_digest(password.encode(), expected_pass.encode()) and \
            (expected_user is None or hmac.compare_digest(user.encode(), expected_user.encode()))
        if not ok:
            raise ApiError(401, "unauthorized", "missing or wrong basic auth: set the user and password in the "
                                                "model's connection settings in Label Studio")

    # ------------------------------------------------------------------ projects
    def register(self, raw, label_config: str | None = None, title: str | None = None) -> ProjectSettings:
        """The project's settings, made or updated from what a request says of it."""
        number = project_id(raw)
        settings = self.projects.setdefault(number, ProjectSettings(number))
        if isinstance(label_config, str):
            settings.label_config = label_config
        if isinstance(title, str):
            settings.title = title
        settings.fixed = self.domains.domain_of(number)  # a recorded domain is kept whatever the title says
        return settings

    def claim(self, project: ProjectSettings) -> None:
        """Record the project's domain once it has a name (extra_params' domain, or its title): 409 when the name
        is another project's or a domain learned elsewhere (`projects.ProjectDomains`)."""
        if project.domain is not None or project.title is not None or project.fixed is not None:
            self.domains.claim(project, self.host.samcl.domains)

    async def known(self, raw, label_config: str | None) -> ProjectSettings:
        """A project /setup registered; one it did not (this server restarted since) is read from Label Studio
        (title, the model's extra_params) when the server can reach it, else a 404."""
        number = project_id(raw)
        if number not in self.projects:
            found = await self.source.project(number)
            if found is None:
                raise ApiError(404, "unknown_project", f"project {number} is not set up here: open the model's "
                                                       "connection in the project's settings in Label Studio (it "
                                                       "calls /setup), or give this server LABEL_STUDIO_URL and "
                                                       "LABEL_STUDIO_API_KEY")
            settings = self.register(number, found["label_config"], found["title"])
            settings.update(found["extra_params"])
            self.claim(settings)
        return self.register(number, label_config)

    def model_version(self, domain: str | None = None) -> str:
        return f"samcl-g{self.host.generation}-{domain or 'selector'}"

    def pinned(self, project: ProjectSettings) -> str | None:
        name = project.domain_name
        return name if project.pin and name in self.host.samcl.domains else None

    # ------------------------------------------------------------------ the protocol
    def health(self) -> dict:
        return {"status": "UP", "model_class": "samcl", "generation": self.host.generation,
                "domains": self.host.samcl.domains, "learning": self.worker.busy()}

    async def setup(self, body: dict) -> dict:
        # refused now what every prediction would fail on: no way to fetch images, a config samcl cannot answer
        check_setup(self.settings, body.get("schema") or "")
        project = self.register(body.get("project"), body.get("schema") or "")
        project.update(body.get("extra_params"))
        if project.domain is None and project.title is None and project.fixed is None:
            found = await self.source.project(project.project)  # /setup carries no title: ask Label Studio
            project.title = (found or {}).get("title") if isinstance((found or {}).get("title"), str) else None
        self.claim(project)
        return {"model_version": self.model_version(self.pinned(project))}

    async def predict(self, body: dict, ticket=None) -> dict:
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks or not all(isinstance(t, dict) for t in tasks):
            raise ApiError(422, "invalid_request", "tasks: expected a non-empty list of task objects")
        check_count("tasks", len(tasks), MAX_TASKS)
        project = await self.known(body.get("project"), body.get("label_config"))
        tags = Tags.of(project.label_config)
        params = body.get("params") if isinstance(body.get("params"), dict) else {}
        context = params.get("context")
        if not context:  # a task opened, or Retrieve Predictions: automatic masks (`preannotate`)
            return {"results": await preannotate(self, tasks, project, tags)}
        if len(tasks) != 1:
            raise ApiError(400, "bad_context", "an interactive request (with a context) carries one task")
        return {"results": [await self.interactive(tasks[0], project, tags, context, ticket)]}

    async def interactive(self, task: dict, project: ProjectSettings, tags: Tags, context, ticket=None) -> dict:
        """One task's pre-label, charged to `ticket` (the request's, which holds its body; None: a new one)."""
        if ticket is not None:
            return await self._interactive(task, project, tags, context, ticket)
        with self.serving.ticket() as ticket:
            return await self._interactive(task, project, tags, context, ticket)

    async def _interactive(self, task: dict, project: ProjectSettings, tags: Tags, context, ticket) -> dict:
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        if tags.data_key not in data:
            raise ApiError(400, "no_image_url", f"task {task.get('id')}: no data field {tags.data_key!r} (the "
                                                "Image tag's value)")
        asked = ContextPrompt.of(context)
        fetched = await self.source.fetch(data[tags.data_key])
        ticket.take(len(fetched))  # the file's bytes, held while it is decoded
        image = await self.serving.load(fetched, ticket)
        del fetched
        width, height = image.width, image.height
        job = await self.serving.segment(image, asked.prompt(width, height), self.pinned(project))
        label = asked.label
        mask = job.prediction.masks[0]
        domain = job.prediction.domain
        score = float(job.prediction.scores[0])
        return {"result": await run_in_threadpool(self.results, mask, tags, label, width, height),
                "score": round(score, 6), "model_version": f"samcl-g{job.generation}-{domain}"}

    @staticmethod
    def results(mask, tags: Tags, label: str | None, width: int, height: int) -> list[dict]:
        common = {"to_name": tags.image, "original_width": width, "original_height": height,
                  "image_rotation": 0, "origin": "prediction"}
        out = []
        if tags.brush is not None:
            chosen = label if label in tags.brush.labels or not tags.brush.labels else tags.brush.labels[0]
            out.append({**common, "id": uuid.uuid4().hex[:10], "from_name": tags.brush.name, "type": "brushlabels",
                        "value": {"format": "rle", "rle": brush_rle.encode(mask),
                                  "brushlabels": [chosen] if chosen else []}})
        if tags.polygon is not None:
            chosen = label if label in tags.polygon.labels or not tags.polygon.labels else tags.polygon.labels[0]
            for outline in mask_polygons(mask):
                points = [[round(x / width * 100, 4), round(y / height * 100, 4)] for x, y in outline]
                out.append({**common, "id": uuid.uuid4().hex[:10], "from_name": tags.polygon.name,
                            "type": "polygonlabels", "value": {"points": points, "closed": True,
                                                               "polygonlabels": [chosen] if chosen else []}})
        return out

    async def webhook(self, body: dict) -> dict:
        action = body.get("action")
        raw = body.get("project") if isinstance(body.get("project"), dict) else {}
        if not isinstance(action, str):
            raise ApiError(422, "invalid_request", "action: expected Label Studio's webhook action name")
        if action not in ("START_TRAINING", "ANNOTATION_CREATED", "ANNOTATIONS_CREATED"):
            return {"status": "ignored", "action": action if len(action) <= 40 else action[:39] + "…"}
        if "id" not in raw:
            raise ApiError(400, "bad_project", f"{action}: the webhook's project object has no id")
        title = raw.get("title") if isinstance(raw.get("title"), str) else None
        project = self.register(raw["id"], raw.get("label_config"), title)
        self.claim(project)
        if action == "START_TRAINING":
            return self.worker.request(project)
        every = project.train_every if project.train_every is not None else self.settings.train_every
        return self.worker.count(project, every)


def router(serving: Serving) -> APIRouter:
    """The Label Studio backend's routes (mounted at /label-studio by the app): basic auth first, then each body
    read within MAX_JSON_BYTES and parsed in a thread (`Serving.json_object`), its budget ticket held until the
    answer is made."""
    backend = Backend(serving, LabelStudioSettings(**(serving.config.label_studio or {})))

    async def read_json(request: Request, ticket) -> dict:
        return await serving.json_object(request, ticket, MAX_JSON_BYTES)

    routes = APIRouter(prefix="/label-studio", tags=["label-studio"], dependencies=[Depends(backend.authorised)])
    routes.backend = backend  # tests and the app's shutdown reach the worker here

    @routes.get("/health")
    async def health() -> dict:
        """Label Studio's connection check."""
        return backend.health()

    @routes.post("/setup")
    async def setup(request: Request) -> dict:
        """Label Studio connects a project: its labeling config and extra_params (the project's settings)."""
        with serving.ticket() as ticket:  # the body's charge held while it is used
            return await backend.setup(await read_json(request, ticket))

    @routes.post("/predict")
    async def predict(request: Request) -> dict:
        """Pre-labels: a brush mask (and polygons) for an interactive request's keypoints and rectangles."""
        with serving.ticket() as ticket:
            return await backend.predict(await read_json(request, ticket), ticket)

    @routes.post("/webhook")
    async def webhook(request: Request) -> dict:
        """START_TRAINING, and new annotations counted toward the project's train_every."""
        with serving.ticket() as ticket:
            return await backend.webhook(await read_json(request, ticket))

    @routes.get("/learning")
    async def learning() -> dict:
        """Each project's learning: state (idle, queued, learning, done, failed), last report or error."""
        return backend.worker.report()

    return routes
