"""Running the server: uvicorn (uvloop + httptools) around the gyre ASGI app, in one
process or in `workers` processes sharing the port through SO_REUSEPORT. Each process also
runs the v2 gRPC service (`_grpc.py`) on the same event loop, on `serve.grpc_port`.

uvicorn handles SIGTERM/SIGINT gracefully: it stops accepting, lets accepted requests
finish, then runs the app's shutdown, which drains every batch queue. With several
workers, a supervisor (`_supervisor.py`) forwards the signal, waits for every worker,
replaces a worker that dies on its own, and exits 0 after a clean shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import ipaddress
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gyre._postgres import close_pools
from gyre.auth import Gatekeeper
from gyre.collect import Collector, event_types
from gyre.config import Config
from gyre.errors import ConfigError, InvalidModel
from gyre.features import OnlineFeatures, feature_views
from gyre.monitor import FeedbackStore, PredictionLog, ServedLog
from gyre.registry import Registry, parse_ref
from gyre.serve._admin import Admin
from gyre.serve._app import GyreApp
from gyre.serve._cache import PredictionCache
from gyre.serve._features import EntityFeatures
from gyre.serve._grpc import GrpcServer, grpc_address, port_unusable
from gyre.serve._http import encode_json
from gyre.serve._inference import Predictor
from gyre.serve._lifetime import die_with_parent
from gyre.serve._memory import return_large_blocks
from gyre.serve._metrics import ServerMetrics
from gyre.serve._repository import ModelRepository
from gyre.serve._rundir import hold
from gyre.serve._supervisor import READY, supervise
from gyre.stores import Stores

log = logging.getLogger("gyre.serve")


class _Server(uvicorn.Server):
    """uvicorn re-raises a caught SIGTERM/SIGINT after its graceful shutdown, which makes
    the process exit with 143/130; a server that shut down cleanly exits 0. `on_started`
    runs once the app's startup is complete and the sockets (HTTP, and gRPC when on) listen."""

    on_started: Callable[[], None] | None = None
    grpc: GrpcServer | None = None
    grpc_failed = False  # the gRPC port could not be bound: the process exits 1

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.grpc is not None:
            try:
                await self.grpc.start()  # once the models are loaded, as HTTP listens
            except ConfigError as exc:
                log.error("%s", exc)
                self.should_exit = True  # uvicorn shuts the app down; the process exits 1
                self.grpc_failed = True
                return
        if self.started and self.on_started is not None:
            self.on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # gRPC calls under way are answered before the app's shutdown drains the queues.
        if self.grpc is not None:
            await self.grpc.stop()
        await super().shutdown(sockets)

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


