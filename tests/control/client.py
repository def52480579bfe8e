"""An in-process client for the control plane's ASGI app (its registry is real)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from gyre.config import Config
from gyre.control import build_control_app
from tests.serve.apptest import RawAnswer


class ControlClient:
    """Sends requests to the control app through httpx, on a private event loop."""

    def __init__(self, config: Config) -> None:
        self.app = build_control_app(config)
        self.loop = asyncio.new_event_loop()
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://control"
        )

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self._client.request(method, url, **kwargs))

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def unread(
        self, method: str, path: str, headers: dict[str, str], content_length: int
    ) -> RawAnswer:
        """Send a request's head declaring a body of `content_length` bytes, and tell
        whether the app asked for the body (it gets none)."""
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

    def close(self) -> None:
        self.loop.run_until_complete(self._client.aclose())
        self.app.close()
        self.loop.close()
