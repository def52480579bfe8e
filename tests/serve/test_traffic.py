"""Defaults, cache, admission, traffic policies, feedback and consumers, on the real app
in process (Python models run in their real worker processes)."""

from __future__ import annotations

import json
import random
import secrets
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sklearn.pipeline import Pipeline

from gyre.auth import hash_key
from gyre.config import Config, load_config
from gyre.errors import ConfigError
from gyre.registry import CHAMPION, Registry
from gyre.serve._server import check_configured_models, check_exposure
from tests.control.client import ControlClient
from tests.forced import UNBLESSED
from tests.serve.apptest import AppClient

PYMODELS = Path(__file__).parent / "pymodels"
ROW = [5.1, 3.5, 1.4, 0.2]
ADMIN_KEY, READER_KEY, LIMITED_KEY = "admin-key", "reader-key", "limited-key"


def v2(rows: list[list[float]], name: str = "X", **extra: object) -> dict:
    width = len(rows[0])
    return {
        "inputs": [{"name": name, "shape": [len(rows), width], "datatype": "FP32", "data": rows}],
        **extra,
    }


def scorer_body(command: int, value: float = 1.5) -> dict:
    return v2([[command, value]], name="x")


def write_config(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home.parent / "gyre.toml"
    path.write_text(text)
    return path


@pytest.fixture
def two_versions(home: Path, iris_classifier: Pipeline, iris: tuple) -> Registry:
    registry = Registry(home)
    registry.publish("iris", iris_classifier, iris[0], alias=CHAMPION, force_alias=UNBLESSED)
    registry.publish(
        "iris", iris_classifier, iris[0], alias="challenger", force_new=True, force_alias=UNBLESSED
    )
    return registry


def client_for(home: Path, config_text: str = "") -> AppClient:
    path = write_config(home, config_text)
    return AppClient(load_config(home=home, config_file=path))


@pytest.fixture
def scorer_client(home: Path) -> Iterator[AppClient]:
    Registry(home).publish_file("scorer", PYMODELS / "scorer.py")
    client = client_for(
        home,
        "[serve.models.scorer]\nlatency_slo_ms = 100\nworker_timeout_ms = 1000\n"
        "default_output = { score = -1.0 }\n",
    )
    yield client
    client.close()


# -- default predictions ----------------------------------------------------------------


def test_a_late_answer_is_replaced_by_the_marked_default(scorer_client: AppClient) -> None:
    fast = scorer_client.post("/v2/models/scorer/infer", json=scorer_body(0))
    assert fast.json()["outputs"][0]["data"] == [3.0]
    assert "gyre-default" not in fast.headers
    slow = scorer_client.post("/v2/models/scorer/infer", json=scorer_body(1))
    assert slow.status_code == 200
    body = slow.json()
    assert body["outputs"][0]["data"] == [-1.0]
    assert body["parameters"] == {"default": True, "default_reason": "deadline of 100 ms exceeded"}
    assert slow.headers["gyre-default"] == "deadline of 100 ms exceeded"
    tf = scorer_client.post("/v1/models/scorer:predict", json={"instances": [[1, 1.5]]}).json()
    assert tf == {"predictions": [-1.0], "default": True, "default_reason": tf["default_reason"]}
    mlflow = scorer_client.post(
        "/invocations", json={"inputs": [[1, 1.5]]}, headers={"Gyre-Model": "scorer"}
    ).json()
    assert mlflow["default"] is True
    metrics = scorer_client.get("/metrics").text
    assert 'gyre_default_prediction_ratio{model="scorer"} 0.75' in metrics


def test_the_client_deadline_can_only_shorten_the_slo(scorer_client: AppClient) -> None:
    # 0.2 s of work: over a 50 ms client deadline, and over the 100 ms SLO despite 10 s asked.
    for deadline in ("50", "10000"):
        response = scorer_client.post(
            "/v2/models/scorer/infer", json=scorer_body(1), headers={"Gyre-Deadline-Ms": deadline}
        )
        assert response.headers["gyre-default"].startswith("deadline of")
    for value in ("soon", "nan", "-5", "0"):
        bad = scorer_client.post(
            "/v2/models/scorer/infer", json=scorer_body(0), headers={"Gyre-Deadline-Ms": value}
        )
        assert bad.status_code == 400
        assert "number of milliseconds" in bad.json()["error"]


def test_without_a_default_a_late_answer_is_504(home: Path) -> None:
    Registry(home).publish_file("scorer", PYMODELS / "scorer.py")
    client = client_for(home, "[serve.models.scorer]\nlatency_slo_ms = 50\n")
    try:
        response = client.post("/v2/models/scorer/infer", json=scorer_body(1))
        assert response.status_code == 504
        assert "configure `default_output`" in response.json()["error"]
    finally:
        client.close()


def test_a_default_that_does_not_fit_the_signature_fails_the_load(home: Path) -> None:
    Registry(home).publish_file("scorer", PYMODELS / "scorer.py")
    client = client_for(home, "[serve.models.scorer]\ndefault_output = { label = 1 }\n")
    try:
        response = client.post("/v2/models/scorer/infer", json=scorer_body(0))
        assert response.status_code == 503
        assert "default_output of model `scorer` must give every output" in response.text
    finally:
        client.close()


# -- python workers ---------------------------------------------------------------------


def test_a_crashed_or_raising_python_model_answers_cleanly(scorer_client: AppClient) -> None:
    raised = scorer_client.post("/v2/models/scorer/infer", json=scorer_body(4))
    assert raised.status_code == 400
    assert "ValueError: command 4 says raise" in raised.json()["error"]
    crashed = scorer_client.post("/v2/models/scorer/infer", json=scorer_body(2))
    # The worker died with the request in flight: the model's default answers it.
    assert crashed.headers["gyre-default"] == "model unavailable"
    assert (
        'gyre_worker_restarts_total{model="scorer",version="1"} 1.0'
        in scorer_client.get("/metrics").text
    )


# -- cache ------------------------------------------------------------------------------


def test_cache_answers_repeated_inputs(home: Path, iris_classifier: Pipeline, iris: tuple) -> None:
    Registry(home).publish("iris", iris_classifier, iris[0])
    client = client_for(home, "[serve.models.iris]\ncache = true\n")
    try:
        first = client.post("/v2/models/iris/infer", json=v2([ROW])).json()
        second = client.post("/v2/models/iris/infer", json=v2([ROW])).json()
        other = client.post("/v2/models/iris/infer", json=v2([[6.0, 3.0, 5.0, 2.0]])).json()
        assert first["outputs"] == second["outputs"] != other["outputs"]
        metrics = client.get("/metrics").text
        assert 'gyre_cache_lookups_total{model="iris",result="hit"} 1.0' in metrics
        assert 'gyre_cache_hit_ratio{model="iris"} 0.333' in metrics
    finally:
        client.close()


# -- traffic policies -------------------------------------------------------------------


def test_canary_split_sends_the_configured_share(two_versions: Registry, home: Path) -> None:
    two_versions.set_policy("iris", "split", {"weights": {"champion": 90, "challenger": 10}})
    client = client_for(home)
    try:
        versions = Counter(
            client.post("/v2/models/iris/infer", json=v2([ROW])).headers["gyre-model-version"]
            for _ in range(2000)
        )
        # Binomial(2000, 0.1): mean 200, sd 13.4; 4.5 sd either way.
        assert 140 <= versions["2"] <= 260, versions
        assert versions["1"] + versions["2"] == 2000
        # Naming a version or alias bypasses the policy.
        pinned = client.post("/v2/models/iris/versions/1/infer", json=v2([ROW]))
        assert pinned.headers["gyre-model-version"] == "1"
    finally:
        client.close()


@pytest.mark.parametrize(
    "stored",
    [
        ("split", {"weights": {"champion": float("inf"), "challenger": 1.0}}),
        ("split", {"weights": {"champion": 1e308, "challenger": 1e308}}),
        ("split", {"weights": {"\u00b2": 100.0}}),
        ("bandit", {"arms": ["champion", "\u0662"]}),
        ("roulette", {}),
        ("split", "{not json"),
    ],
)
def test_a_stored_policy_the_server_cannot_use_stops_nothing(
    two_versions: Registry, home: Path, iris_classifier: Pipeline, iris: tuple, stored: tuple
) -> None:
    """Written as an older gyre (or a hand) could: the server starts, serves the model by its
    champion, keeps serving and reloading everything else, and says what is broken."""
    two_versions.publish("other", iris_classifier, iris[0], alias=CHAMPION, force_alias=UNBLESSED)
    two_versions.publish(
        "other", iris_classifier, iris[0], alias="challenger", force_new=True, force_alias=UNBLESSED
    )
    two_versions.set_policy("other", "split", {"weights": {"challenger": 1}})
    kind, params = stored
    if isinstance(params, str):
        with two_versions.metadata._write() as conn:
            conn.execute(
                "INSERT INTO policies VALUES ('iris', ?, ?, 0)", (kind, params)
            )  # fmt: skip
    else:
        two_versions.metadata.set_policy("iris", kind, params, reason="as stored before")
    two_versions.set_alias("iris", CHAMPION, 2, reason=UNBLESSED, force=True)
    client = client_for(home)  # the startup itself used to fail here
    try:
        for _ in range(20):
            answer = client.post("/v2/models/iris/infer", json=v2([ROW]))
            assert answer.status_code == 200 and answer.headers["gyre-model-version"] == "2"
        other = client.post("/v2/models/other/infer", json=v2([ROW]))
        assert other.headers["gyre-model-version"] == "2"  # its own policy still applies
        metrics = client.get("/metrics").text
        assert 'gyre_registry_broken_entries{entry="policy",model="iris"} 1.0' in metrics
        # Later changes are still served: a new version, an alias move, a valid policy.
        two_versions.publish("iris", iris_classifier, iris[0], force_new=True)
        two_versions.set_alias("iris", CHAMPION, 3, reason=UNBLESSED, force=True)
        client.refresh()
        answer = client.post("/v2/models/iris/infer", json=v2([ROW]))
        assert answer.headers["gyre-model-version"] == "3"
        two_versions.set_policy("iris", "split", {"weights": {"challenger": 1}})
        client.refresh()
        answer = client.post("/v2/models/iris/infer", json=v2([ROW]))
        assert answer.headers["gyre-model-version"] == "2"
        metrics = client.get("/metrics").text
        assert 'gyre_registry_broken_entries{entry="policy",model="iris"} 0.0' in metrics
    finally:
        client.close()


def test_shadow_answers_from_primary_and_logs_both(two_versions: Registry, home: Path) -> None:
    two_versions.set_policy("iris", "shadow", {"shadow": "challenger"})
    client = client_for(
        home, f'[serve.consumers.ops]\nkey_sha256 = "{hash_key(ADMIN_KEY)}"\nadmin = true\n'
    )
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    try:
        for _ in range(10):
            response = client.post("/v2/models/iris/infer", json=v2([ROW]), headers=auth)
            assert response.headers["gyre-model-version"] == "1"
        client.loop.run_until_complete(client.app.predictor.drain())
        rows = client.get("/v1/admin/models/iris/shadow", headers=auth).json()["comparisons"]
        assert len(rows) == 10
        assert {(r["primary_version"], r["shadow_version"], r["agree"]) for r in rows} == {
            (1, 2, 1)
        }
        assert json.loads(rows[0]["primary_answer"]) == json.loads(rows[0]["shadow_answer"])
        metrics = client.get("/metrics").text
        assert 'gyre_shadow_comparisons_total{model="iris",result="agree"} 10.0' in metrics
    finally:
        client.close()


def test_bandit_moves_traffic_to_the_better_version(two_versions: Registry, home: Path) -> None:
    two_versions.set_policy("iris", "bandit", {"arms": ["champion", "challenger"]})
    client = client_for(home)
    rng = random.Random(7)
    success = {"1": 0.3, "2": 0.8}  # the challenger is the better version
    try:
        served = []
        for _ in range(400):
            response = client.post("/v2/models/iris/infer", json=v2([ROW]))
            version = response.headers["gyre-model-version"]
            served.append(version)
            reward = 1.0 if rng.random() < success[version] else 0.0
            feedback = client.post(
                "/v1/feedback",
                json={"request_id": response.headers["gyre-request-id"], "reward": reward},
            )
            assert feedback.status_code == 200, feedback.text
        late = Counter(served[-200:])
        assert late["2"] >= 150, late
    finally:
        client.close()


def test_feedback_by_label_is_scored_and_idempotent(two_versions: Registry, home: Path) -> None:
    two_versions.set_policy("iris", "bandit", {"arms": ["1", "2"]}, reason=UNBLESSED, force=True)
    client = client_for(home)
    try:
        response = client.post("/v2/models/iris/infer", json=v2([ROW]))
        request_id = response.headers["gyre-request-id"]
        predicted = response.json()["outputs"][0]["data"][0]
        client.loop.run_until_complete(client.app.predictor.feedback.flush())
        first = client.post("/v1/feedback", json={"request_id": request_id, "label": predicted})
        assert first.json()["reward"] == 1.0 and first.json()["recorded"] is True
        again = client.post("/v1/feedback", json={"request_id": request_id, "label": predicted})
        assert again.json()["recorded"] is False
        for body, message in (
            ({"request_id": request_id, "reward": 2}, "from 0 to 1"),
            ({"request_id": request_id}, "send a `reward`"),
            ({"reward": 1}, "request_id"),
        ):
            bad = client.post("/v1/feedback", json=body)
            assert bad.status_code == 400 and message in bad.json()["error"]
    finally:
        client.close()


def _bandit_stats(client: AppClient, model: str) -> dict[int, tuple[int, float]]:
    feedback = client.app.predictor.feedback
    return client.loop.run_until_complete(feedback.bandit_stats([model]))[model]


def test_forged_feedback_is_refused_and_steers_nothing(two_versions: Registry, home: Path) -> None:
    two_versions.set_policy("iris", "bandit", {"arms": ["champion", "challenger"]})
    client = client_for(home)
    try:
        real = client.post("/v2/models/iris/infer", json=v2([ROW])).headers["gyre-request-id"]
        pinned = client.post("/v2/models/iris/versions/2/infer", json=v2([ROW]))
        model, version, token = real.split("~")
        flipped = token[:-1] + ("1" if token[-1] == "0" else "0")
        # The attacker wants all traffic on version 2: 600 rewards for answers never given.
        forged = [f"iris~2~{secrets.token_hex(32)}" for _ in range(300)]
        # The next ids of a real one's counter, the tag kept: well-formed, so only the tag
        # can refuse them.
        nonce, tag = token[:32], token[32:]
        forged += [f"iris~{version}~{int(nonce, 16) + n:032x}{tag}" for n in range(1, 301)]
        forged += [
            f"iris~{3 - int(version)}~{token}",  # a real id, moved to the other version
            f"{model}~{version}~{flipped}",
            f"{model}~{version}~{token.upper()}",
            f"{model}~0{version}~{token}",
            "nope",
        ]
        for request_id in forged:
            answer = client.post("/v1/feedback", json={"request_id": request_id, "reward": 1})
            assert answer.status_code == 404, (request_id, answer.text)
            assert "Gyre-Request-Id header of the answer" in answer.json()["error"]
        # A real answer that the bandit did not choose (the client named the version).
        chosen = client.post(
            "/v1/feedback", json={"request_id": pinned.headers["gyre-request-id"], "reward": 1}
        )
        assert chosen.status_code == 404 and "not routed by a bandit" in chosen.json()["error"]
        assert _bandit_stats(client, "iris") == {}
        served = Counter(
            client.post("/v2/models/iris/infer", json=v2([ROW])).headers["gyre-model-version"]
            for _ in range(200)
        )
        # No evidence: both arms are drawn from Beta(1, 1), a fair coin (sd 7 over 200).
        assert served["1"] >= 60 and served["2"] >= 60, served
        taken = client.post("/v1/feedback", json={"request_id": real, "reward": 1})
        assert taken.status_code == 200 and taken.json()["recorded"] is True
        assert _bandit_stats(client, "iris") == {int(version): (1, 1.0)}
    finally:
        client.close()


def test_feedback_is_taken_once_per_answer_and_names_who_posted_it(
    two_versions: Registry, home: Path
) -> None:
    two_versions.set_policy("iris", "bandit", {"arms": ["1", "2"]}, reason=UNBLESSED, force=True)
    client = client_for(
        home,
        f'[serve.consumers.app]\nkey_sha256 = "{hash_key(READER_KEY)}"\nmodels = ["iris"]\n'
        f'[serve.consumers.ops]\nkey_sha256 = "{hash_key(ADMIN_KEY)}"\n'
        f'[serve.consumers.other]\nkey_sha256 = "{hash_key(LIMITED_KEY)}"\nmodels = ["x"]\n',
    )

    def feedback(key: str, **body: object) -> httpx.Response:
        return client.post("/v1/feedback", json=body, headers={"X-Api-Key": key})

    try:
        answer = client.post(
            "/v2/models/iris/infer", json=v2([ROW]), headers={"X-Api-Key": READER_KEY}
        )
        request_id = answer.headers["gyre-request-id"]
        version = int(answer.headers["gyre-model-version"])
        outsider = feedback(LIMITED_KEY, request_id=request_id, reward=1)
        assert outsider.status_code == 403
        assert outsider.json()["error"] == (
            "consumer `other` may not post feedback for this request: it may not call the "
            "model that answered it"
        )
        first = feedback(READER_KEY, request_id=request_id, reward=0.25)
        assert first.status_code == 200 and first.json()["recorded"] is True
        for key in (ADMIN_KEY, READER_KEY):  # only the first post for an answer counts
            again = feedback(key, request_id=request_id, reward=1)
            assert again.status_code == 200 and again.json()["recorded"] is False
        with sqlite3.connect(home / "feedback.db") as db:
            rows = db.execute("SELECT request_id, model, version, reward, consumer FROM feedback")
            assert rows.fetchall() == [(request_id, "iris", version, 0.25, "app")]
        assert _bandit_stats(client, "iris") == {version: (1, 0.25)}
    finally:
        client.close()


def test_changes_made_on_the_control_plane_are_served_at_the_next_reload(
    two_versions: Registry, home: Path
) -> None:
    client = client_for(
        home,
        f'[serve.consumers.ops]\nkey_sha256 = "{hash_key(ADMIN_KEY)}"\nadmin = true\n'
        f'[serve.consumers.app]\nkey_sha256 = "{hash_key(READER_KEY)}"\nmodels = ["iris"]\n',
    )
    control = ControlClient(client.config)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    reader = {"X-Api-Key": READER_KEY}
    try:
        url = "/v1/admin/models/iris/aliases/champion"
        body = {"version": 2, "reason": "test", "force": True}
        moved = control.put(url, json=body, headers=admin)
        assert moved.json() == {"model": "iris", "alias": "champion", "version": 2, "previous": 1}
        client.refresh()  # what the server's poll does when the change position moves
        answer = client.post("/v2/models/iris/infer", json=v2([ROW]), headers=reader)
        assert answer.headers["gyre-model-version"] == "2"
        policy = control.put(
            "/v1/admin/models/iris/policy",
            json={
                "kind": "split",
                "params": {"weights": {"1": 1}},
                "reason": "test",
                "force": True,
            },
            headers=admin,
        )
        assert policy.status_code == 200
        client.refresh()
        answer = client.post("/v2/models/iris/infer", json=v2([ROW]), headers=reader)
        assert answer.headers["gyre-model-version"] == "1"
        change = two_versions.metadata.changes("iris")[-1]
        assert change["action"] == "policy" and "`ops`" in change["why"]
    finally:
        control.close()
        client.close()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v1/admin/models/iris/aliases/champion"),
        ("POST", "/v1/admin/models/iris/aliases/champion"),
        ("DELETE", "/v1/admin/models/iris/aliases/challenger"),
        ("PUT", "/v1/admin/models/iris/policy"),
        ("POST", "/v1/admin/models/iris/policy"),
    ],
)
def test_the_servers_old_write_routes_name_the_control_plane_route(
    two_versions: Registry, home: Path, method: str, path: str
) -> None:
    """The server writes nothing: its former admin writes answer 404 with the control
    plane's route (from [control]), for any admitted caller, before the body is read."""
    for consumers, key in (
        (f'[serve.consumers.ops]\nkey_sha256 = "{hash_key(ADMIN_KEY)}"\nadmin = true\n',
         {"X-Api-Key": ADMIN_KEY}),
        (f'[serve.consumers.app]\nkey_sha256 = "{hash_key(READER_KEY)}"\n',
         {"X-Api-Key": READER_KEY}),
        ("", {}),
    ):  # fmt: skip
        client = client_for(home, consumers + '[control]\nhost = "10.0.0.7"\nport = 9002\n')
        try:
            answer = client.unread(method, path, key, 16 * 1024 * 1024)
            assert answer.status == 404 and not answer.body_read, answer.body
            error = json.loads(answer.body)["error"]
            assert "made on the control plane" in error and "`gyre control`" in error
            assert f"{method} http://10.0.0.7:9002{path} " in error, error
        finally:
            client.close()
    assert two_versions.resolve("iris@champion").version == 1
    assert two_versions.resolve("iris@challenger").version == 2
    assert two_versions.policy("iris") == ("champion", {}, None)


