"""The `gyre` command."""

from gyre.cli._main import app, main

__all__ = ["app", "main"]
