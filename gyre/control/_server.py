"""Running the control plane: `gyre control`, uvicorn around the control app, one process.

One process is enough: a write is a registry transaction of a few milliseconds, and the
registry itself orders writers (several control planes on one registry are safe too).
uvicorn's h11 parser bounds a request's head (`h11_max_incomplete_event_size`); the app
bounds its body (`control.max_body_bytes`).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

import uvicorn

from gyre.auth import Gatekeeper
from gyre.config import Config
from gyre.control._app import ControlApp
from gyre.registry import Registry
from gyre.stores import Stores

log = logging.getLogger("gyre.control")

# The request line and headers of one request, at most (h11 refuses longer ones with 400).
_MAX_HEAD_BYTES = 64 * 1024


def build_control_app(config: Config) -> ControlApp:
    """The control app over the registry under `config.home`, admitting the consumers of
    `[serve.consumers]`."""
    registry = Registry.from_config(config)
    return ControlApp(registry, Gatekeeper(config.serve.consumers), config.control)


class _Server(uvicorn.Server):
    """uvicorn re-raises a caught SIGTERM/SIGINT after its graceful shutdown (exit status
    143/130); a control plane that shut down cleanly exits 0, as `gyre serve` does."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def control(config: Config) -> None:
    """Answer the control plane's routes until SIGTERM or SIGINT."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not config.serve.consumers:
        log.warning(
            "no consumers are declared ([serve.consumers]): every write will be refused "
            "(403) until an admin key is; make one with `gyre consumers key NAME --admin`"
        )
    app = build_control_app(config)
    log.info(
        "gyre control plane for %s on %s", Stores.from_config(config).describe, config.control.url
    )
    server = _Server(
        uvicorn.Config(
            app,
            host=config.control.host,
            port=config.control.port,
            loop="uvloop",
            http="h11",
            h11_max_incomplete_event_size=_MAX_HEAD_BYTES,
            lifespan="on",
            access_log=False,
            log_level="warning",
            server_header=False,
            proxy_headers=False,
        )
    )
    server.run()  # a port it cannot bind: uvicorn logs why and exits 1