# -- consumers --------------------------------------------------------------------------


def test_consumers_are_authenticated_scoped_and_rate_limited(
    home: Path, iris_classifier: Pipeline, iris: tuple
) -> None:
    registry = Registry(home)
    registry.publish("iris", iris_classifier, iris[0])
    registry.publish("other", iris_classifier, iris[0])
    client = client_for(
        home,
        f'[serve.consumers.app]\nkey_sha256 = "{hash_key(READER_KEY)}"\nmodels = ["iris"]\n'
        f'[serve.consumers.batch]\nkey_sha256 = "{hash_key(LIMITED_KEY)}"\n'
        "rate_per_s = 0.5\nburst = 2\n",
    )
    try:
        url = "/v2/models/iris/infer"
        assert client.post(url, json=v2([ROW])).status_code == 401
        wrong = client.post(url, json=v2([ROW]), headers={"X-Api-Key": "guess"})
        assert wrong.status_code == 401 and "not valid" in wrong.json()["error"]
        ok = client.post(url, json=v2([ROW]), headers={"Authorization": f"Bearer {READER_KEY}"})
        assert ok.status_code == 200
        scoped = client.post(
            "/v2/models/other/infer", json=v2([ROW]), headers={"X-Api-Key": READER_KEY}
        )
        assert scoped.status_code == 403 and "may not call model `other`" in scoped.text
        statuses = [
            client.post(url, json=v2([ROW]), headers={"X-Api-Key": LIMITED_KEY}) for _ in range(3)
        ]
        assert [r.status_code for r in statuses] == [200, 200, 429]
        assert int(statuses[-1].headers["retry-after"]) >= 1
        mlflow = client.post("/invocations", json={"inputs": [ROW]}, headers={"Gyre-Model": "iris"})
        assert mlflow.status_code == 401 and mlflow.json()["error_code"] == "UNAUTHENTICATED"
        assert client.get("/v2/health/ready").status_code == 200  # health stays open
        metrics = client.get("/metrics").text
        assert 'consumer="app",model="iris",protocol="v2",status="200"' in metrics
        admin = client.get("/v1/admin/models/iris/shadow", headers={"X-Api-Key": READER_KEY})
        assert admin.status_code == 403
    finally:
        client.close()


