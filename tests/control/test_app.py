"""The control plane's app in process, over a real registry: alias moves, deletes and
traffic policies with an admin key, the keys checked in the server's order (key and rate,
then scope, then the body), and every bad input a 4xx with its reason."""

from __future__ import annotations

import ast
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sklearn.pipeline import Pipeline

import gyre
from gyre.auth import hash_key
from gyre.config import load_config
from gyre.registry import CHAMPION, Registry
from tests.control.client import ControlClient
from tests.forced import UNBLESSED

ADMIN, READER, IRIS_ADMIN, LIMITED = "admin-key", "reader-key", "iris-admin-key", "limited-key"
CONSUMERS = (
    f'[serve.consumers.ops]\nkey_sha256 = "{hash_key(ADMIN)}"\nadmin = true\n'
    f'[serve.consumers.app]\nkey_sha256 = "{hash_key(READER)}"\nmodels = ["iris"]\n'
    f'[serve.consumers.iris-ops]\nkey_sha256 = "{hash_key(IRIS_ADMIN)}"\nmodels = ["iris"]\n'
    "admin = true\n"
    f'[serve.consumers.batch]\nkey_sha256 = "{hash_key(LIMITED)}"\nadmin = true\n'
    "rate_per_s = 0.5\nburst = 2\n"
)
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
SOURCE = Path(gyre.__file__).parent


@pytest.fixture
def published(home: Path, iris_classifier: Pipeline, iris: tuple) -> Iterator[Registry]:
    registry = Registry(home)
    registry.publish("iris", iris_classifier, iris[0], alias=CHAMPION, force_alias=UNBLESSED)
    registry.publish(
        "iris", iris_classifier, iris[0], alias="challenger", force_new=True, force_alias=UNBLESSED
    )
    registry.publish("other", iris_classifier, iris[0], alias=CHAMPION, force_alias=UNBLESSED)
    yield registry
    registry.close()


def control_for(home: Path, text: str = CONSUMERS) -> ControlClient:
    home.mkdir(parents=True, exist_ok=True)
    path = home.parent / "gyre.toml"
    path.write_text(text)
    return ControlClient(load_config(home=home, config_file=path))


@pytest.fixture
def control(published: Registry, home: Path) -> Iterator[ControlClient]:
    client = control_for(home)
    yield client
    client.close()


def test_an_admin_key_moves_and_deletes_aliases_and_sets_policies(
    control: ControlClient, published: Registry
) -> None:
    url = "/v1/admin/models/iris/aliases/champion"
    body = {"version": 2, "reason": "better", "force": True}
    moved = control.put(url, json=body, headers=AS_ADMIN)
    assert moved.status_code == 200, moved.text
    assert moved.json() == {"model": "iris", "alias": "champion", "version": 2, "previous": 1}
    assert published.resolve("iris@champion").version == 2
    change = published.metadata.changes("iris")[-1]
    assert (change["why"], change["forced"]) == ("better (over HTTP by `ops`)", True)
    # POST is a PUT, as on the server before.
    new = control.request(
        "POST", "/v1/admin/models/iris/aliases/old", json={"version": 1}, headers=AS_ADMIN
    )
    assert new.json() == {"model": "iris", "alias": "old", "version": 1, "previous": None}
    policy = control.put(
        "/v1/admin/models/iris/policy",
        json={
            "kind": "split",
            "params": {"weights": {"old": 1, "champion": 3}},
            "reason": "test",
            "force": True,
        },
        headers=AS_ADMIN,
    )
    assert policy.status_code == 200, policy.text
    assert policy.json() == {
        "model": "iris",
        "kind": "split",
        "params": {"weights": {"old": 1.0, "champion": 3.0}},
    }
    assert published.policy("iris") == (
        "split",
        {"weights": {"old": 1.0, "champion": 3.0}},
        None,
    )
    # What a policy sends traffic to cannot be deleted: 409, and the alias stays.
    refused = control.request("DELETE", "/v1/admin/models/iris/aliases/old", headers=AS_ADMIN)
    assert refused.status_code == 409 and "change the policy first" in refused.text
    control.put("/v1/admin/models/iris/policy", json={"kind": "champion"}, headers=AS_ADMIN)
    deleted = control.request("DELETE", "/v1/admin/models/iris/aliases/old", headers=AS_ADMIN)
    assert deleted.json() == {"model": "iris", "alias": "old", "deleted": True}
    assert "old" not in published.resolve("iris:1").aliases


