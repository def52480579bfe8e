"""Only a blessed version may be `champion` or `challenger` (`gyre.registry._aliases`):
refused without an evaluation or after a veto, through every way an alias moves, unless
forced with a reason that the change log keeps. The end-to-end case, a real `gyre
evaluate` of a real run, is in tests/evaluate/test_evaluate.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sklearn.pipeline import Pipeline

from gyre.errors import InvalidModel, NotBlessed, http_status
from gyre.registry import CHAMPION, Registry
from tests.cli.test_cli import gyre


def judged(verdict: str, reasons: list[str] | None = None) -> dict[str, Any]:
    """An evaluation's summary as `gyre evaluate` records it (the keys the reader needs)."""
    return {
        "verdict": verdict, "run_id": "run-1", "rows": 120, "champion": "m:1",
        "reasons": reasons if reasons is not None else [],
        "gates": [{"gate": "roc_auc at least 0.8", "passed": verdict == "blessed",
                   "detail": "0.84 [0.81, 0.87]"}],
        "metrics": {"roc_auc": {"value": 0.84, "low": 0.81, "high": 0.87, "method": "delong"}},
    }  # fmt: skip


@pytest.fixture
def two(registry: Registry, iris_classifier: Pipeline, iris: tuple) -> Registry:
    registry.publish("m", iris_classifier, iris[0])
    registry.publish("m", iris_classifier, iris[0], force_new=True)
    return registry


@pytest.mark.parametrize("alias", ["champion", "challenger"])
def test_a_version_without_an_evaluation_is_refused_and_told_what_to_do(
    two: Registry, alias: str
) -> None:
    with pytest.raises(NotBlessed, match="version 2 has no evaluation") as refused:
        two.set_alias("m", alias, 2)
    assert "run `gyre evaluate m:2` to bless it" in str(refused.value)
    assert f'`gyre registry alias m {alias} 2 --force --reason "why"`' in str(refused.value)
    assert http_status(refused.value) == 409
    assert two.metadata.aliases("m") == {}
    assert [c["action"] for c in two.changes("m")] == ["publish", "publish"]


def test_other_aliases_move_freely(two: Registry) -> None:
    assert two.set_alias("m", "canary", 2) is None
    assert "forced" not in two.changes("m")[-1]


def test_a_vetoed_version_is_refused_with_its_reasons(two: Registry) -> None:
    two.record_evaluation("m", 2, judged("vetoed", ["roc_auc below 0.8: 0.74 [0.70, 0.78]"]))
    with pytest.raises(NotBlessed, match=r"was vetoed by its latest evaluation \(.*roc_auc below"):
        two.set_alias("m", CHAMPION, 2)


def test_a_blessed_version_is_accepted_and_a_later_veto_takes_the_blessing_away(
    two: Registry,
) -> None:
    two.record_evaluation("m", 2, judged("blessed"))
    assert two.set_alias("m", CHAMPION, 2, reason="better AUC") is None
    assert "forced" not in two.changes("m")[-1]
    two.record_evaluation("m", 2, judged("vetoed", ["slice country=FR: roc_auc below 0.7"]))
    latest = two.evaluation("m", 2)
    assert latest is not None and not latest.blessed
    with pytest.raises(NotBlessed, match="country=FR"):
        two.set_alias("m", "challenger", 2)


def test_an_evaluation_edited_in_the_database_blesses_nothing(two: Registry) -> None:
    two.record_evaluation("m", 2, judged("blessed"))
    import sqlite3

    with sqlite3.connect(two.stores.registry_path) as conn:
        conn.execute("UPDATE evaluations SET evaluation = '{}'")
    conn.close()
    with pytest.raises(NotBlessed, match="latest evaluation that cannot be read"):
        two.set_alias("m", CHAMPION, 2)


def test_forcing_needs_a_reason_and_the_change_log_keeps_it(two: Registry) -> None:
    for empty in ("", "  "):
        with pytest.raises(InvalidModel, match=r"needs a reason \(--reason"):
            two.set_alias("m", CHAMPION, 2, reason=empty, force=True)
    assert two.metadata.aliases("m") == {}
    assert two.set_alias("m", CHAMPION, 2, reason="hotfix: v1 crashes", force=True) is None
    change = two.changes("m")[-1]
    assert (change["alias"], change["version"], change["why"], change["forced"]) == (
        CHAMPION, 2, "hotfix: v1 crashes", True,
    )  # fmt: skip
    # Forcing a version that is blessed anyway forces nothing.
    two.record_evaluation("m", 1, judged("blessed"))
    two.set_alias("m", CHAMPION, 1, reason="back", force=True)
    assert "forced" not in two.changes("m")[-1]


