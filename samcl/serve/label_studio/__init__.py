"""`samcl serve` as a Label Studio ML backend: pre-labels from the right module, and each project learned as a
domain. The backend URL to give Label Studio is http://HOST:PORT/label-studio.

Files: `backend` (the protocol's routes), `labels` (labeling configs, contexts and annotations to prompts and
masks, masks to results), `preannotate` (automatic masks for a /predict without a context), `rle` (Label Studio's
brush RLE, bounded before it is decoded), `fetch` (task images and project data, the URL allow-list, the fetch
deadline), `urls` (URLs taken apart safely: hosts, ports, dot segments), `training` (the background learner, within
its caps), `settings` (server and per-project settings), `projects` (which project learns which domain, recorded
beside the store).
"""


def router(serving):
    """The backend's routes (`backend.router`; imported here on use, so the CLI's flags need no FastAPI)."""
    from .backend import router as make

    return make(serving)
