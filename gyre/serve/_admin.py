"""`POST /v1/feedback` and the admin routes under `/v1/admin/` (an admin key required).

| method | path | body |
|---|---|---|
| POST | `/v1/feedback` | `{"request_id": "…", "reward": 0..1}` or `{"request_id", "label"}` |
| PUT | `/v1/admin/models/{m}/aliases/{alias}` | `{"version": N, "reason"?: "…"}` |
| DELETE | `/v1/admin/models/{m}/aliases/{alias}` | `{"reason"?: "…"}` (or no body) |
| PUT | `/v1/admin/models/{m}/policy` | `{"kind": "split", "params": {…}, "reason"?: "…"}` |
| GET | `/v1/admin/models/{m}/shadow` | — (the logged shadow comparisons) |
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from gyre._json import MALFORMED, reason
from gyre.errors import BadRequest, NotFound
from gyre.registry import Registry
from gyre.registry import _admin as registry_admin
from gyre.serve._auth import Gatekeeper, key_of
from gyre.serve._feedback import FeedbackStore, parse_request_id
from gyre.serve._http import Response, Scope, header, json_response

RegistryCall = Callable[[Callable[[Registry], Any]], Awaitable[Any]]

_decode = msgspec.json.Decoder(dict[str, Any]).decode


def _json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        return _decode(body)
    except MALFORMED as exc:
        raise BadRequest(f"body must be a JSON object: {reason(exc)}") from None


class Admin:
    def __init__(
        self,
        gatekeeper: Gatekeeper,
        feedback: FeedbackStore,
        registry_call: RegistryCall,
        on_reward: Callable[[str, int, float], None],
    ) -> None:
        self.gatekeeper = gatekeeper
        self.feedback = feedback
        self._registry_call = registry_call
        self._on_reward = on_reward

    async def handle(self, method: str, parts: list[str], scope: Scope, body: bytes) -> Response:
        key = key_of(header(scope, b"authorization"), header(scope, b"x-api-key"))
        if parts == ["feedback"] and method == "POST":
            return await self._feedback(key, _json_object(body))
        if len(parts) >= 4 and parts[:2] == ["admin", "models"]:
            model, rest = parts[2], parts[3:]
            who = self.gatekeeper.check(key, model=model, admin=True)
            data = _json_object(body)
            if len(rest) == 2 and rest[0] == "aliases" and method in ("PUT", "POST"):
                alias = rest[1]
                return json_response(
                    await self._registry_call(
                        lambda r: registry_admin.set_alias(r, model, alias, data, who)
                    )
                )
            if len(rest) == 2 and rest[0] == "aliases" and method == "DELETE":
                alias = rest[1]
                return json_response(
                    await self._registry_call(
                        lambda r: registry_admin.delete_alias(r, model, alias, data, who)
                    )
                )
            if rest == ["policy"] and method in ("PUT", "POST"):
                return json_response(
                    await self._registry_call(
                        lambda r: registry_admin.set_policy(r, model, data, who)
                    )
                )
            if rest == ["shadow"] and method == "GET":
                return json_response({"comparisons": await self.feedback.shadow_rows(model)})
        raise NotFound(f"no route {method} /v1/{'/'.join(parts)}; see docs/protocols.md")

    async def _feedback(self, key: str | None, body: dict[str, Any]) -> Response:
        request_id = body.get("request_id")
        if not isinstance(request_id, str):
            raise BadRequest(
                'send {"request_id": "<Gyre-Request-Id of the answer>", "reward": 0..1} '
                'or {"request_id": …, "label": <the true label>}'
            )
        model, _ = parse_request_id(request_id)
        self.gatekeeper.check(key, model=model)
        reward = body.get("reward")
        if reward is not None and (
            not isinstance(reward, (int, float)) or isinstance(reward, bool) or not 0 <= reward <= 1
        ):
            raise BadRequest(f"reward must be a number from 0 to 1, got {reward!r}")
        if reward is None and "label" not in body:
            raise BadRequest("send a `reward` (0 to 1) or the true `label`")
        model, version, scored, new = await self.feedback.feedback(
            request_id, None if reward is None else float(reward), body.get("label")
        )
        if new:
            self._on_reward(model, version, scored)
        return json_response(
            {"request_id": request_id, "model": model, "version": version, "reward": scored,
             "recorded": new}
        )  # fmt: skip