def test_without_a_valid_key_nothing_is_read_or_looked_up(
    home: Path, iris_classifier: Pipeline, iris: tuple
) -> None:
    Registry(home).publish("iris", iris_classifier, iris[0])
    client = client_for(
        home,
        '[collect.events.clicks]\nfields = {user = "int", at = "timestamp"}\n'
        'entity = ["user"]\ntime = "at"\n'
        f'[serve.consumers.app]\nkey_sha256 = "{hash_key(READER_KEY)}"\nmodels = ["iris"]\n'
        f'[serve.consumers.ops]\nkey_sha256 = "{hash_key(ADMIN_KEY)}"\nadmin = true\n',
    )
    sixteen_mib = 16 * 1024 * 1024
    try:
        for key in ({}, {"X-Api-Key": "guess"}, {"Authorization": "Bearer guess"}):
            for method, path, extra in (
                ("POST", "/v1/events/nope", {}),
                ("POST", "/v1/events/clicks", {}),
                ("POST", "/v1/feedback", {}),
                ("PUT", "/v1/admin/models/iris/aliases/champion", {}),
                ("POST", "/v2/models/nope/infer", {}),
                ("POST", "/v2/models/iris/infer", {}),
                ("GET", "/v2/models/nope", {}),
                ("POST", "/v1/models/nope:predict", {}),
                ("GET", "/v1/models/nope/metadata", {}),
                ("POST", "/invocations", {"Gyre-Model": "nope"}),
                ("POST", "/v1/nowhere", {}),
            ):
                answer = client.unread(method, path, {**key, **extra}, sixteen_mib)
                assert answer.status == 401, (method, path, answer.body)
                assert not answer.body_read, (method, path)
                for secret in (b"clicks", b"iris", b"nope", b"app", b"ops", b"served"):
                    assert secret not in answer.body, (method, path, answer.body)
        # A consumer learns of event types only when it may send them all.
        typed = client.unread("POST", "/v1/events/nope", {"X-Api-Key": READER_KEY}, 10)
        assert typed.status == 403 and b"clicks" not in typed.body and not typed.body_read
        # Admitted, but not an admin: refused before the body is read.
        admin = client.unread("GET", "/v1/admin/models/iris/shadow",
                              {"X-Api-Key": READER_KEY}, sixteen_mib)  # fmt: skip
        assert admin.status == 403 and not admin.body_read
        # A client waiting for "100 Continue" is told the connection closes.
        waiting = client.unread("POST", "/v1/feedback", {"Expect": "100-continue"}, 10)
        assert waiting.status == 401 and waiting.headers[b"connection"] == b"close"
        too_long = {"Expect": "100-continue", "X-Api-Key": READER_KEY}
        large = client.unread("POST", "/v2/models/iris/infer", too_long, sixteen_mib + 1)
        assert large.status == 413 and large.headers[b"connection"] == b"close"
        assert client.get("/v2/health/ready").status_code == 200  # open, as /metrics
        assert client.get("/metrics").status_code == 200
    finally:
        client.close()


