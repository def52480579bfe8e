"""gyre/cli's modules import one another without a cycle: the typer app and what commands
share live in a leaf (`_app`), each command module gives a `register(app)`, and `_main`
alone adds them. Read from the source (every import, at the top or inside a function)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gyre.cli
from gyre.cli._main import COMMAND_MODULES
from tests.cli.test_cli import gyre as run_gyre

CLI = Path(gyre.cli.__file__).parent
PACKAGE = "gyre.cli"
COMMANDS = ["consumers", "control", "demo", "events", "features", "registry", "runs", "serve"]


def _module(path: Path) -> str:
    return PACKAGE if path.name == "__init__.py" else f"{PACKAGE}.{path.stem}"


MODULES = {_module(path): path for path in sorted(CLI.glob("*.py"))}


def _imported(path: Path) -> set[str]:
    """The modules of gyre/cli that `path` imports. `from gyre.cli import _x` imports the
    module `_x` (its package is being imported already, as for any submodule), and
    `from gyre.cli import main` the package itself."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ._app import y
                base = ".".join([PACKAGE, base]) if base else PACKAGE
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if child in MODULES else base)
    return {name for name in found if name in MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of `graph` (its modules in order, the first repeated), or []."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str]:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return []
        for imported in sorted(graph[module]):
            cycle = visit(imported, [*path, module])
            if cycle:
                return cycle
        done.add(module)
        return []

    for module in sorted(graph):
        cycle = visit(module, [])
        if cycle:
            return cycle
    return []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_no_module_of_gyre_cli_imports_another_in_a_cycle() -> None:
    graph = {module: _imported(path) for module, path in MODULES.items()}
    assert _cycle(graph) == []
    assert graph[f"{PACKAGE}._app"] == set(), "the app's module is the leaf: it imports none"


def test_only_main_adds_commands_to_the_app() -> None:
    """No command module imports the app (so importing one adds nothing to it); every
    module that has a `register` is registered by `_main`."""
    registering = set()
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        names = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == f"{PACKAGE}._app"
            for alias in node.names
        }
        if module not in (f"{PACKAGE}._main", PACKAGE):
            assert "app" not in names, f"{module} imports the app; give it a register(app)"
        if any(isinstance(n, ast.FunctionDef) and n.name == "register" for n in tree.body):
            registering.add(module)
    assert registering == {module.__name__ for module in COMMAND_MODULES}


def test_help_lists_every_command(home: Path) -> None:
    listed = run_gyre(home, "--help").stdout
    for command in COMMANDS:
        assert f"│ {command} " in listed, (command, listed)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_answers_help(home: Path, command: str) -> None:
    assert f"gyre {command} [OPTIONS]" in run_gyre(home, command, "--help").stdout
