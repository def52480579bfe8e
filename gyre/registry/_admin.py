"""Registry operations as JSON in, JSON out: what the control plane's routes call.

`gyre control` (`gyre.control`) mounts these behind an admin key; the writes and their
checks live here, in the registry's package. The model server never calls them: the data
plane does not change the registry, it reads its changes.
"""

from __future__ import annotations

from typing import Any

from gyre.errors import InvalidModel
from gyre.registry._aliases import check_force
from gyre.registry._registry import Registry


def _reason(body: dict[str, Any], who: str) -> str:
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise InvalidModel("`reason` must be a string")
    return f"{reason} (over HTTP by `{who}`)" if who else f"{reason} (over HTTP)"


def set_alias(
    registry: Registry, model: str, alias: str, body: dict[str, Any], who: str
) -> dict[str, Any]:
    version = body.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise InvalidModel('send {"version": N, "reason": "why"} to point an alias at version N')
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise InvalidModel(
            '`force` must be true or false: send {"version": N, "reason": "why", "force": '
            "true} to give champion or challenger to a version no evaluation blessed"
        )
    reason = _reason(body, who)
    # The reason as sent: "(over HTTP by `who`)" alone is no reason to force a move.
    check_force(f"`{model}@{alias}` to version {version}", force, body.get("reason", ""))
    previous = registry.set_alias(model, alias, version, reason=reason, force=force)
    return {"model": model, "alias": alias, "version": version, "previous": previous}


def delete_alias(
    registry: Registry, model: str, alias: str, body: dict[str, Any], who: str
) -> dict[str, Any]:
    registry.delete_alias(model, alias, reason=_reason(body, who))
    return {"model": model, "alias": alias, "deleted": True}


def set_policy(registry: Registry, model: str, body: dict[str, Any], who: str) -> dict[str, Any]:
    kind = body.get("kind")
    params = body.get("params", {})
    if not isinstance(kind, str) or not isinstance(params, dict):
        raise InvalidModel(
            'send {"kind": "split", "params": {"weights": {"champion": 90, "challenger": 10}}}'
        )
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise InvalidModel(
            '`force` must be true or false: send {"kind": …, "params": …, "reason": "why", '
            '"force": true} to send clients\' traffic to a version no evaluation blessed'
        )
    reason = _reason(body, who)  # a string, checked before it is read
    check_force(f"the {kind} traffic policy of `{model}`", force, body.get("reason", ""))
    clean = registry.set_policy(model, kind, params, reason=reason, force=force)
    return {"model": model, "kind": kind, "params": clean}
