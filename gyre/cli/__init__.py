"""The `gyre` command."""

from gyre.cli._app import app
from gyre.cli._main import main

__all__ = ["app", "main"]
