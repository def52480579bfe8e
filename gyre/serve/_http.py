"""The small HTTP vocabulary of the ASGI app: responses, headers, bodies, errors."""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from gyre._numbers import parse_count
from gyre.errors import (
    BadRequest,
    GyreError,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    StoreUnavailable,
    http_status,
    shown,
)
from gyre.serve._errors import error_body

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_HEADERS: Headers = [(b"content-type", b"application/json")]
encode_json = msgspec.json.Encoder().encode


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: Headers) -> None:
        self.status = status
        self.body = body
        self.headers = headers


def json_response(payload: Any, status: int = 200, headers: Headers | None = None) -> Response:
    return Response(status, encode_json(payload), JSON_HEADERS + (headers or []))


def error_response(protocol: str, exc: GyreError) -> Response:
    status = http_status(exc)
    headers: Headers = []
    if isinstance(exc, (Overloaded, RateLimited, StoreUnavailable)):
        headers.append((b"retry-after", str(exc.retry_after_s).encode()))
    return json_response(error_body(protocol, status, str(exc)), status, headers)


def header(scope: Scope, name: bytes) -> str | None:
    """A request header by lower-case name (the headers are indexed once per request)."""
    index = scope.get("gyre.headers")
    if index is None:
        index = scope["gyre.headers"] = dict(scope["headers"])
    value = index.get(name)
    return None if value is None else bytes(value).decode("latin-1")


class BodyBudget:
    """The bytes of request bodies one server process holds at once, bounded.

    A body is held from its first byte until its request is answered, together with what
    is decoded from it, so concurrent large bodies add up: 64 concurrent 10 MB requests
    took a server from 260 MiB to 1.1 GiB, and what the allocator kept afterwards grew
    burst over burst. The per-request limit (`max_body_bytes`) does not bound that sum;
    this budget does. `read_body` reserves a request's declared Content-Length before it
    reads a byte of the body (a chunked body without one: each piece as it arrives); past
    the budget the request gets 503 `Overloaded` with Retry-After, and the rest of its
    body is discarded unread. The reservation lasts until the request is finished,
    whatever way it finishes (answered, refused, failed, cancelled or disconnected): the
    app calls `release` in a `finally`. Since the budget is at least `max_body_bytes`, a
    request always fits when no other body is held.

    Only the event loop's thread reserves and releases: no lock."""

    __slots__ = ("budget_bytes", "held_bytes")

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.held_bytes = 0

    def attach(self, scope: Scope) -> None:
        """Make this budget the one `read_body` reserves from for this request."""
        scope[_BUDGET] = self

    def reserve(self, scope: Scope, size: int) -> None:
        if self.held_bytes + size > self.budget_bytes:
            raise Overloaded(
                f"the server is holding {self.held_bytes} bytes of request bodies and this "
                f"one would go past its budget of {self.budget_bytes} bytes "
                "(serve.max_inflight_body_bytes); retry after the Retry-After seconds",
                retry_after_s=1,
            )
        self.held_bytes += size
        scope[_HELD] = scope.get(_HELD, 0) + size

    def release(self, scope: Scope) -> None:
        """Return what the request reserved; call it once the request is finished."""
        held = scope.pop(_HELD, 0)
        if held:
            self.held_bytes -= held


