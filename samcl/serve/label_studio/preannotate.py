"""Whole-project pre-annotation: a /predict without a context (a task opened in Label Studio, or "Retrieve
Predictions" over selected tasks) answered with automatic masks from the project's module.

    results = await preannotate(backend, tasks, project, tags)     # one prediction per task, in order

Each task's image runs through `SAMCL.generate` (Meta's automatic-mask-generator semantics: `AutoMaskConfig`'s
defaults, or the project's `automatic` options from its extra_params, e.g. {"automatic": {"pred_iou_thresh": 0.7}})
with the project's domain forced when the project is pinned and its domain learned, else the module the selector
routes the image to (the base when no learned domain fits). The `max_masks` masks of highest predicted IoU become
one `brushlabels` result each (Label Studio's brush RLE), and also `polygonlabels` results (one per outline) when
the labeling config has a PolygonLabels tag: the results an interactive request gets. Every result carries its
mask's predicted IoU as `score`, the prediction their mean as its `score`, and `model_version` names the
generation and the domain that ran ("samcl-g3-polyps"). The label is the tag's first. Turned off
(`--label-studio-preannotate off`), every task gets an empty prediction without a fetch.

Memory: a task's image (fetched bytes and decoded pixels), the generator's decoding batch and the mask being
encoded are charged to the in-flight budget while the task runs (the image's prefix is cached like an upload's,
so an interactive click on the task reuses it); the results, which the answer holds until it is sent, are charged to the request's
share as they are made, so a request whose answer would pass the budget gets the budget's 503. Tasks run one
after the other, each its own turn of the model thread, so interactive requests go between them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from starlette.concurrency import run_in_threadpool

from ..automatic import best_masks, generate, generator_config
from ..budget import Ticket
from ..errors import ApiError
from .labels import Tags

if TYPE_CHECKING:
    from .settings import ProjectSettings

#: Bytes an answer holds per value of a brush RLE (a Python int in a list, 8, and up to 4 of JSON text), per
#: polygon point (a list of two floats, about 120, and its JSON text), and per result besides.
RLE_VALUE_BYTES, POINT_BYTES, RESULT_BYTES = 12, 150, 600


def empty(model_version: str) -> dict:
    return {"result": [], "score": 0.0, "model_version": model_version}


async def preannotate(backend, tasks: list[dict], project: ProjectSettings, tags: Tags) -> list[dict]:
    """One prediction per task (`backend`: the Label Studio `Backend`, its settings, source and results)."""
    force = backend.pinned(project)
    if not backend.settings.preannotate:
        return [empty(backend.model_version(force)) for _ in tasks]
    config = project.automatic or generator_config()
    with backend.serving.ticket() as answer:
        return [await _task(backend, task, config, tags, force, answer) for task in tasks]


def image_url(task: dict, tags: Tags):
    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    if tags.data_key not in data:
        raise ApiError(400, "no_image_url", f"task {str(task.get('id'))[:40]}: no data field {tags.data_key!r} (the "
                                            "Image tag's value)")
    return data[tags.data_key]


async def _task(backend, task: dict, config, tags: Tags, force: str | None, answer: Ticket) -> dict:
    serving = backend.serving
    url = image_url(task, tags)
    with serving.ticket() as ticket:
        data = await backend.source.fetch(url)
        ticket.take(len(data))
        job, width, height = await generate(serving, data, config, force, ticket)
        del data
        ticket.take(2 * height * width)  # a chosen mask decoded and its brush code's values (one mask at a time)
        records = job.prediction.records
        result, scores = await run_in_threadpool(_results, backend, records, tags, width, height, answer)
    return {"result": result, "score": round(float(np.mean(scores)), 6) if scores else 0.0,
            "model_version": f"samcl-g{job.generation}-{job.prediction.domain}"}


def _results(backend, records: list[dict], tags: Tags, width: int, height: int, answer: Ticket):
    """The best records' brush (and polygon) results with their scores, charged to `answer` as they are made;
    and the scores."""
    out, scores = [], []
    for record, mask in best_masks(records, backend.settings.max_masks):
        made = backend.results(mask, tags, None, width, height)
        answer.take(sum(RESULT_BYTES + RLE_VALUE_BYTES * len(r["value"].get("rle", ())) +
                        POINT_BYTES * len(r["value"].get("points", ())) for r in made))
        scores.append(round(float(record["predicted_iou"]), 6))
        out.extend({**r, "score": scores[-1]} for r in made)
    return out, scores