def test_admin_routes_are_closed_without_declared_consumers(
    two_versions: Registry, home: Path
) -> None:
    client = client_for(home)
    try:
        response = client.get("/v1/admin/models/iris/shadow")
        assert response.status_code == 403
        assert "declare a consumer with admin = true" in response.json()["error"]
    finally:
        client.close()


def test_an_open_server_binds_only_to_loopback(home: Path) -> None:
    def config(host: str, insecure: bool = False, consumers: str = "") -> None:
        path = write_config(home, consumers)
        check_exposure(
            load_config(
                home=home,
                config_file=path,
                serve_overrides={"host": host, "insecure": insecure or None},
            )
        )

    config("127.0.0.1")
    config("::1")
    config("localhost")
    with pytest.raises(ConfigError, match=r"refusing to serve on 0\.0\.0\.0 with no consumers"):
        config("0.0.0.0")
    config("0.0.0.0", insecure=True)
    config("0.0.0.0", consumers=f'[serve.consumers.a]\nkey_sha256 = "{hash_key("k")}"\n')


def test_consumer_keys_must_be_declared_as_hashes(home: Path) -> None:
    path = write_config(home, '[serve.consumers.a]\nkey_sha256 = "plain-text-key"\n')
    with pytest.raises(ConfigError, match="key_sha256 must be the sha256 hex digest"):
        load_config(home=home, config_file=path)