_BUDGET = "gyre.body_budget"
_HELD = "gyre.body_bytes"
# Bodies are inflated this much at a time, each step counted in the budget as it is
# made: as much as uvicorn buffers of a connection's body.
_INFLATE_STEP_BYTES = 64 * 1024


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, refused with 413 past `limit` bytes (also after decompression), and
    with 503 when the process's `BodyBudget` (attached to the scope) cannot hold it."""
    budget: BodyBudget | None = scope.get(_BUDGET)
    text = header(scope, b"content-length")
    declared = None if text is None else parse_count(text)
    if declared is not None and declared > limit:
        raise PayloadTooLarge(
            f"request body of {declared} bytes is over the limit of {limit} bytes "
            "(serve.max_body_bytes); send fewer rows per request"
        )
    if budget is not None and declared is not None:
        budget.reserve(scope, declared)  # before a byte is read: a refusal costs nothing
    scope["gyre.body_read"] = True
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # Not the end of the body: what came is cut short, and nobody waits for an answer.
            raise BadRequest("the connection closed before the whole body arrived")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"request body is over the limit of {limit} bytes (serve.max_body_bytes); "
                "send fewer rows per request"
            )
        if budget is not None and declared is None and chunk:
            budget.reserve(scope, len(chunk))
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    # One copy: a joined body is one allocation, and the pieces are freed at once.
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    del chunks
    encoding = header(scope, b"content-encoding")
    if encoding in ("gzip", "deflate"):
        body = _decompress(body, encoding, limit, scope, budget)
    return body


def expects_continue(scope: Scope) -> bool:
    expect = header(scope, b"expect")
    return expect is not None and expect.strip().lower() == "100-continue"


def body_was_read(scope: Scope) -> bool:
    """Whether the app asked for the request's body (uvicorn says "100 Continue" to a
    client that waits for it then); not when it was refused by its declared length."""
    return bool(scope.get("gyre.body_read"))


def _decompress(
    body: bytes, encoding: str, limit: int, scope: Scope, budget: BodyBudget | None
) -> bytes:
    """Inflate in steps of at most `_INFLATE_STEP_BYTES`, each counted in the budget as
    it is made: a small body can inflate to `limit` bytes."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    out = bytearray()
    pending = body
    try:
        while not inflater.eof:
            piece = inflater.decompress(pending, min(_INFLATE_STEP_BYTES, limit + 1 - len(out)))
            pending = inflater.unconsumed_tail
            if budget is not None and piece:
                budget.reserve(scope, len(piece))
            out += piece
            if len(out) > limit:
                raise PayloadTooLarge(
                    f"decompressed body is over the limit of {limit} bytes (serve.max_body_bytes)"
                )
            if not piece and not pending:  # the input ran out before the stream's end
                raise BadRequest(
                    f"body is a truncated {encoding} stream: it ends before its last block"
                )
    except zlib.error as exc:
        raise BadRequest(f"body is not valid {encoding} data: {exc}") from None
    return bytes(out)


def version_number(text: str) -> int:
    version = parse_count(text)
    if version is None:
        raise BadRequest(f"version {text!r} must be a whole number in ASCII digits, as in 3")
    return version


def byte_count(scope: Scope, name: bytes) -> int | None:
    """A header that counts bytes (`Inference-Header-Content-Length`), or None if absent."""
    value = header(scope, name)
    if value is None:
        return None
    count = parse_count(value.strip())
    if count is None:
        raise BadRequest(
            f"{name.decode()} must be a number of bytes in ASCII digits, got {value!r}"
        )
    return count


def deadline_ms(scope: Scope) -> float | None:
    """The client's deadline from the `Gyre-Deadline-Ms` header, in milliseconds."""
    value = header(scope, b"gyre-deadline-ms")
    if value is None:
        return None
    # A decimal number in ASCII: float() alone also takes "1_000", "٣" and "nan".
    ms = float(value) if _DECIMAL.fullmatch(value.strip()) else math.nan
    return positive_ms(ms, "Gyre-Deadline-Ms", "milliseconds", value)


_DECIMAL = re.compile(r"[0-9]{1,20}(\.[0-9]{0,20})?([eE][+-]?[0-9]{1,3})?")


def positive_ms(ms: float, what: str, unit: str, given: object) -> float:
    """A deadline a client asked for, in ms. One rule for every way to ask (the header,
    v2's `parameters.timeout`): a positive number, else 400; past the model's latency SLO
    it is capped by the SLO, so infinity means "the SLO"."""
    if not ms > 0:  # 0, negative and NaN
        raise BadRequest(f"{what} must be a positive number of {unit}, got {shown(given)}")
    return ms