def build_app(config: Config, processes: int = 1, metrics_dir: str | None = None) -> GyreApp:
    """The ASGI app over the registry under `config.home`; models load at startup.
    `processes` > 1: one of that many workers, whose metrics are summed via `metrics_dir`."""
    metrics = ServerMetrics(metrics_dir)
    stores = Stores.from_config(config)
    registry = Registry(stores, config.registry)
    feedback = FeedbackStore.open(stores.feedback_path)
    repository = ModelRepository(registry, config.serve, metrics, feedback)
    predictor = Predictor(PredictionCache(config.serve.cache_bytes), feedback, metrics)
    # The processes of one server share their consumers' rate buckets: the declared rate
    # is their total. The file lives in this server run's own folder under <home>/run,
    # which the next start removes if a crash left it.
    shared_limits = (
        Path(metrics_dir) / "rate-limits.bin" if processes > 1 and metrics_dir is not None else None
    )
    gatekeeper = Gatekeeper(config.serve.consumers, shared_limits=shared_limits)
    admin = Admin(gatekeeper, feedback, repository.observe_reward, config.control.url)
    types = event_types(config.collect.events)
    collector = Collector(stores, types, config.collect.group_commit_max_wait_ms) if types else None
    features = None
    if config.features.views:
        online = OnlineFeatures(
            feature_views(config.features.views, types),
            stores.open_fact_log(check_same_thread=False),
        )
        served = ServedLog(stores.served_log_path) if config.features.log_served else None
        features = EntityFeatures(
            online, served, config.features, stores.online_snapshot_path, metrics
        )
    predictions = PredictionLog.open(
        stores.prediction_log_path,
        max_records=config.serve.prediction_log_max_records,
        buffer_bytes=config.serve.prediction_log_buffer_bytes,
        on_drop=metrics.prediction_log_drop,
    )
    return GyreApp(
        config.serve,
        repository,
        metrics,
        predictor,
        admin,
        gatekeeper,
        collector,
        features,
        predictions,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(config: Config) -> None:
    """Refuse to serve every model to anyone on the network by accident."""
    serve = config.serve
    if not serve.consumers and not serve.insecure and not _is_loopback(serve.host):
        raise ConfigError(
            f"refusing to serve on {serve.host} with no consumers declared: anyone who can "
            "reach it could call every model. Declare consumers in [serve.consumers] "
            "(`gyre consumers key`), or pass --insecure to serve openly anyway"
        )


def bounded_http(
    max_header_bytes: int,
    header_timeout_s: float,
    body_idle_timeout_s: float,
    max_body_bytes: int,
) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, with the bounds on reading a request that it lacks.

    uvicorn bounds a body's buffer (it stops reading until the app takes what it has) but
    not the request line and headers: they are buffered in full however long they run, so
    one client could fill the server's memory (431 past `max_header_bytes` here). Nor does
    it time reads: its keep-alive timer stops at a request's first byte and none starts at
    connect, so a client that connected and sent nothing, trickled a head, or paused in a
    body, held its connection forever (the slowloris attacks; 408 here past
    `header_timeout_s` for a head, or a pause of `body_idle_timeout_s` in a body).

    Its state comes from uvicorn's own: `cycle` is the newest request whose head was
    read, and its `more_body` stays true until its body is complete. A chunk that starts
    outside a body and makes no new request belongs to one unfinished head, so head bytes
    are counted exactly, except in the chunk where a head follows the previous request
    (uvicorn's keep-alive timer bounds that one). A request that arrives in one chunk, the
    usual case, arms no timer and costs one extra call.

    A request answered before its body was read (401 or 429 before any lookup, 413 from
    its declared length, 503 when the process's body budget is spent) is answered at once,
    while the client is usually still sending. Closing then would make the kernel answer
    the rest of the upload with a reset, and most clients would report the reset, not the
    answer; so the rest of the body is read and dropped (uvicorn buffers nothing once the
    answer is complete), and the connection then carries the next request as usual: a
    client that was told 429 on a kept-alive connection keeps it. The drain is bounded by
    `max_body_bytes` (past it: closed at once) and by the body's idle timeout. (uvicorn
    itself leaves such a body unfinished in its state: its end is marked here.)
    """

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _head_bytes = 0
        _drained_bytes = 0
        _drained = False
        _read_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(header_timeout_s)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            before = self.cycle
            outside_body = before is None or not before.more_body
            if not outside_body and before is not None and before.response_complete:
                self._drain(data)
                return
            if outside_body:
                # A head that ends in this piece is measured before it is parsed: once
                # parsed its request runs, and a head of any size arriving in one read
                # would have been let through.
                end = data.find(b"\r\n\r\n")
                if end >= 0 and self._head_bytes + end + 4 > max_header_bytes:
                    self._refuse(
                        b"431 Request Header Fields Too Large",
                        f"the request line and headers are over the limit of "
                        f"{max_header_bytes} bytes (serve.max_header_bytes); send fewer or "
                        "shorter headers",
                    )
                    return
            super().data_received(data)
            cycle = self.cycle
            if cycle is not before or not outside_body:
                # A head was completed, or a body continued.
                self._head_bytes = 0
                if cycle.more_body:
                    self._arm(body_idle_timeout_s)  # each piece restarts the pause clock
                elif self._read_timer is not None:
                    self._disarm()
                return
            if self._read_timer is None:
                self._arm(header_timeout_s)  # from the head's first bytes
            self._head_bytes += len(data)
            if self._head_bytes > max_header_bytes:
                self._refuse(
                    b"431 Request Header Fields Too Large",
                    f"the request line and headers are over the limit of {max_header_bytes} "
                    "bytes (serve.max_header_bytes); send fewer or shorter headers",
                )

        def _drain(self, data: bytes) -> None:
            """The rest of a body whose request was answered early: dropped as it comes
            (uvicorn's parser still reads it, to find where it ends, and any request that
            follows it), closed only past `max_body_bytes`."""
            self._drained_bytes += len(data)
            answered = self.cycle
            self._drained = False
            super().data_received(data)  # a chunk's worth past the bound at most
            if not self._drained:
                if self._drained_bytes > max_body_bytes:
                    self._disarm()
                    self.transport.close()
                else:
                    self._arm(body_idle_timeout_s)
                return
            # The body ended: what follows on the connection is the next request.
            assert answered is not None
            answered.more_body = False
            self._drained_bytes = 0
            cycle = self.cycle
            if cycle is not answered and cycle is not None and cycle.more_body:
                self._arm(body_idle_timeout_s)
                return
            # Idle, or in a next head: uvicorn's keep-alive timer again (its data_received
            # cancelled it), so an idle connection closes as any other; a head that then
            # trickles in meets the head timeout.
            self._disarm()
            if cycle is answered or cycle is None or cycle.response_complete:
                self._unset_keepalive_if_required()
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )

        def on_message_complete(self) -> None:
            cycle = self.cycle
            if cycle is not None and cycle.response_complete and cycle.more_body:
                self._drained = True  # uvicorn ignores the end of a body answered early
            super().on_message_complete()

        def _in_body(self) -> bool:
            return self.cycle is not None and self.cycle.more_body

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._read_timer = self.loop.call_later(seconds, self._read_timed_out)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _read_timed_out(self) -> None:
            self._read_timer = None
            if self._in_body():
                if self.flow.read_paused:  # the app has not taken what came: not the client
                    self._arm(body_idle_timeout_s)
                    return
                self._refuse(
                    b"408 Request Timeout",
                    f"the body paused for over {body_idle_timeout_s:g} s "
                    "(serve.body_idle_timeout_s) before it was complete",
                )
                return
            if self.cycle is not None and not self.cycle.response_complete:
                # A pipelined head stalls behind a request still being answered: answer
                # that one, then close.
                self.cycle.keep_alive = False
                return
            self._refuse(
                b"408 Request Timeout",
                f"the request line and headers took over {header_timeout_s:g} s "
                "(serve.header_timeout_s); send the whole head at once",
            )

        def _refuse(self, status: bytes, message: str) -> None:
            """Answer `status` unless another answer is under way, and close."""
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if self._in_body():  # of this cycle's request, which may have been answered already
                answering = cycle is not None and not cycle.response_started
            else:  # of a request after this cycle's
                answering = cycle is None or cycle.response_complete
            if answering:
                body = encode_json({"error": message})
                self.transport.write(
                    b"HTTP/1.1 %s\r\ncontent-type: application/json\r\n"
                    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body)
                )
            self.transport.close()

    return BoundedHttpToolsProtocol


def _uvicorn_config(config: Config, app: GyreApp) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=config.serve.host,
        port=config.serve.port,
        loop="uvloop",
        http=bounded_http(
            config.serve.max_header_bytes,
            config.serve.header_timeout_s,
            config.serve.body_idle_timeout_s,
            config.serve.max_body_bytes,
        ),
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=int(config.serve.shutdown_timeout_s),
        server_header=False,
        # No proxy-header rewriting: gyre does not use the client address, and the
        # middleware costs ~10% of a small request.
        proxy_headers=False,
    )


def _server(config: Config, app: GyreApp, *, shared_port: bool) -> _Server:
    """uvicorn around `app`, with the gRPC service unless `serve.grpc_port` is 0.
    `shared_port`: this is one of several processes listening on the same ports."""
    server = _Server(_uvicorn_config(config, app))
    if config.serve.grpc_port:
        server.grpc = GrpcServer(app.core, config.serve, shared_port=shared_port)
    return server


def _reuseport_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _run_worker(
    config: Config, processes: int, metrics_dir: str, supervisor: int, ready: Connection
) -> None:
    """One worker process: bind with SO_REUSEPORT (it joins the port's group when it
    starts listening, after its models are loaded), tell the supervisor it is ready, and
    serve until told to stop."""
    die_with_parent(supervisor, signal.SIGTERM)  # graceful: finish what was accepted, exit
    hold(Path(metrics_dir))  # for this process's life: no start removes it meanwhile
    return_large_blocks()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server = _server(config, build_app(config, processes, metrics_dir), shared_port=True)
    server.on_started = lambda: ready.send_bytes(READY)
    sock = _reuseport_socket(config.serve.host, config.serve.port)
    server.run(sockets=[sock])
    raise SystemExit(0 if server.started and not server.grpc_failed else 1)


def check_configured_models(config: Config) -> None:
    """Settings for a model the registry does not have apply to nothing: a typo in
    `[serve.models.NAME]` is a warning naming the nearest model; in `default_model`, an
    error. Checked once when `gyre serve` starts, not by each process it restarts (a model
    deleted since then must not turn every restart into a failed start)."""
    registry = Registry.from_config(config)
    try:
        known = {version.model for version in registry.versions()}
    finally:
        registry.close()
        close_pools()  # the supervisor keeps no database connection while workers serve

    def near(name: str) -> str:
        match = difflib.get_close_matches(name, known, n=1)
        return f"; did you mean `{match[0]}`?" if match else ""

    for name in config.serve.models:
        if name not in known:
            log.warning("[serve.models.%s] names no model in the registry%s; its settings "
                        "apply to nothing until one is published", name, near(name))  # fmt: skip
    default = config.serve.default_model
    if default is not None:
        try:
            name = parse_ref(default)[0]
        except InvalidModel as exc:
            raise ConfigError(f"serve.default_model: {exc}") from None
        if name not in known:
            raise ConfigError(
                f"serve.default_model {default!r} names no model in the registry{near(name)}; "
                "publish it first, or fix the setting"
            )


def serve(config: Config) -> None:
    """Serve until SIGTERM or SIGINT; returns after a graceful shutdown."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    check_exposure(config)
    check_configured_models(config)
    workers = config.serve.workers or os.cpu_count() or 1
    log.info(
        "gyre serving %s (state: %s) on http://%s:%s (gRPC: %s) with %d process(es)",
        config.home, Stores.from_config(config).describe, config.serve.host,
        config.serve.port, config.serve.grpc_port or "off", workers,
    )  # fmt: skip
    if workers == 1:
        return_large_blocks()
        server = _server(config, build_app(config), shared_port=False)
        server.run()
        if not server.started or server.grpc_failed:
            raise SystemExit(1)
        return
    # Hold the ports (bound, never listening) so a port of 0 means the same port for all,
    # and the ports stay this server's while its processes restart.
    holder = _reuseport_socket(config.serve.host, config.serve.port)
    grpc_holder = None
    if config.serve.grpc_port:
        try:
            grpc_holder = _reuseport_socket(config.serve.host, config.serve.grpc_port)
        except OSError as exc:
            holder.close()
            address = grpc_address(config.serve.host, config.serve.grpc_port)
            raise port_unusable(address, exc) from None
    try:
        supervise(_with_port(config, holder.getsockname()[1]), workers, _run_worker)
    finally:
        holder.close()
        if grpc_holder is not None:
            grpc_holder.close()


def _with_port(config: Config, port: int) -> Config:
    import dataclasses

    return dataclasses.replace(config, serve=dataclasses.replace(config.serve, port=port))