def test_health_is_open_and_every_other_route_needs_a_key(control: ControlClient) -> None:
    assert control.request("GET", "/health").json() == {"status": "ok"}
    sixteen_mib = 16 * 1024 * 1024
    for key in ({}, {"X-Api-Key": "guess"}, {"Authorization": "Bearer guess"}):
        for method, path in (
            ("PUT", "/v1/admin/models/iris/aliases/champion"),
            ("DELETE", "/v1/admin/models/nope/aliases/champion"),
            ("PUT", "/v1/admin/models/other/policy"),
            ("POST", "/v1/nowhere"),
        ):
            answer = control.unread(method, path, key, sixteen_mib)
            assert answer.status == 401, (method, path, answer.body)
            assert not answer.body_read, (method, path)
            for secret in (b"iris", b"nope", b"other", b"ops", b"app"):
                assert secret not in answer.body, (method, path, answer.body)


def test_writes_need_an_admin_key_for_the_model_before_the_body_is_read(
    control: ControlClient, published: Registry
) -> None:
    url = "/v1/admin/models/iris/aliases/champion"
    reader = control.unread("PUT", url, {"X-Api-Key": READER}, 100)
    assert reader.status == 403 and not reader.body_read
    assert b"`app` may not run admin operations" in reader.body
    scoped = control.unread("PUT", "/v1/admin/models/other/policy", {"X-Api-Key": IRIS_ADMIN}, 100)
    assert scoped.status == 403 and not scoped.body_read
    assert b"may not call model `other`" in scoped.body
    forced = {"version": 2, "reason": UNBLESSED, "force": True}
    allowed = control.put(url, json=forced, headers={"X-Api-Key": IRIS_ADMIN})
    assert allowed.status_code == 200, allowed.text
    assert published.resolve("iris@champion").version == 2


def test_without_declared_consumers_every_write_is_refused(published: Registry, home: Path) -> None:
    control = control_for(home, "")
    try:
        answer = control.put("/v1/admin/models/iris/aliases/champion", json={"version": 2})
        assert answer.status_code == 403
        assert "declare a consumer with admin = true" in answer.json()["error"]
        assert published.resolve("iris@champion").version == 1
    finally:
        control.close()


