"""How many items a client may send in one list, the same on every route (/v1, CVAT, Label Studio), in one place.

    check_count("context.result keypoints", len(points), MAX_POINTS)   # ApiError 422 invalid_request past the cap

A prompt's points run through the decoder as one sequence (its cost and, on a graph runtime, the compiled shape
grow with their number), so every route takes at most `MAX_POINTS` points (positive and negative together) and
`MAX_BOXES` box (SAM takes one). A Label Studio /predict carries at most `MAX_TASKS` tasks (without a context each
gets an empty answer; with one, one task). A project's learn takes at most `LabelStudioSettings.max_learn_tasks`
annotated tasks and `max_learn_megapixels` of their images together (`label_studio.training`).
"""

from __future__ import annotations

from .errors import ApiError

#: Most prompt points per request: /v1/segment `points`, CVAT `pos_points` + `neg_points`, Label Studio keypoints.
MAX_POINTS = 64
#: Most boxes per request: /v1/segment `box`, CVAT `obj_bbox`, Label Studio rectangles.
MAX_BOXES = 1
#: Most shapes (and states) in one CVAT tracker call (`cvat_tracker`: each is an object tracked on SAM 2's memory).
MAX_SHAPES = 16
#: Most tasks in one Label Studio /predict.
MAX_TASKS = 1000


def check_count(what: str, count: int, cap: int) -> None:
    """422 `invalid_request` naming `what` when a client's list holds more than `cap` items."""
    if count > cap:
        raise ApiError(422, "invalid_request", f"{what}: {count:,} given; at most {cap:,} per request")
