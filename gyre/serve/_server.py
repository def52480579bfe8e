"""Running the server: uvicorn (uvloop + httptools) around the gyre ASGI app.

uvicorn handles SIGTERM/SIGINT gracefully: it stops accepting, lets accepted requests
finish, then runs the app's shutdown, which drains every batch queue.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

import uvicorn

from gyre.config import Config
from gyre.registry import Registry
from gyre.serve._admin import Admin
from gyre.serve._app import GyreApp
from gyre.serve._auth import Gatekeeper
from gyre.serve._cache import PredictionCache
from gyre.serve._feedback import FeedbackStore
from gyre.serve._inference import Predictor
from gyre.serve._metrics import ServerMetrics
from gyre.serve._repository import ModelRepository


class _Server(uvicorn.Server):
    """uvicorn re-raises a caught SIGTERM/SIGINT after its graceful shutdown, which makes
    the process exit with 143/130; a server that shut down cleanly exits 0."""

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


def build_app(config: Config, processes: int = 1) -> GyreApp:
    """The ASGI app over the registry under `config.home`; models load at startup."""
    metrics = ServerMetrics()
    registry = Registry.from_config(config)
    feedback = FeedbackStore(config.home / "feedback.db")
    repository = ModelRepository(registry, config.serve, metrics, feedback)
    predictor = Predictor(PredictionCache(config.serve.cache_bytes), feedback, metrics)
    gatekeeper = Gatekeeper(config.serve.consumers, processes=processes)
    admin = Admin(gatekeeper, feedback, repository.call_registry)
    return GyreApp(config.serve, repository, metrics, predictor, admin, gatekeeper)


def serve(config: Config) -> None:
    """Serve until SIGTERM or SIGINT; returns after a graceful shutdown."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = build_app(config)
    server = _Server(
        uvicorn.Config(
            app,
            host=config.serve.host,
            port=config.serve.port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=int(config.serve.shutdown_timeout_s),
            server_header=False,
            # No proxy-header rewriting: gyre does not use the client address, and the
            # middleware costs ~10% of a small request.
            proxy_headers=False,
        )
    )
    logging.getLogger("gyre.serve").info(
        "gyre serving %s on http://%s:%s", config.home, config.serve.host, config.serve.port
    )
    server.run()
    if not server.started:
        raise SystemExit(1)