def test_a_consumer_over_its_rate_gets_429_with_retry_after(control: ControlClient) -> None:
    url = "/v1/admin/models/iris/aliases/champion"
    forced = {"version": 2, "reason": UNBLESSED, "force": True}
    answers = [control.put(url, json=forced, headers={"X-Api-Key": LIMITED}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert int(answers[-1].headers["retry-after"]) >= 1


ALIAS = "/v1/admin/models/iris/aliases/champion"
POLICY = "/v1/admin/models/iris/policy"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("PUT", ALIAS, b'{"version": "2"}', 400, 'send {"version": N'),
        ("PUT", ALIAS, b'{"version": true}', 400, 'send {"version": N'),
        ("PUT", ALIAS, b"{}", 400, 'send {"version": N'),
        ("PUT", ALIAS, b'{"version": 9223372036854775808}', 400, "not a version number"),
        ("PUT", ALIAS, b'{"version": 0}', 400, "not a version number"),
        ("PUT", ALIAS, b'{"version": 2, "reason": 5}', 400, "`reason` must be a string"),
        ("PUT", ALIAS, b'{"version": 99}', 404, "99"),
        # Only a blessed version is champion: 409, with what to do.
        ("PUT", ALIAS, b'{"version": 2}', 409, "run `gyre evaluate iris:2` to bless it"),
        ("PUT", ALIAS, b'{"version": 2, "force": true}', 400, "needs a reason"),
        ("PUT", ALIAS, b'{"version": 2, "force": true, "reason": " "}', 400, "needs a reason"),
        ("PUT", ALIAS, b'{"version": 2, "force": "yes", "reason": "r"}', 400, "true or false"),
        ("PUT", "/v1/admin/models/nope/aliases/champion", b'{"version": 1}', 404, "nope"),
        ("PUT", "/v1/admin/models/iris/aliases/b%C3%A5d", b'{"version": 1}', 400, "alias"),
        ("DELETE", "/v1/admin/models/iris/aliases/nope", b"", 404, "no alias `nope`"),
        ("PUT", POLICY, b'{"kind": "roulette"}', 400, "unknown traffic policy"),
        ("PUT", POLICY, b'{"kind": 1}', 400, 'send {"kind": "split"'),
        ("PUT", POLICY, b'{"kind": "split", "params": []}', 400, 'send {"kind": "split"'),
        ("PUT", POLICY, '{"kind": "split", "params": {"weights": {"²": 1}}}'.encode(), 400, ""),
        (
            "PUT",
            POLICY,
            b'{"kind": "split", "params": {"weights": {"champion": 1e308, "challenger": 1e308}}}',
            400,
            "finite",
        ),
        (
            "PUT",
            POLICY,
            b'{"kind": "split", "params": {"weights": {"champion": 1' + b"0" * 400 + b"}}}",
            400,
            "finite number",
        ),
        ("PUT", POLICY, b'{"kind": "split", "params": {"weights": {"x": 1}}}', 400, "no alias"),
        ("PUT", ALIAS, b"[2]", 400, "not a JSON object"),
        ("PUT", ALIAS, b'{"version": 2', 400, "not a JSON object"),
        ("PUT", ALIAS, b'{"version": 2, "reason": "\xff"}', 400, "invalid UTF-8"),
        ("PUT", ALIAS, b'{"version": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "recursion"),
        ("PUT", ALIAS, b'{"version": NaN}', 400, "not a JSON object"),
        ("GET", ALIAS, b"", 404, "no control-plane route GET"),
        ("DELETE", POLICY, b"", 404, "no control-plane route DELETE"),
        ("PUT", "/v1/admin/models/iris/shadow", b"{}", 404, "no control-plane route"),
        ("PUT", "/v1/admin/models/iris/aliases/a/b", b"{}", 404, "no control-plane route"),
        ("GET", "/v2/health/ready", b"", 404, "no control-plane route"),
    ],
)
def test_bad_input_is_a_4xx_with_its_reason(
    control: ControlClient,
    published: Registry,
    method: str,
    path: str,
    body: bytes,
    status: int,
    message: str,
) -> None:
    answer = control.request(method, path, content=body, headers=AS_ADMIN)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"], answer.text
    assert published.resolve("iris@champion").version == 1
    assert published.policy("iris") == ("champion", {}, None)


def test_bodies_past_the_limit_are_413_and_compressed_ones_400(
    published: Registry, home: Path
) -> None:
    control = control_for(home, CONSUMERS + "[control]\nmax_body_bytes = 64\n")
    try:
        declared = control.unread("PUT", ALIAS, {"X-Api-Key": ADMIN}, 65)
        assert declared.status == 413 and not declared.body_read
        assert b"control.max_body_bytes" in declared.body

        async def pieces() -> AsyncIterator[bytes]:  # chunked: no declared length
            yield b'{"version": 2, "reason": "'
            yield b"x" * 64
            yield b'"}'

        streamed = control.put(ALIAS, content=pieces(), headers=AS_ADMIN)
        assert streamed.status_code == 413, streamed.text
        gzip = control.put(
            ALIAS, content=b'{"version": 2}', headers={**AS_ADMIN, "Content-Encoding": "gzip"}
        )
        assert gzip.status_code == 400 and "uncompressed JSON" in gzip.text
        forced = {"version": 2, "force": True, "reason": "r"}  # 43 bytes
        fits = control.put(ALIAS, content=json.dumps(forced), headers=AS_ADMIN)
        assert fits.status_code == 200, fits.text
    finally:
        control.close()


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return names


REGISTRY_WRITES = {
    "set_alias",
    "delete_alias",
    "set_policy",
    "delete_version",
    "publish",
    "publish_file",
    "publish_onnx",
    "publish_python",
}


def test_the_model_server_never_writes_the_registry() -> None:
    """DESIGN.md: serve must not write to the registry. Its writes are the control
    plane's: no module of gyre/serve calls one or imports the registry's write API."""
    found = []
    for path in sorted((SOURCE / "serve").rglob("*.py")):
        where = path.relative_to(SOURCE)
        found += [f"{where} imports {n}" for n in _imports(path) if "registry._admin" in n]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in REGISTRY_WRITES:
                found.append(f"{where}:{node.lineno} .{node.attr}")
    assert found == []


@pytest.mark.parametrize("package", ["registry", "control", "auth"])
def test_the_control_plane_and_what_it_uses_import_no_part_of_serve(package: str) -> None:
    found = [
        f"{path.relative_to(SOURCE)}: {name}"
        for path in sorted((SOURCE / package).rglob("*.py"))
        for name in _imports(path)
        if name == "gyre.serve" or name.startswith("gyre.serve.")
    ]
    assert found == []
