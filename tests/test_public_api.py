import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "name",
    [
        "gyre",
        "gyre.auth",
        "gyre.control",
        "gyre.registry",
        "gyre.serve",
        "gyre.learn",
        "gyre.evaluate",
        "gyre.cli",
        "gyre.features",
        "gyre.monitor",
    ],
)
def test_all_names_exactly_what_the_package_exports(name: str) -> None:
    module = importlib.import_module(name)
    public = {n for n in vars(module) if not n.startswith("_")} - {"annotations"}
    submodules = {n for n in public if type(getattr(module, n)).__name__ == "module"}
    assert set(module.__all__) - {"__version__"} == public - submodules


def test_the_monitor_does_not_import_the_server() -> None:
    # serve writes into monitor (DESIGN.md's loop): the reverse import would be a cycle.
    code = "import sys, gyre.monitor\nprint('gyre.serve' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
