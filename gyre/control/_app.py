"""The control plane's ASGI app: alias moves and traffic-policy changes over HTTP.

| method | path | body |
|---|---|---|
| PUT (or POST) | `/v1/admin/models/{m}/aliases/{alias}` | `{"version": N, "reason"?}` |
| DELETE | `/v1/admin/models/{m}/aliases/{alias}` | `{"reason"?}`, or no body |
| PUT (or POST) | `/v1/admin/models/{m}/policy` | `{"kind", "params"?, "reason"?}` |
| GET | `/health` | — (open to anyone: `{"status": "ok"}`) |

The same JSON in and out as the server's admin routes had before they moved here, the
same keys (`[serve.consumers]`, an admin key for every write) checked in the same order:
the key and its rate (401, 429) before anything is looked up or read, then the admin
right for the model (403), then the body. Every write is the registry's own
(`gyre.registry._admin`), run on one thread that owns the registry's connection; a running
`gyre serve` picks it up at its next poll of the registry's change position.

Errors map to statuses through `gyre.errors.http_status`, with a `{"error": …}` body; only
a bug answers 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from gyre._json import decode_object
from gyre._numbers import parse_count
from gyre.auth import Consumer, Gatekeeper, key_of
from gyre.config import ControlConfig
from gyre.errors import BadRequest, GyreError, NotFound, PayloadTooLarge, RateLimited, http_status
from gyre.registry import Registry
from gyre.registry import _admin as registry_admin

log = logging.getLogger("gyre.control")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Write = Callable[[Registry, dict[str, Any]], dict[str, Any]]

_encode = msgspec.json.Encoder().encode
_EXPECTED = 'a JSON object (see docs/protocols.md, "Control plane")'


class ControlApp:
    """Answers the control plane's routes over one registry."""

    def __init__(self, registry: Registry, gatekeeper: Gatekeeper, config: ControlConfig) -> None:
        self.registry = registry
        self.gatekeeper = gatekeeper
        self.config = config
        # SQLite's connection is used by one thread at a time: every write runs on this one.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="gyre-control")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    def close(self) -> None:
        """Finish the write under way, then close the registry."""
        self._writer.shutdown(wait=True)
        self.registry.close()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
        try:
            status, payload = 200, await self._route(scope, receive)
        except GyreError as exc:
            status, payload = http_status(exc), {"error": str(exc)}
            if isinstance(exc, RateLimited):
                headers.append((b"retry-after", str(exc.retry_after_s).encode()))
        except Exception as exc:  # a bug, not bad input: log it, answer 500
            log.exception("unexpected error on %s %s", scope["method"], scope["path"])
            status, payload = 500, {"error": f"internal error: {exc}"}
        body = _encode(payload)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _route(self, scope: Scope, receive: Receive) -> dict[str, Any]:
        method: str = scope["method"]
        path: str = scope["path"]
        if path == "/health" and method == "GET":
            return {"status": "ok"}
        # Every other route needs a key: 401 (and 429) before anything is looked up or read.
        consumer = self.gatekeeper.admit(_key(scope))
        parts = path.strip("/").split("/")
        if len(parts) >= 5 and parts[:3] == ["v1", "admin", "models"]:
            model = parts[3]
            self.gatekeeper.authorize(consumer, model=model, admin=True)
            write = _write(method, model, parts[4:], _name(consumer))
            if write is not None:
                body = await self._read_body(scope, receive)
                data = decode_object(body, _EXPECTED) if body.strip() else {}
                loop = asyncio.get_running_loop()
                done = await loop.run_in_executor(self._writer, write, self.registry, data)
                log.info("%s %s by %s: %s", method, path, _name(consumer) or "-", done)
                return done
        raise NotFound(
            f"no control-plane route {method} {path}; the control plane answers PUT and "
            "DELETE /v1/admin/models/NAME/aliases/ALIAS and PUT /v1/admin/models/NAME/policy "
            "(see docs/protocols.md)"
        )

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        """The whole body, refused with 413 past `max_body_bytes` (by its declared length
        before a byte is read), and with 400 when compressed or cut short."""
        limit = self.config.max_body_bytes
        headers = dict(scope["headers"])
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding != b"identity":
            raise BadRequest(
                f"the control plane takes uncompressed JSON; got Content-Encoding "
                f"{encoding.decode('latin-1')!r}"
            )
        declared = headers.get(b"content-length")
        length = None if declared is None else parse_count(declared.decode("latin-1"))
        if length is not None and length > limit:
            raise _too_large(limit, length)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("the connection closed before the whole body arrived")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit, None)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _key(scope: Scope) -> str | None:
    headers = dict(scope["headers"])

    def text(name: bytes) -> str | None:
        value = headers.get(name)
        return None if value is None else bytes(value).decode("latin-1")

    return key_of(text(b"authorization"), text(b"x-api-key"))


def _name(consumer: Consumer | None) -> str:
    return consumer.name if consumer is not None else ""  # not None: admin needs one


def _write(method: str, model: str, rest: list[str], who: str) -> Write | None:
    """The registry write of `method /v1/admin/models/{model}/{rest}`, or None."""
    if len(rest) == 2 and rest[0] == "aliases":
        alias = rest[1]
        if method in ("PUT", "POST"):
            return lambda r, data: registry_admin.set_alias(r, model, alias, data, who)
        if method == "DELETE":
            return lambda r, data: registry_admin.delete_alias(r, model, alias, data, who)
    if rest == ["policy"] and method in ("PUT", "POST"):
        return lambda r, data: registry_admin.set_policy(r, model, data, who)
    return None


def _too_large(limit: int, declared: int | None) -> PayloadTooLarge:
    size = f"of {declared} bytes " if declared is not None else ""
    return PayloadTooLarge(
        f"request body {size}is over the control plane's limit of {limit} bytes "
        "(control.max_body_bytes)"
    )
