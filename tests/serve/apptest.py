"""An in-process client for the gyre ASGI app, with the lifespan run for real."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from gyre.config import Config
from gyre.serve import build_app


class AppClient:
    """Runs the app's startup on a private event loop and sends requests through httpx."""

    def __init__(self, config: Config) -> None:
        self.app = build_app(config)
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.app.startup())
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://gyre"
        )

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self._client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def refresh(self) -> None:
        self.loop.run_until_complete(self.app.repository.refresh())

    def close(self) -> None:
        self.loop.run_until_complete(self._client.aclose())
        self.loop.run_until_complete(self.app.shutdown())
        self.loop.close()
