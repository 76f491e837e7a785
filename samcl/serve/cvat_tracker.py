"""A CVAT tracker: CVAT's serverless *tracker* interface on SAM 2's video memory, with the routed domain's module.

    POST /v1/cvat/tracker {"image": BASE64, "shapes": [[xtl, ytl, xbr, ybr], ...], "states": [STATE or null, ...]}
    -> {"shapes": [[xtl, ytl, xbr, ybr], ...], "states": [STATE, ...], "domains", "presence", "restarted",
        "generation"}

The protocol, as CVAT speaks it:
- What a tracker function gets and answers: cvat-ai/cvat serverless/pytorch/foolwood/siammask/nuclio/main.py and
  serverless/pytorch/dschoerk/transt/nuclio/main.py: `image` (base64), `shapes` and `states`; each shape i runs
  with `states[i]` (None, or missing past the end of `states`: the track starts on this image from the shape;
  a state: the object is tracked onto this image), and the answer holds one shape and one state per shape.
  Their model_handler.py: a start answers the shape it was given, a tracking step the new shape (TransT a
  rectangle [left, top, right, bottom], SiamMask a flat polygon).
- How CVAT calls it: cvat-ui's tools-control.tsx (`checkTrackedStates`) tracks rectangle tracks only; when the user
  moves from frame N-1 to N it first starts the tracks that have no state (or whose rectangle the user edited):
  {frame: N-1, shapes} (the answer's states kept, its shapes ignored), then tracks them: {frame: N, shapes,
  states}, and maps each answered shape to its bounding rectangle (`trackedRectangleMapper`: min/max over the
  x, y pairs). cvat/apps/lambda_manager/views.py (`LambdaFunction.invoke`, FunctionKind.TRACKER) sends the
  function {"image", "shapes", "states"} (no frame number), signs each answered state as
  `json.dumps(state)` with a TimestampSigner (8 hours) before the browser holds it, and unsigns it before the
  next call, so a function sees exactly the states it answered.

Here a state is an opaque token (a string) naming a tracking session this server process holds: SAM 2's
inference session of `samcl.inference.video` (transformers' memory attention, memory encoder and object
pointers), the module the selector picked for the track on its first image (once per track, as
`SAMCL.track`; `force` in the body sets it for the tracks this call starts), and the object. The shapes of one
call that start together share one session (one encoder pass per frame for all of them); the sessions a call
continues step together, their prefix and suffix in one batch with each session's module rows
(`VideoTracker.step`). Each answered shape is the rectangle around the object's mask on this image (pixel
edges: the mask's columns x0..x1 give xtl = x0, xbr = x1 + 1); where the mask is empty (SAM 2 finds the object
absent) the shape given is answered unchanged and `presence` (the object's presence probability) says so.

A state this server no longer has (an idle session expired, a session evicted to keep the bounds, a server
restarted, another server process) or no longer current (its session has run a later image since: the
state was answered before) restarts the track from the shape it comes with, on this image, as a start would:
the answer is still a tracking answer (the new rectangle and a new state) and `restarted` lists those shapes'
indices. A state this server never issued (not a token) is a 422.

Bounds (`ServeConfig`'s tracker fields): at most `tracker_max_sessions` sessions and `tracker_max_objects` objects
in them live at once (the least recently used session goes first), a session idle `tracker_idle_seconds`
expires; each session holds per object its start frame and the last `memory_window` tracked frames' outputs (the
video path's bound), whatever the track's length. samcl's additions to the answer: `domains` (each shape's module,
"base": none), `presence`, `restarted`, `generation`. The route takes the server's API token; only a store on a
SAM 2 or SAM 3 tracker base that tracks (`load_backbone(..., video=True)`) and the torch runtime has it (else a 400
`cannot_track`).
"""

from __future__ import annotations

import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from .. import Prompt, PromptError, SamclError
from . import codec
from .context import Serving
from .errors import ApiError, answer_for
from .limits import MAX_SHAPES

#: Bytes per pixel of the image per object while a frame's masks are made (float32 logits at the image's size,
#: the bool mask) and answered: charged to the in-flight budget before the step.
STEP_BYTES_PER_PIXEL = 6
#: The backbone families whose video models track (`samcl.backbone.VIDEO_BACKBONES`).
TRACKING_FAMILIES = ("sam2", "sam3")
STATE = re.compile(r"^samcl-track:([0-9a-f]{24}):([0-9]{1,6}):([0-9]{1,12})$")
Coordinate = Annotated[float, Field(allow_inf_nan=False)]
#: The monotonic clock sessions expire by (a name of this module: the tests move it).
clock = time.monotonic


class TrackerRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # CVAT's lambda manager may add more

    image: str = Field(description="the frame's image file, base64")
    shapes: list[tuple[Coordinate, Coordinate, Coordinate, Coordinate]] = Field(
        default_factory=list, max_length=MAX_SHAPES, description="rectangles [xtl, ytl, xbr, ybr], pixels")
    states: list[Annotated[str, Field(max_length=64)] | None] = Field(
        default_factory=list, max_length=MAX_SHAPES, description="the states this server answered, or null")
    force: str | None = Field(None, description="run this domain's module on the tracks this call starts")


@dataclass(eq=False)
class Track:
    """One tracking session: SAM 2's video state, its module's name, the last frame it ran, its objects."""

    key: str
    video: object  # samcl.inference.video.Video
    domain: str | None = None
    index: int = -1
    objects: list[int] = field(default_factory=list)


class Tracks:
    """The live sessions of one server process (used in the model thread only), least recently used first."""

    def __init__(self, *, max_sessions: int, max_objects: int, idle_s: float):
        """The bounds (`ServeConfig.tracker_max_sessions`, `tracker_max_objects`, `tracker_idle_seconds`): at most
        `max_sessions` sessions and `max_objects` objects in them (the least recently used session goes first);
        a session unused for `idle_s` seconds expires."""
        self.max_sessions, self.max_objects, self.idle_s = max_sessions, max_objects, idle_s
        self.live: OrderedDict[str, tuple[Track, float]] = OrderedDict()

    def get(self, key: str) -> Track | None:
        self.expire()
        held = self.live.get(key)
        return None if held is None else held[0]

    def touch(self, track: Track) -> None:
        self.live[track.key] = (track, clock())
        self.live.move_to_end(track.key)

    def add(self, track: Track, keep: set[str]) -> None:
        """Hold `track`, dropping the least recently used sessions (not those in `keep`) past the bounds."""
        self.touch(track)
        for key in list(self.live):
            over = len(self.live) > self.max_sessions or self.objects() > self.max_objects
            if over and key not in keep and key != track.key:
                del self.live[key]

    def objects(self) -> int:
        return sum(len(track.objects) for track, _ in self.live.values())

    def expire(self) -> None:
        now = clock()
        for key in [k for k, (_, used) in self.live.items() if now - used > self.idle_s]:
            del self.live[key]


def parse_state(state: str | None, index: int) -> tuple[str, int, int] | None:
    """A state token -> (session, object, frame), None for null; a 422 for anything this server never issues."""
    if state is None:
        return None
    found = STATE.match(state)
    if found is None:
        raise ApiError(422, "invalid_request", f"states[{index}]: not a state this server answered")
    return found.group(1), int(found.group(2)), int(found.group(3))


def box_prompt(shape, width: int, height: int, index: int) -> Prompt:
    """A CVAT rectangle as SAM's box prompt, clipped to the image (CVAT's rectangles may reach past it)."""
    try:
        x0, y0, x1, y1 = Prompt.check_box(shape, f"shapes[{index}]")
    except PromptError as exc:
        raise ApiError(400, exc.code, str(exc)) from None
    if x0 >= width or y0 >= height or x1 <= 0 or y1 <= 0:
        raise ApiError(400, "box_outside", f"shapes[{index}] {x0:g},{y0:g},{x1:g},{y1:g} lies outside the "
                                           f"{width}x{height} image")
    box = [max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))]
    prompt = Prompt.of(None, None, box)
    try:
        prompt.check(width, height)
    except PromptError as exc:
        raise answer_for(exc) from None
    return prompt


