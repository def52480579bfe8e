"""The small HTTP vocabulary of the ASGI app: responses, headers, bodies, errors."""

from __future__ import annotations

import math
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from gyre._numbers import parse_count
from gyre.errors import BadRequest, GyreError, Overloaded, PayloadTooLarge, RateLimited
from gyre.serve._errors import error_body, status_of

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
    status = status_of(exc)
    headers: Headers = []
    if isinstance(exc, (Overloaded, RateLimited)):
        headers.append((b"retry-after", str(exc.retry_after_s).encode()))
    return json_response(error_body(protocol, status, str(exc)), status, headers)


def header(scope: Scope, name: bytes) -> str | None:
    """A request header by lower-case name (the headers are indexed once per request)."""
    index = scope.get("gyre.headers")
    if index is None:
        index = scope["gyre.headers"] = dict(scope["headers"])
    value = index.get(name)
    return None if value is None else bytes(value).decode("latin-1")


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, refused with 413 past `limit` bytes (also after decompression)."""
    declared = header(scope, b"content-length")
    size = None if declared is None else parse_count(declared)
    if size is not None and size > limit:
        raise PayloadTooLarge(
            f"request body of {declared} bytes is over the limit of {limit} bytes "
            "(serve.max_body_bytes); send fewer rows per request"
        )
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
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    encoding = header(scope, b"content-encoding")
    if encoding in ("gzip", "deflate"):
        body = _decompress(body, encoding, limit)
    return body


def body_was_read(scope: Scope) -> bool:
    """Whether the app asked for the request's body (uvicorn says "100 Continue" to a
    client that waits for it then); not when it was refused by its declared length."""
    return bool(scope.get("gyre.body_read"))


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    try:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"body is not valid {encoding} data: {exc}") from None
    if len(data) > limit:
        raise PayloadTooLarge(
            f"decompressed body is over the limit of {limit} bytes (serve.max_body_bytes)"
        )
    return data


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
    try:
        ms = float(value)
    except ValueError:
        ms = math.nan
    return positive_ms(ms, "Gyre-Deadline-Ms", "milliseconds", value)


def positive_ms(ms: float, what: str, unit: str, given: object) -> float:
    """A deadline a client asked for, in ms. One rule for every way to ask (the header,
    v2's `parameters.timeout`): a positive number, else 400; past the model's latency SLO
    it is capped by the SLO, so infinity means "the SLO"."""
    if not ms > 0:  # 0, negative and NaN
        shown = repr(given) if len(repr(given)) <= 40 else f"{repr(given)[:30]}…"
        raise BadRequest(f"{what} must be a positive number of {unit}, got {shown}")
    return ms