def test_publishing_with_a_guarded_alias_obeys_the_rule(
    registry: Registry, iris_classifier: Pipeline, iris: tuple
) -> None:
    with pytest.raises(NotBlessed, match="model `m` version 1 has no evaluation"):
        registry.publish("m", iris_classifier, iris[0], alias=CHAMPION)
    (kept,) = registry.versions("m")  # published, without the alias: evaluate it, then alias
    assert kept.aliases == ()
    with pytest.raises(InvalidModel, match="needs a reason"):
        registry.publish("m", iris_classifier, iris[0], alias=CHAMPION, force_alias="",
                         force_new=True)  # fmt: skip
    assert len(registry.versions("m")) == 1  # refused before anything was stored
    forced = registry.publish(
        "m", iris_classifier, iris[0], alias=CHAMPION, force_alias="the first model"
    )
    assert forced.aliases == (CHAMPION,) and forced.reused
    change = registry.changes("m")[-1]
    assert (change["why"], change["forced"]) == ("the first model", True)


def test_an_evaluation_given_at_publish_blesses_the_new_version(
    registry: Registry, iris_classifier: Pipeline, iris: tuple
) -> None:
    mv = registry.publish("m", iris_classifier, iris[0], alias=CHAMPION,
                          evaluation=judged("blessed"))  # fmt: skip
    assert mv.aliases == (CHAMPION,)
    found = registry.evaluation("m", mv.version)
    assert found is not None and found.evaluation == judged("blessed")
    assert [c["action"] for c in registry.changes("m")] == ["publish", "evaluate", "alias"]
    # The same content again, with the run's older blessing: a later veto stays.
    registry.record_evaluation("m", 1, judged("vetoed", ["worse than the champion"]))
    with pytest.raises(NotBlessed, match="worse than the champion"):
        registry.publish("m", iris_classifier, iris[0], alias="challenger",
                         evaluation=judged("blessed"))  # fmt: skip
    with pytest.raises(InvalidModel, match="not an evaluation as `gyre evaluate` writes it"):
        registry.publish("m", iris_classifier, iris[0], force_new=True,
                         evaluation={"verdict": "blessed"})  # fmt: skip
    assert len(registry.versions("m")) == 1


def test_the_cli_refuses_an_unblessed_promotion_and_records_a_forced_one(
    home: Path, two: Registry
) -> None:
    refused = gyre(home, "registry", "alias", "m", "champion", "2", check=False)
    assert refused.returncode == 1
    assert "has no evaluation" in refused.stderr and "gyre evaluate m:2" in refused.stderr
    no_reason = gyre(home, "registry", "alias", "m", "champion", "2", "--force", check=False)
    assert no_reason.returncode == 1 and "needs a reason" in no_reason.stderr
    moved = gyre(home, "registry", "alias", "m", "champion", "2", "--force", "--reason", "hotfix")
    assert "m@champion -> version 2" in moved.stdout
    history = json.loads(gyre(home, "registry", "history", "m", "--json").stdout)
    assert {k: history[-1][k] for k in ("action", "alias", "why", "forced")} == {
        "action": "alias", "alias": "champion", "why": "hotfix", "forced": True,
    }  # fmt: skip
    shown = gyre(home, "registry", "show", "m:2").stdout
    assert "none: not blessed" in shown
    assert json.loads(gyre(home, "registry", "show", "m:2", "--json").stdout)["evaluation"] is None


