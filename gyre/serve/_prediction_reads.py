"""`GET /v1/admin/models/{m}/predictions?limit=N&after=ID`: the prediction log, read back.

An admin key is required (the log holds every caller's inputs). Records come oldest
first, paged by id (`after`: the `next` of the previous page; keyset pagination, so a
page costs the same however deep it is). This process's waiting records are written
first, so a client reads what it was just answered.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

from gyre._numbers import parse_count
from gyre.auth import Consumer, Gatekeeper
from gyre.errors import BadRequest
from gyre.monitor import PredictionLog, read_predictions
from gyre.monitor._prediction_chunks import MAX_READ
from gyre.serve._http import Response, Scope, json_response

DEFAULT_LIMIT = 100
_PARAMETERS = ("limit", "after")


def page_of(query: bytes) -> tuple[int, int]:
    """`limit` (1 to MAX_READ, default DEFAULT_LIMIT) and `after` (an id, default 0)."""
    try:
        pairs = parse_qsl(query.decode("ascii"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise BadRequest("the query string must be ASCII: ?limit=N&after=ID") from None
    given: dict[str, str] = {}
    for name, value in pairs:
        if name not in _PARAMETERS:
            raise BadRequest(f"unknown parameter {name!r}; use limit=N (1 to {MAX_READ}), after=ID")
        if name in given:
            raise BadRequest(f"parameter {name!r} is given twice")
        given[name] = value
    limit, after = DEFAULT_LIMIT, 0
    if "limit" in given:
        count = parse_count(given["limit"])
        if count is None or not 1 <= count <= MAX_READ:
            raise BadRequest(f"limit must be a whole number from 1 to {MAX_READ}")
        limit = count
    if "after" in given:
        position = parse_count(given["after"])
        if position is None:
            raise BadRequest("after must be a record id (a whole number), as `next` gives it")
        after = position
    return limit, after


class PredictionReads:
    def __init__(self, gatekeeper: Gatekeeper, log: PredictionLog | None) -> None:
        self.gatekeeper = gatekeeper
        self.log = log

    async def handle(self, consumer: Consumer | None, model: str, scope: Scope) -> Response:
        self.gatekeeper.authorize(consumer, model=model, admin=True)
        limit, after = page_of(scope.get("query_string", b""))
        found = []
        if self.log is not None:
            await self.log.flush()
            found = await asyncio.to_thread(
                read_predictions, self.log.path, model, after=after, limit=limit
            )
        following = found[-1]["id"] if found else after
        return json_response({"model": model, "predictions": found, "next": following})
