"""A real `gyre control` next to a real `gyre serve` on one home: what the control plane
writes, the server serves at its next poll of the registry's change position."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from sklearn.pipeline import Pipeline

from gyre.auth import hash_key
from gyre.registry import CHAMPION, Registry
from tests.conftest import ServerProcess, free_port, start_control, start_server
from tests.forced import UNBLESSED

pytestmark = pytest.mark.integration

KEY = "ops-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BODY = {
    "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]
}


def _served_version(server: ServerProcess) -> str:
    """The version that answers a request naming only the model, on a new connection
    (the kernel spreads new connections over the server's processes)."""
    answer = httpx.post(f"{server.url}/v2/models/iris/infer", json=BODY, headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["model_version"])


def _seconds_until_served(server: ServerProcess, version: str, since: float) -> float:
    """Seconds from `since` until `version` answered 10 requests in a row (so every
    process serves it), polling for up to 10 s."""
    streak_from, streak = 0.0, 0
    deadline = since + 10
    while streak < 10:
        assert time.monotonic() < deadline, f"version {version} was not served within 10 s"
        if _served_version(server) == version:
            if streak == 0:
                streak_from = time.monotonic()
            streak += 1
        else:
            streak = 0
    return streak_from - since


def test_a_move_on_the_control_plane_is_served_by_a_running_server_within_2_s(
    tmp_path: Path, iris_classifier: Pipeline, iris: tuple
) -> None:
    home = tmp_path / "home"
    registry = Registry(home)
    registry.publish("iris", iris_classifier, iris[0], alias=CHAMPION, force_alias=UNBLESSED)
    registry.publish("iris", iris_classifier, iris[0], force_new=True)  # loaded, not aliased
    registry.close()
    control_port = free_port()
    config = tmp_path / "gyre.toml"
    config.write_text(
        f'[serve.consumers.ops]\nkey_sha256 = "{hash_key(KEY)}"\nadmin = true\n'
        f"[control]\nport = {control_port}\n"
    )
    server = start_server(home, "--workers", "2", config=config)
    control = start_control(home, config=config, port=control_port)
    try:
        assert _served_version(server) == "1"
        alias_url = "/v1/admin/models/iris/aliases/champion"
        # The server's own route of old names this control plane, and changes nothing.
        old = httpx.put(f"{server.url}{alias_url}", json={"version": 2}, headers=AUTH)
        assert old.status_code == 404, old.text
        assert f"PUT {control.url}{alias_url} " in old.json()["error"]
        moved = httpx.put(
            f"{control.url}{alias_url}",
            json={"version": 2, "reason": "test", "force": True},
            headers=AUTH,
        )
        moved_at = time.monotonic()
        assert moved.json() == {"model": "iris", "alias": "champion", "version": 2, "previous": 1}
        assert _seconds_until_served(server, "2", moved_at) < 2.0
        # A traffic policy, the same way: every request to version 1.
        split = {
            "kind": "split",
            "params": {"weights": {"1": 1}},
            "reason": "canary",
            "force": True,
        }
        policy = httpx.put(f"{control.url}/v1/admin/models/iris/policy", json=split, headers=AUTH)
        changed_at = time.monotonic()
        assert policy.status_code == 200, policy.text
        assert _seconds_until_served(server, "1", changed_at) < 2.0
    finally:
        control_status = control.stop()
        assert server.stop() == 0
    assert control_status == 0, control.output()
    assert "PUT /v1/admin/models/iris/aliases/champion by ops" in control.output()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{control.url}/health")