def test_the_cli_publish_needs_force_and_reason_together(
    home: Path, tmp_path: Path, iris_classifier: Pipeline, iris: tuple
) -> None:
    import joblib
    import numpy as np

    model, sample = tmp_path / "iris.joblib", tmp_path / "rows.npy"
    joblib.dump(iris_classifier, model)
    np.save(sample, iris[0])
    args = ("registry", "publish", "iris", str(model), "--sample", str(sample))
    refused = gyre(home, *args, "--alias", "champion", check=False)
    assert refused.returncode == 1 and "gyre evaluate iris:1" in refused.stderr
    usage = gyre(home, *args, "--alias", "champion", "--force", check=False)
    assert usage.returncode == 1 and "needs a reason" in usage.stderr
    lone = gyre(home, *args, "--alias", "champion", "--reason", "why", check=False)
    assert lone.returncode == 2 and "--reason goes with --force" in lone.stderr
    bare = gyre(home, *args, "--force", "--reason", "why", check=False)
    assert bare.returncode == 2 and "go with --alias" in bare.stderr
    forced = gyre(home, *args, "--alias", "champion", "--force", "--reason", "first model")
    assert "alias champion" in forced.stdout
    history = json.loads(gyre(home, "registry", "history", "iris", "--json").stdout)
    assert (history[-1]["why"], history[-1]["forced"]) == ("first model", True)


def test_a_policy_sends_clients_traffic_only_to_blessed_versions(two: Registry) -> None:
    """A split, a bandit arm or a shadow's primary naming a version by number, or through an
    alias of another name, would have served an unblessed version past the alias rule."""
    two.set_alias("m", "canary", 2)  # a free alias, at a version no evaluation blessed
    for kind, params in [
        ("split", {"weights": {"1": 90, "2": 10}}),
        ("split", {"weights": {"1": 90, "canary": 10}}),
        ("bandit", {"arms": ["1", "canary"]}),
        ("shadow", {"primary": "canary", "shadow": "1"}),
    ]:
        with pytest.raises(NotBlessed, match=r"would send clients' traffic to model `m` version"):
            two.set_policy("m", kind, params)
    assert two.policy("m") == ("champion", {}, None)
    two.record_evaluation("m", 1, judged("blessed"))
    # A shadow's answers are only compared, and a split share of 0 answers nobody.
    two.set_policy("m", "shadow", {"primary": "1", "shadow": "canary"})
    two.set_policy("m", "split", {"weights": {"1": 100, "canary": 0}})
    assert "forced" not in two.changes("m")[-1]
    with pytest.raises(InvalidModel, match="needs a reason"):
        two.set_policy("m", "bandit", {"arms": ["1", "2"]}, force=True)
    two.set_policy("m", "bandit", {"arms": ["1", "2"]}, reason="explore", force=True)
    assert {k: two.changes("m")[-1][k] for k in ("action", "why", "forced")} == {
        "action": "policy", "why": "explore", "forced": True,
    }  # fmt: skip


def test_an_alias_a_policy_serves_from_moves_only_to_a_blessed_version(two: Registry) -> None:
    two.record_evaluation("m", 1, judged("blessed"))
    two.set_alias("m", "canary", 1)
    two.set_policy("m", "split", {"weights": {"1": 90, "canary": 10}})
    with pytest.raises(NotBlessed, match="the split traffic policy sends clients' traffic to it"):
        two.set_alias("m", "canary", 2)
    assert two.metadata.aliases("m")["m"]["canary"] == 1
    two.set_alias("m", "canary", 2, reason="try it", force=True)
    assert two.changes("m")[-1]["forced"] is True


def test_the_cli_and_http_policy_need_force_for_an_unblessed_target(
    home: Path, two: Registry
) -> None:
    refused = gyre(home, "registry", "policy", "m", "bandit", "--arms", "1,2", check=False)
    assert refused.returncode == 1 and "gyre evaluate m:1" in refused.stderr
    forced = gyre(home, "registry", "policy", "m", "bandit", "--arms", "1,2", "--force",
                  "--reason", "explore")  # fmt: skip
    assert "traffic policy bandit" in forced.stdout
    from gyre.registry._admin import set_policy

    body: dict[str, Any] = {"kind": "split", "params": {"weights": {"2": 1}}}
    with pytest.raises(NotBlessed):
        set_policy(two, "m", body, "ops")
    with pytest.raises(InvalidModel, match="needs a reason"):
        set_policy(two, "m", {**body, "force": True}, "ops")
    with pytest.raises(InvalidModel, match="`force` must be true or false"):
        set_policy(two, "m", {**body, "force": "yes"}, "ops")
    with pytest.raises(InvalidModel, match="`reason` must be a string"):  # was a 500
        set_policy(two, "m", {**body, "force": True, "reason": 5}, "ops")
    assert (
        set_policy(two, "m", {**body, "force": True, "reason": "hotfix"}, "ops")["kind"] == "split"
    )