def test_the_access_log_names_request_model_version_and_consumer(
    home: Path, iris_classifier: Pipeline, iris: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    Registry(home).publish("iris", iris_classifier, iris[0])
    client = client_for(
        home,
        "[serve]\naccess_log = true\n"
        f'[serve.consumers.app]\nkey_sha256 = "{hash_key(READER_KEY)}"\n',
    )
    try:
        with caplog.at_level("INFO", logger="gyre.access"):
            response = client.post("/v2/models/iris/infer", json=v2([ROW]),
                                   headers={"X-Api-Key": READER_KEY})  # fmt: skip
        (record,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gyre.access"]
        assert record["request_id"] == response.headers["gyre-request-id"]
        assert (record["model"], record["version"], record["status"], record["consumer"]) == (
            "iris",
            "1",
            200,
            "app",
        )
    finally:
        client.close()


def test_settings_for_a_model_the_registry_lacks_are_reported_at_start(
    two_versions: Registry, home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def config(text: str) -> Config:
        return load_config(home=home, config_file=write_config(home, text))

    check_configured_models(config("[serve.models.irsi]\nlatency_slo_ms = 50\n"))
    assert "[serve.models.irsi] names no model in the registry; did you mean `iris`?" in (
        caplog.text
    )
    with pytest.raises(ConfigError, match=r"default_model 'irsi:2' names no model.*`iris`"):
        check_configured_models(config('[serve]\ndefault_model = "irsi:2"\n'))
    check_configured_models(config('[serve]\ndefault_model = "iris@champion"\n'))
