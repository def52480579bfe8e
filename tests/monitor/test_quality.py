"""`gyre monitor quality`: a version's answers to entity requests, served by the real app,
joined to purchases that came after them by its run's own label rule, and scored against
the run's holdout."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from gyre.cli._main import app
from gyre.collect import event_types, format_timestamp
from gyre.config import load_config
from gyre.learn import load_spec, train_spec
from gyre.stores import Stores
from tests.learn.world import SPEC, fill, write_world
from tests.serve.apptest import AppClient

USERS = 60


def _world(folder: Path) -> Path:
    config = write_world(folder)
    fill(config, users=USERS, hours=96)
    (folder / "buyers.toml").write_text(SPEC)
    run = train_spec(load_spec(folder / "buyers.toml"), config, Stores.from_config(config)).run_id
    published = CliRunner().invoke(app, [*_base(folder), "registry", "publish", "buyers",
                                         "--run", run])  # fmt: skip
    assert published.exit_code == 0, published.output
    return folder


def _base(world: Path) -> list[str]:
    return ["--home", str(world / ".gyre"), "--config", str(world / "gyre.toml")]


def _answer_everyone(world: Path) -> dict[int, float]:
    """Each user's probability of buying, as served (entity requests, logged)."""
    client = AppClient(load_config(world / ".gyre", world / "gyre.toml"))
    found = {}
    try:
        for user in range(USERS):
            body = {"parameters": {"entity": {"user": user},
                                   "request_features": {"pages": 1 + user % 7}}}  # fmt: skip
            answer = client.post("/v2/models/buyers/versions/1/infer", json=body)
            assert answer.status_code == 200, answer.text
            (out,) = [o for o in answer.json()["outputs"] if o["name"] == "probabilities"]
            found[user] = float(out["data"][1])
    finally:
        client.close()
    return found


def _purchases(world: Path, users: list[int], *, closing: bool) -> None:
    """Purchases a minute from now by `users`; `closing`: and one two hours on, by a user
    no answer names, so every answer's hour has passed (no purchase then is a 0)."""
    config = load_config(world / ".gyre", world / "gyre.toml")
    kind = event_types(config.collect.events)["purchases"]
    now = int(time.time() * 1_000_000)
    rows: list[dict[str, Any]] = [
        {"order": f"live-{u}", "user": u, "amount": 1.0, "at": format_timestamp(now + 60_000_000)}
        for u in users
    ]
    if closing:
        rows.append({"order": "closing", "user": 10_000, "amount": 1.0,
                     "at": format_timestamp(now + 2 * 3_600_000_000)})  # fmt: skip
    log = Stores.from_config(config).open_fact_log()
    try:
        log.append([(kind, [kind.validate(r) for r in rows])])
    finally:
        log.close()


def _quality(world: Path) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(app, [*_base(world), "monitor", "quality", "buyers:1", "--json"])
    assert result.exit_code in (0, 3), result.output
    return result.exit_code, json.loads(result.output)


def test_labels_as_the_answers_said_do_not_drop_and_open_windows_wait(tmp_path: Path) -> None:
    world = _world(tmp_path)
    _, nothing = _quality(world)
    assert nothing["answers"] == 0 and nothing["metrics"] == {}
    p = _answer_everyone(world)
    buyers = [u for u in range(USERS) if p[u] >= 0.5]  # just as the answers said
    _purchases(world, buyers, closing=False)  # the hour is still open: nothing is scored
    _, waiting = _quality(world)
    assert (waiting["answers"], waiting["labelled"], waiting["pending"]) == (USERS, 0, USERS)
    _purchases(world, [], closing=True)
    code, found = _quality(world)
    assert (found["labelled"], found["pending"], found["unlabelled"]) == (USERS, 0, 0)
    assert code == 0 and found["dropped"] == [], found["metrics"]
    expected = np.mean(list(p.values())) - len(buyers) / USERS
    assert found["bias"] == pytest.approx(expected)
    shown = CliRunner().invoke(app, [*_base(world), "monitor", "quality", "buyers:1"])
    assert "prediction bias" in shown.output and "roc_auc" in shown.output


def test_labels_against_the_answers_are_a_drop_and_an_alert(tmp_path: Path) -> None:
    world = _world(tmp_path)
    p = _answer_everyone(world)
    unlikely = [u for u in range(USERS) if p[u] < np.median(list(p.values()))]
    _purchases(world, unlikely, closing=True)
    code, found = _quality(world)
    assert code == 3 and "roc_auc" in found["dropped"]
    assert found["metrics"]["roc_auc"]["high"] < found["holdout"]["roc_auc"]
    assert [a["detector"] for a in found["alerts"]] == ["quality"]
    listed = CliRunner().invoke(app, [*_base(world), "monitor", "alerts", "buyers", "--json"])
    assert json.loads(listed.output)[0]["summary"].startswith("quality dropped on 60")
