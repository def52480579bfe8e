"""`gyre runs list|show|compare` against a real home, through typer's runner (and the
error boundary through the real command)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gyre.cli._main import app
from gyre.errors import InvalidRunFilter, RunNotFound
from gyre.learn import MetricPoint, Run
from gyre.stores import Stores
from tests.cli.test_cli import gyre


def runs_cli(home: Path, *args: str) -> str:
    result = CliRunner().invoke(app, ["--home", str(home), "runs", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def three_runs(home: Path) -> list[Run]:
    store = Stores(home).open_runs()
    made = []
    for i, (auc, depth, team) in enumerate([(0.91, 3, "eta"), (0.75, 3, "eta"), (0.85, 5, "ops")]):
        run = store.create_run(
            "eta" if i < 2 else "other", f"run-{i} [bold]x[/]", tags={"team": team}
        )
        points = [MetricPoint("auc", auc - 0.1 + s * 0.05, s, 1.0 + s) for s in range(3)]
        store.log_batch(run.run_id, params={"max_depth": depth, "lr": 0.1}, metrics=points)
        store.set_record(run.run_id, "lineage", {"commit": f"c{i}", "dirty": i == 1})
        store.end_run(run.run_id, "failed" if i == 1 else "finished",
                      error="ValueError: diverged" if i == 1 else None)  # fmt: skip
        made.append(store.get(run.run_id))
    store.close()
    return made


def test_list_shows_the_newest_runs_with_their_main_metrics(
    home: Path, three_runs: list[Run]
) -> None:
    out = runs_cli(home, "list")
    lines = [line for line in out.splitlines() if "run-" in line]
    assert all(r.run_id[:8] in line for r, line in zip(reversed(three_runs), lines, strict=True))
    assert "auc" in out and "0.9" in out and "failed" in out and "[bold]x[/]" in out
    assert f"runs in SQLite under {home}" in out.replace("\n", "")


def test_list_filters_sorts_and_limits(home: Path, three_runs: list[Run]) -> None:
    def ids(*args: str) -> list[str]:
        return [r["run_id"] for r in json.loads(runs_cli(home, "list", "--json", *args))]

    first, second, third = (r.run_id for r in three_runs)
    assert ids("--filter", "metrics.auc > 0.8 and params.max_depth = 3") == [first]
    assert ids("--filter", "tags.team = 'eta'", "--sort", "metrics.auc") == [second, first]
    assert ids("--sort", "params.max_depth desc", "--sort", "metrics.auc") == [third, second, first]
    assert ids("--experiment", "other") == [third]
    assert ids("--filter", "status != 'failed'", "--limit", "1") == [third]
    (shown,) = json.loads(runs_cli(home, "list", "--json", "--filter", "status = 'failed'"))
    assert shown["error"] == "ValueError: diverged" and shown["metric_counts"] == {"auc": 3}
    assert shown["record"]["lineage"] == {"commit": "c1", "dirty": True}


def test_show_gives_every_part_of_a_run(home: Path, three_runs: list[Run]) -> None:
    run = three_runs[1]
    out = runs_cli(home, "show", run.run_id[:8])
    for text in (run.run_id, "param max_depth", "metric auc", "(3 steps)", "tag team",
                 "record lineage", '"commit": "c1"', "ValueError: diverged", "failed"):  # fmt: skip
        assert text in out, text
    shown = json.loads(runs_cli(home, "show", run.run_id, "--json"))
    assert shown["params"] == {"lr": 0.1, "max_depth": 3} and shown["metrics"] == run.metrics


def test_compare_flags_what_differs(home: Path, three_runs: list[Run]) -> None:
    first, second, _ = three_runs
    compared = json.loads(runs_cli(home, "compare", first.run_id[:8], second.run_id[:8], "--json"))
    assert [r["run_id"] for r in compared["runs"]] == [first.run_id, second.run_id]
    assert compared["params"] == [
        {"key": "lr", "values": [0.1, 0.1], "differs": False},
        {"key": "max_depth", "values": [3, 3], "differs": False},
    ]
    assert compared["metrics"] == [
        {"key": "auc", "values": [first.metrics["auc"], second.metrics["auc"]], "differs": True}
    ]
    out = runs_cli(home, "compare", first.run_id, second.run_id)
    assert "≠ metric auc" in out and "  param lr" in out


def test_compare_shows_a_key_only_one_run_has_as_a_difference(home: Path) -> None:
    store = Stores(home).open_runs()
    a, b = store.create_run("eta"), store.create_run("eta")
    store.log_batch(a.run_id, params={"extra": "x"})
    store.close()
    compared = json.loads(runs_cli(home, "compare", a.run_id, b.run_id, "--json"))
    assert compared["params"] == [{"key": "extra", "values": ["x", None], "differs": True}]


def test_unknown_runs_and_bad_filters_are_typed_errors(home: Path, three_runs: list[Run]) -> None:
    with pytest.raises(RunNotFound, match="no run id starts with 'abcdef12'"):
        runs_cli(home, "show", "abcdef12")
    with pytest.raises(InvalidRunFilter, match="position 13"):
        runs_cli(home, "list", "--filter", "metrics.auc ~ 0.8")
    result = CliRunner().invoke(app, ["--home", str(home), "runs", "compare", three_runs[0].run_id])
    assert result.exit_code == 2 and "two runs or more" in result.output


def test_the_command_prints_one_line_for_an_error(home: Path) -> None:
    Stores(home).open_runs().close()
    for args, text in [
        (("runs", "show", "abcdef12"), "no run id starts with 'abcdef12'"),
        (("runs", "list", "--filter", "metrics.auc > 0.8 or params.x = 1"), "position 19"),
    ]:
        result = gyre(home, *args, check=False)
        assert result.returncode == 1 and result.stdout == ""
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: ") and text in line
