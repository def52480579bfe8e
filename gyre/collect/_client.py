"""A Python client for `POST /v1/events/{type}`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from gyre.collect._ingest import IngestResult


class EventClient:
    """Send events to a gyre server; each call returns once the server has them on disk."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s)

    def ingest(self, event_type: str, records: Iterable[Mapping[str, Any]]) -> IngestResult:
        """Send records; raises httpx.HTTPStatusError for 4xx/5xx (the body says why)."""
        response = self._http.post(f"/v1/events/{event_type}", json=list(records))
        response.raise_for_status()
        body = response.json()
        return IngestResult(
            body["accepted"], body["duplicates"], body["rejected"], body["watermark"]
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EventClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
