"""An in-process client for the gyre ASGI app, with the lifespan run for real."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx

from gyre.config import Config
from gyre.serve import build_app


@dataclass
class RawAnswer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    body_read: bool  # whether the app asked for the request's body at all


class AppClient:
    """Runs the app's startup on a private event loop and sends requests through httpx."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.app = build_app(config)
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self.app.startup())
        except BaseException:
            self.loop.close()
            raise
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://gyre"
        )

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self._client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def unread(
        self, method: str, path: str, headers: dict[str, str], content_length: int
    ) -> RawAnswer:
        """Send a request's head declaring a body of `content_length` bytes to the app
        directly, and tell whether the app asked for the body (it gets none)."""
        asked: list[bool] = []
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            asked.append(True)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "headers": [(b"content-length", str(content_length).encode())]
            + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        }
        self.loop.run_until_complete(self.app(scope, receive, send))
        start, body = sent
        return RawAnswer(start["status"], dict(start["headers"]), body["body"], bool(asked))

    def refresh(self) -> None:
        self.loop.run_until_complete(self.app.repository.refresh())

    def close(self) -> None:
        self.loop.run_until_complete(self._client.aclose())
        self.loop.run_until_complete(self.app.shutdown())
        self.loop.close()
