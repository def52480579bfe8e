"""Reading request bodies: the per-request limit and the process's budget of bodies held."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Iterable
from typing import Any

import pytest

from gyre.errors import BadRequest, Overloaded, PayloadTooLarge
from gyre.serve._http import BodyBudget, read_body


def request(length: int | None = None, **headers: str) -> dict[str, Any]:
    pairs = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    if length is not None:
        pairs.append((b"content-length", str(length).encode()))
    return {"type": "http", "headers": pairs}


def messages(*pieces: bytes, disconnect: bool = False) -> Any:
    """A `receive` that hands out `pieces` as one body, and counts its calls."""
    queue: list[dict[str, Any]] = [
        {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
        for i, piece in enumerate(pieces)
    ]
    if disconnect:
        queue[-1]["more_body"] = True
        queue.append({"type": "http.disconnect"})

    async def receive() -> dict[str, Any]:
        receive.calls += 1  # type: ignore[attr-defined]
        return queue.pop(0)

    receive.calls = 0  # type: ignore[attr-defined]
    return receive


def read(scope: dict[str, Any], pieces: Iterable[bytes], limit: int = 1000, **kw: Any) -> bytes:
    return asyncio.run(read_body(scope, messages(*pieces, **kw), limit))


def test_a_declared_body_is_reserved_before_it_is_read_and_refused_past_the_budget() -> None:
    budget = BodyBudget(1000)
    first = request(600)
    budget.attach(first)
    assert read(first, [b"x" * 300, b"x" * 300]) == b"x" * 600
    assert budget.held_bytes == 600  # held until the request is finished
    second = request(500)
    budget.attach(second)
    receive = messages(b"y" * 500)
    with pytest.raises(Overloaded, match=r"holding 600 bytes.*max_inflight_body_bytes") as info:
        asyncio.run(read_body(second, receive, 1000))
    assert info.value.retry_after_s == 1
    assert receive.calls == 0  # refused before a byte of the body was read
    budget.release(second)
    budget.release(first)
    assert budget.held_bytes == 0
    third = request(1000)  # the whole budget, once nothing else is held
    budget.attach(third)
    assert len(read(third, [b"z" * 1000])) == 1000
    budget.release(third)
    budget.release(third)  # releasing twice returns nothing twice
    assert budget.held_bytes == 0


def test_a_body_without_a_length_is_counted_as_it_arrives() -> None:
    budget = BodyBudget(1000)
    held = request(700)
    budget.attach(held)
    read(held, [b"a" * 700])
    chunked = request(transfer_encoding="chunked")
    budget.attach(chunked)
    assert read(chunked, [b"b" * 200, b"b" * 100]) == b"b" * 300
    assert budget.held_bytes == 1000
    budget.release(chunked)
    more = request(transfer_encoding="chunked")
    budget.attach(more)
    with pytest.raises(Overloaded):
        read(more, [b"c" * 200, b"c" * 200])
    assert budget.held_bytes == 900  # what it read before the refusal, until it is released
    budget.release(more)
    assert budget.held_bytes == 700


def test_what_a_body_inflates_to_is_reserved_too() -> None:
    bomb = gzip.compress(b" " * 5000)  # about 40 bytes that inflate to 5000
    budget = BodyBudget(3000)
    scope = request(len(bomb), content_encoding="gzip")
    budget.attach(scope)
    with pytest.raises(Overloaded):
        read(scope, [bomb], limit=10_000)
    budget.release(scope)
    assert budget.held_bytes == 0
    small = gzip.compress(b'{"ok": true}' * 10)
    scope = request(len(small), content_encoding="gzip")
    budget.attach(scope)
    assert read(scope, [small], limit=10_000) == b'{"ok": true}' * 10
    with pytest.raises(PayloadTooLarge, match="decompressed body is over the limit of 100"):
        read(request(len(bomb), content_encoding="gzip"), [bomb], limit=100)


def test_bodies_that_inflate_in_several_steps_come_out_whole() -> None:
    data = bytes(range(256)) * 20_000  # 5 MB: several steps of 1 MiB
    packed = gzip.compress(data, compresslevel=1)
    assert read(request(len(packed), content_encoding="gzip"), [packed], limit=len(data)) == data
    with pytest.raises(BadRequest, match="not valid gzip data"):
        read(request(10, content_encoding="gzip"), [b"not gzip!!"])


def test_the_limit_comes_before_the_budget_and_a_cut_body_is_refused() -> None:
    budget = BodyBudget(1000)
    scope = request(5000)
    budget.attach(scope)
    with pytest.raises(PayloadTooLarge, match="5000 bytes is over the limit of 1000"):
        read(scope, [b"x" * 5000])
    assert budget.held_bytes == 0
    cut = request(transfer_encoding="chunked")
    budget.attach(cut)
    with pytest.raises(BadRequest, match="closed before the whole body arrived"):
        read(cut, [b"x" * 10], disconnect=True)
    budget.release(cut)
    assert budget.held_bytes == 0


def test_a_length_that_is_not_ascii_digits_is_not_taken_as_one() -> None:
    scope = request(content_length="²")  # str.isdigit() says yes; int() refuses it
    assert read(scope, [b"ok"]) == b"ok"
