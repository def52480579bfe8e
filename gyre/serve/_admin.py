"""`POST /v1/feedback` and the admin reads under `/v1/admin/` (an admin key required).

| method | path | body |
|---|---|---|
| POST | `/v1/feedback` | `{"request_id", "reward": 0..1}` or `{"request_id", "label"}` (once) |
| GET | `/v1/admin/models/{m}/shadow` | — (a summary per version pair, and the logged comparisons) |

The server never writes the registry: alias moves and policy changes are made on the
control plane (`gyre control`, `gyre.control`), and served here once the registry's change
position moves. Their old routes here answer 404 naming the control plane's route, before
any body is read.

The caller was admitted (key, rate) before these run; the body is read only after the
route's own checks (an admin key, a known route) have passed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from gyre._json import decode_object
from gyre.auth import Consumer, Gatekeeper
from gyre.errors import BadRequest, Forbidden, NotFound
from gyre.monitor import FeedbackStore
from gyre.serve._http import Response, json_response

BodyReader = Callable[[], Awaitable[bytes]]

# The writes of the control plane, by the route's last segments: what each one does.
_MOVED = {"aliases": "alias moves and deletes", "policy": "traffic policy changes"}


def _json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object (the protocols' one decoder); no body is `{}`."""
    return decode_object(body, "a JSON object (see docs/protocols.md)") if body.strip() else {}


def moved_to_control(method: str, parts: list[str], control_url: str) -> NotFound | None:
    """The answer to a registry write sent to the server (`method /v1/{parts}`): a 404
    naming the control plane's route, or None for any other request."""
    if method not in ("PUT", "POST", "DELETE") or parts[:2] != ["admin", "models"]:
        return None
    rest = parts[3:]
    if (len(rest) == 2 and rest[0] == "aliases") or (rest == ["policy"] and method != "DELETE"):
        return NotFound(
            f"{_MOVED[rest[0]]} are made on the control plane, not on the model server: run "
            f"`gyre control` and send {method} {control_url}/v1/{'/'.join(parts)} with the "
            'same body and admin key (see docs/serving.md, "Control plane")'
        )
    return None


class Admin:
    def __init__(
        self,
        gatekeeper: Gatekeeper,
        feedback: FeedbackStore,
        on_reward: Callable[[str, int, float], None],
        control_url: str,
    ) -> None:
        """`control_url`: where the control plane answers (`[control]`), for the 404 that
        sends a registry write there."""
        self.gatekeeper = gatekeeper
        self.feedback = feedback
        self._on_reward = on_reward
        self._control_url = control_url

    async def handle(
        self, method: str, parts: list[str], consumer: Consumer | None, body: BodyReader
    ) -> Response:
        """Answer `method /v1/{parts}` for `consumer` (None: no consumers are declared);
        `body()` reads the request's body."""
        if parts == ["feedback"] and method == "POST":
            return await self._feedback(consumer, _json_object(await body()))
        moved = moved_to_control(method, parts, self._control_url)
        if moved is not None:  # before the admin check: a client of old learns where to go
            raise moved
        if len(parts) >= 4 and parts[:2] == ["admin", "models"]:
            model = parts[2]
            self.gatekeeper.authorize(consumer, model=model, admin=True)
            if parts[3:] == ["shadow"] and method == "GET":
                return json_response({
                    "summary": await self.feedback.shadow_summary(model),
                    "comparisons": await self.feedback.shadow_rows(model),
                })  # fmt: skip
        raise NotFound(f"no route {method} /v1/{'/'.join(parts)}; see docs/protocols.md")

    async def _feedback(self, consumer: Consumer | None, body: dict[str, Any]) -> Response:
        """Feedback for an answer this server gave and recorded, once, from a consumer
        that may call the model that gave it (see `gyre/monitor/_feedback.py`)."""
        request_id = body.get("request_id")
        if not isinstance(request_id, str):
            raise BadRequest(
                'send {"request_id": "<Gyre-Request-Id of the answer>", "reward": 0..1} '
                'or {"request_id": …, "label": <the true label>}'
            )
        reward = body.get("reward")
        if reward is not None and (
            not isinstance(reward, (int, float)) or isinstance(reward, bool) or not 0 <= reward <= 1
        ):
            raise BadRequest(f"reward must be a number from 0 to 1, got {reward!r}")
        if reward is None and "label" not in body:
            raise BadRequest("send a `reward` (0 to 1) or the true `label`")
        issued = self.feedback.ids.verify(request_id)
        if issued is None:
            raise NotFound(
                "this server gave no answer with that request_id; post the Gyre-Request-Id "
                "header of the answer"
            )
        if consumer is not None and not consumer.may_call(issued.model):
            raise Forbidden(
                f"consumer `{consumer.name}` may not post feedback for this request: it may "
                "not call the model that answered it"
            )
        if not issued.takes_feedback:
            raise NotFound(
                "that answer was not routed by a bandit policy, so it takes no feedback: "
                "feedback is recorded for the answers a `bandit` policy chose (see "
                "docs/serving.md)"
            )
        served = await self.feedback.served(request_id)
        if served is None:
            raise NotFound(
                "that answer's record is not there (the server process that gave it stopped "
                "before writing it down), so it takes no feedback"
            )
        scored = served.score(body.get("label")) if reward is None else float(reward)
        new = await self.feedback.add_feedback(served, scored, consumer.name if consumer else "")
        if new:
            self._on_reward(served.model, served.version, scored)
        return json_response(
            {"request_id": request_id, "model": served.model, "version": served.version,
             "reward": scored, "recorded": new}
        )  # fmt: skip
