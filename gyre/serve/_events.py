"""`POST /v1/events/TYPE`: events appended to the fact log by the serving process.

Validation and the durable commit block, so they run on a pool of ingestion threads,
where concurrent callers share one commit (`Collector`'s group commit): enough threads
that they can.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from gyre.auth import Consumer, Gatekeeper
from gyre.collect import Collector, parse_events
from gyre.errors import UnknownEventType
from gyre.serve._http import Receive, Response, Scope, json_response, read_body

INGEST_THREADS = 32


class EventRoutes:
    """Ingestion into `collector` (None: no event types are declared)."""

    def __init__(
        self, gatekeeper: Gatekeeper, collector: Collector | None, max_body_bytes: int
    ) -> None:
        self.gatekeeper = gatekeeper
        self.collector = collector
        self.max_body_bytes = max_body_bytes
        self._threads = (
            ThreadPoolExecutor(INGEST_THREADS, thread_name_prefix="gyre-ingest")
            if collector
            else None
        )

    async def ingest(
        self, consumer: Consumer | None, type_name: str, scope: Scope, receive: Receive
    ) -> Response:
        # The scope first: a consumer that may not send this type learns nothing of the
        # declared ones.
        self.gatekeeper.authorize(consumer, event_type=type_name)
        collector, threads = self.collector, self._threads
        if collector is None or threads is None:
            raise UnknownEventType(
                f"unknown event type `{type_name}`: no event types are declared "
                "([collect.events.NAME] in gyre.toml)"
            )
        collector.event_type(type_name)
        body = await read_body(scope, receive, self.max_body_bytes)
        result = await asyncio.get_running_loop().run_in_executor(
            threads, lambda: collector.ingest(type_name, parse_events(body))
        )
        return json_response(result.as_json())

    def close(self) -> None:
        """Finish the ingestion under way, then close the fact log."""
        if self._threads is not None:
            self._threads.shutdown(wait=True)
        if self.collector is not None:
            self.collector.close()
