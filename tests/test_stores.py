"""One place names the files of a gyre home (`gyre/stores.py`)."""

from __future__ import annotations

import ast
from pathlib import Path

import gyre
from gyre.collect import Collector
from gyre.registry import Registry
from gyre.stores import Stores

SOURCE = Path(gyre.__file__).parent
FILE_NAMES = {
    "facts.db",
    "registry.db",
    "feedback.db",
    "served.db",
    "predictions.db",
    "online.snapshot",
}


def test_no_module_but_stores_names_a_file_of_the_home() -> None:
    named = []
    for path in SOURCE.rglob("*.py"):
        if path.name == "stores.py" and path.parent == SOURCE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in FILE_NAMES:
                named.append(f"{path.relative_to(SOURCE)}:{node.lineno} {node.value}")
    assert named == [], "open the store through gyre.stores.Stores instead"


def test_the_stores_of_a_home_are_where_stores_says(tmp_path: Path) -> None:
    stores = Stores(tmp_path / "home")
    registry = Registry(stores.home)
    try:
        assert registry.metadata.where == str(stores.registry_path)
        assert registry.artifacts.root == stores.artifacts_path
    finally:
        registry.close()
    collector = Collector(stores.home, {})
    try:
        assert collector.stores == stores
    finally:
        collector.close()
    log = stores.open_fact_log()
    try:
        assert log.where == str(stores.fact_log_path) and stores.fact_log_path.exists()
    finally:
        log.close()


def test_the_server_reads_the_registry_through_its_read_api() -> None:
    # serve once reached into the registry's store (registry.metadata): the store's
    # boundary is the registry's own API (change_position, snapshot).
    reached = [
        f"{path.relative_to(SOURCE)}:{node.lineno}"
        for path in (SOURCE / "serve").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and node.attr in ("metadata", "artifacts")
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "_registry"
    ]
    assert reached == []
