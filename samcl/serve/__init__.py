"""`samcl serve`: an HTTP API over one store, with cross-request mixed-domain batching and a click-to-segment page.

    from samcl.serve import ServeConfig, create_app, serve
    serve(ServeConfig(store="my-set", port=8000))          # blocks; what `samcl serve my-set` runs

Files: `config` (settings, the token rule), `app` (the server: routers, errors, the page), `context` (what every
router shares: the steps of a request), `api` (the `/v1` routes), `schemas` (request and response bodies: the
OpenAPI document), `intake` (token, bounded bodies with a read deadline, JSON), `forms` (multipart uploads),
`budget` (memory of the requests in flight), `limits` (caps on the lists a client sends, every route), `answers`
(large answers built and sent under the budget), `batching` (gathering concurrent requests), `model` (the engine side: one opened store, a
batch through `samcl.inference.engine`, whose prefix cache keeps the uploads), `reload` (a new generation, in bounded
time), `codec` (images in, PNG and COCO RLE masks out), `page/` (HTML and JavaScript), `label_studio/` (the Label
Studio ML backend at /label-studio, learning projects in the background), `cvat` (the CVAT-style interactor),
`cvat_detector` (automatic masks as CVAT's detector functions answer).

The server holds no state that matters: the store is only read (but for a Label Studio project's learn, which
commits under the store's writer lock like `samcl learn`), and the cache refills from uploads. So any
number of processes (uvicorn workers, containers, machines) can serve one store behind a load balancer.
"""

from __future__ import annotations

import json
import os
import socket

from .. import SamclError
from .._lazy import lazy_names
from .config import TOKEN_ENV, ServeConfig, is_loopback

#: Worker processes read their settings from this variable (uvicorn starts workers from an import string).
CONFIG_ENV = "SAMCL_SERVE_CONFIG"

__all__ = ["LabelStudioSettings", "ServeConfig", "create_app", "serve", "TOKEN_ENV", "is_loopback"]
#: The Label Studio backend's settings (its flags are the command line's), loaded on first use.
__getattr__, __dir__ = lazy_names(__name__, {"LabelStudioSettings": ".label_studio.settings"})


def create_app(config: ServeConfig):
    from .app import create_app as create

    return create(config)


def app_from_env():
    """The app of one worker process, from the settings the parent put in $SAMCL_SERVE_CONFIG."""
    settings = json.loads(os.environ[CONFIG_ENV])
    return create_app(ServeConfig(**settings))


def check_bindable(host: str, port: int) -> None:
    """Fail with one line now if the address cannot be bound (in use, not this machine's), before the model loads."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise SamclError(f"host {host!r}: cannot resolve it ({exc.strerror})",
                         code="unresolved_host", field="host") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise SamclError(f"{host}:{port}: cannot listen there ({exc.strerror})") from None


def serve(config: ServeConfig, workers: int = 1, log_level: str = "info") -> None:
    """Run the server until interrupted. With several workers each process opens the store and has its own cache."""
    import uvicorn

    check_bindable(config.host, config.port)
    if workers == 1:
        app = create_app(config)  # a bad store fails here, before the port is bound
        uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, timeout_graceful_shutdown=5)
        return
    settings = {k: (str(v) if k == "store" else v) for k, v in config.__dict__.items()}
    from .model import ModelHost

    ModelHost.check_store(config)  # once here, so a bad store is one line instead of one per worker
    os.environ[CONFIG_ENV] = json.dumps(settings)
    uvicorn.run("samcl.serve:app_from_env", factory=True, host=config.host, port=config.port, workers=workers,
                log_level=log_level, timeout_graceful_shutdown=5)
