import importlib

import pytest


@pytest.mark.parametrize(
    "name",
    ["gyre", "gyre.auth", "gyre.control", "gyre.registry", "gyre.serve", "gyre.learn", "gyre.cli"],
)
def test_all_names_exactly_what_the_package_exports(name: str) -> None:
    module = importlib.import_module(name)
    public = {n for n in vars(module) if not n.startswith("_")} - {"annotations"}
    submodules = {n for n in public if type(getattr(module, n)).__name__ == "module"}
    assert set(module.__all__) - {"__version__"} == public - submodules
