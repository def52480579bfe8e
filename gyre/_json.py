"""JSON that a client sent: every way its bytes can fail to decode, named in one place.

msgspec raises `DecodeError` for malformed JSON and `ValidationError` for a value of the
wrong shape, but `UnicodeDecodeError` for invalid UTF-8 inside a string and
`RecursionError` past its nesting limit. A decode site that caught only the first two
answered 500 to the others; each site catches `MALFORMED` instead (a site that decodes
into a type may catch `ValidationError` first, to say what shape it expected).
"""

from __future__ import annotations

from typing import Any

import msgspec

from gyre.errors import BadRequest

MALFORMED: tuple[type[Exception], ...] = (
    msgspec.DecodeError,
    msgspec.ValidationError,
    UnicodeDecodeError,
    RecursionError,
)


def reason(exc: Exception) -> str:
    """What was wrong with the bytes, in words a client can act on."""
    if isinstance(exc, UnicodeDecodeError):
        return f"invalid UTF-8 at byte {exc.start} of a string ({exc.reason}); send UTF-8 text"
    if isinstance(exc, RecursionError):
        return "nested too deeply (maximum recursion depth exceeded)"
    return str(exc)


_object_decoder = msgspec.json.Decoder(dict[str, Any])


def decode_object(body: bytes, expected: str) -> dict[str, Any]:
    """The body as a JSON object, or BadRequest naming the expected shape."""
    try:
        return _object_decoder.decode(body)
    except MALFORMED as exc:
        raise BadRequest(
            f"request body is not a JSON object: {reason(exc)}; expected {expected}"
        ) from None
