"""Declared consumers: API keys (stored as sha256), model scopes, rate limits, admin rights.

The model server and the control plane both check callers here, against the same
`[serve.consumers]`.

Undeclared consumers are a named ML technical debt: once any consumer is declared, every
route but health and metrics needs a key. The check comes in two steps, in this order:
`admit` (who is calling: 401 for no or an unknown key, then 429 over the consumer's rate)
before anything of the request is read or looked up, so an anonymous client learns
nothing (not which models, event types or request ids exist) and costs nothing (no body
is read); then `authorize` (may this consumer do this: 403) once the route knows the model,
event type or admin operation at stake.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gyre.auth._ratelimit import rate_limits
from gyre.config import ConsumerConfig
from gyre.errors import Forbidden, RateLimited, Unauthorized


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "gyre_" + secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Consumer:
    name: str
    models: frozenset[str] | None  # None: every model
    admin: bool
    events: frozenset[str] | None = frozenset()  # None: every event type
    rate_per_s: float | None = None  # over all processes of the server; None: unlimited

    def may_call(self, model: str) -> bool:
        return self.models is None or model in self.models

    def may_ingest(self, event_type: str) -> bool:
        return self.events is None or event_type in self.events


class Gatekeeper:
    """Checks keys, rates and scopes. With no consumer declared everything is allowed,
    except admin operations, which always need an admin key."""

    def __init__(
        self,
        consumers: Mapping[str, ConsumerConfig],
        *,
        shared_limits: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`shared_limits`: the file in which the processes of one server share their
        rate buckets (see `_ratelimit.py`); None for a server of one process."""
        self.enabled = bool(consumers)
        self._clock = clock
        self._by_hash: dict[str, Consumer] = {}
        for name, declared in consumers.items():
            models = None if "*" in declared.models else frozenset(declared.models)
            events = None if "*" in declared.events else frozenset(declared.events)
            self._by_hash[declared.key_sha256.lower()] = Consumer(
                name, models, declared.admin, events, declared.rate_per_s
            )
        self._limits = rate_limits(consumers, clock(), shared_limits)

    def identify(self, key: str | None) -> Consumer | None:
        if key is None:
            return None
        digest = hash_key(key)
        for known, consumer in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                return consumer
        return None

    def admit(self, key: str | None) -> Consumer | None:
        """The consumer `key` belongs to, within its rate; None when no consumer is
        declared (everyone may call). Raises 401 and 429 errors."""
        if not self.enabled:
            return None
        consumer = self.identify(key)
        if consumer is None:
            raise Unauthorized(
                "this server needs an API key: send `Authorization: Bearer KEY` "
                "(or `X-Api-Key: KEY`; as gRPC metadata the keys are lowercase: "
                "`authorization`, `x-api-key`) with a key declared in [serve.consumers]"
                if key is None
                else "the API key is not valid; check it against [serve.consumers]"
            )
        if consumer.rate_per_s is not None and self._limits is not None:
            wait_s = self._limits.take(consumer.name, self._clock())
            if wait_s > 0:
                raise RateLimited(
                    f"consumer `{consumer.name}` is over its rate of "
                    f"{consumer.rate_per_s:g} requests/s; retry later",
                    retry_after_s=max(1, int(wait_s + 0.999)),
                )
        return consumer

    def authorize(
        self,
        consumer: Consumer | None,
        *,
        model: str | None = None,
        admin: bool = False,
        event_type: str | None = None,
    ) -> None:
        """Raises a 403 error unless `consumer` (from `admit`) may do this."""
        if consumer is None:
            if admin:
                raise Forbidden(
                    "admin operations need an admin key; declare a consumer with "
                    "admin = true in [serve.consumers.NAME] (see `gyre consumers key`)"
                )
            return
        if admin and not consumer.admin:
            raise Forbidden(f"consumer `{consumer.name}` may not run admin operations")
        if model is not None and not consumer.may_call(model):
            raise Forbidden(f"consumer `{consumer.name}` may not call model `{model}`")
        if event_type is not None and not consumer.may_ingest(event_type):
            raise Forbidden(
                f"consumer `{consumer.name}` may not send `{event_type}` events; "
                "list the type in its `events`"
            )


def key_of(authorization: str | None, api_key: str | None) -> str | None:
    """The API key of `Authorization: Bearer KEY` or `X-Api-Key: KEY`."""
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return api_key.strip() if api_key is not None else None