def rectangle(mask: np.ndarray) -> list[float] | None:
    """The rectangle around a mask's pixels, pixel edges [x0, y0, x1 + 1, y1 + 1]; None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return None
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def step(serving: Serving, tracks: Tracks, loaded, shapes: list, states: list, prompts: list[Prompt],
         force: str | None, ticket) -> dict:
    """One call, in the model thread: continue the sessions of its states, start one for the rest, one batched
    step over them all, the answer."""
    samcl = serving.host.samcl
    try:
        tracker = samcl.tracker()
    except (SamclError, ValueError) as exc:
        raise ApiError(400, "cannot_track", f"this server's store cannot track: {exc}") from None
    engine = samcl.engine
    continuing: dict[str, list[tuple[int, int]]] = {}
    starting, restarted = [], []
    for i, state in enumerate(states):
        track = None if state is None else tracks.get(state[0])
        current = track is not None and state[1] in track.objects and state[2] == track.index
        if current and track.domain != "base" and track.domain not in samcl.domains:  # a reload dropped it
            current = False
        if current:
            continuing.setdefault(track.key, []).append((i, state[1]))
        else:
            starting.append(i)
            restarted += [i] if state is not None else []
    runs = [tracks.get(key) for key in continuing]
    objects = sum(len(t.objects) for t in runs) + len(starting)
    ticket.take(STEP_BYTES_PER_PIXEL * loaded.width * loaded.height * objects)
    for track in runs:  # by name: a new generation may have renumbered the domains
        track.video.chosen = engine.module_set.index_of(track.domain)
    if starting:
        fresh = Track(secrets.token_hex(12), tracker.open(force=force), objects=list(range(1, len(starting) + 1)))
        tracks.add(fresh, keep=set(continuing))
        runs.append(fresh)
    prepared = loaded.entry if loaded.entry is not None else engine.prepare([loaded.image], keys=[loaded.key])[0]
    on_frame = [None] * len(continuing) + ([{obj: prompts[i] for obj, i in zip(fresh.objects, starting)}]
                                           if starting else [])
    frames = tracker.step([t.video for t in runs], [t.index + 1 for t in runs], [prepared] * len(runs), on_frame)
    results = {}
    for track, frame in zip(runs, frames):
        track.index, track.domain = frame.index, frame.domain
        track.video.forced = None  # routed or forced once: `domain` keeps it from now on
        tracks.touch(track)
        for i, obj in continuing.get(track.key, []):
            results[i] = (track, obj)
    if starting:
        results.update({i: (fresh, obj) for obj, i in zip(fresh.objects, starting)})
    by_track = {track.key: frame for track, frame in zip(runs, frames)}
    answer = {"shapes": [], "states": [], "domains": [], "presence": [], "restarted": restarted,
              "generation": serving.host.generation}
    for i, shape in enumerate(shapes):
        track, obj = results[i]
        tracked = by_track[track.key].objects[obj]
        answer["shapes"].append(rectangle(tracked.mask) or [float(v) for v in shape])
        answer["states"].append(f"samcl-track:{track.key}:{obj}:{track.index}")
        answer["domains"].append(track.domain)
        answer["presence"].append(round(tracked.presence, 6))
    return answer


def router(serving: Serving, tracks: Tracks | None = None) -> APIRouter:
    routes = APIRouter(tags=["cvat"])
    config = serving.config
    routes.tracks = tracks = tracks or Tracks(max_sessions=config.tracker_max_sessions,
                                              max_objects=config.tracker_max_objects,
                                              idle_s=config.tracker_idle_seconds)

    @routes.post("/v1/cvat/tracker", openapi_extra={"requestBody": {"content": {"application/json": {
        "schema": TrackerRequest.model_json_schema()}}, "required": True}})
    async def tracker(request: Request):
        """Track CVAT's shapes onto this image: each from its state, or started from it. The token (if the server
        has one) is checked before the body is read."""
        with serving.ticket() as ticket:
            body = await serving.json(request, TrackerRequest, ticket)
            states = [parse_state(body.states[i] if i < len(body.states) else None, i)
                      for i in range(len(body.shapes))]
            samcl = serving.host.samcl
            if samcl.backbone.family not in TRACKING_FAMILIES or samcl.engine.runtime != "torch":
                raise ApiError(400, "cannot_track", "this server's store cannot track: only a SAM 2 or SAM 3 tracker "
                                                    f"base on the torch runtime does (its base is "
                                                    f"{samcl.backbone.label})")
            serving.check_force(body.force)
            if not body.shapes:
                return {"shapes": [], "states": [], "domains": [], "presence": [], "restarted": [],
                        "generation": serving.host.generation}
            loaded = await serving.load(codec.decode_base64(body.image, "image"), ticket)
            prompts = [box_prompt(shape, loaded.width, loaded.height, i) for i, shape in enumerate(body.shapes)]
            try:
                return await serving.batcher.call(step, serving, tracks, loaded, body.shapes, states, prompts,
                                                  body.force, ticket)
            except SamclError as exc:  # a forced domain a reload has just dropped
                raise answer_for(exc) from None

    return routes
