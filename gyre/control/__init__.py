"""The control plane: where aliases move and traffic policies change, over HTTP.

`gyre control` serves these writes apart from the model server, which only reads the
registry (DESIGN.md: serve must not write to it). The writes themselves are the
registry's; this package is their HTTP face, behind the same consumer keys as the server.
Later, the dashboard's routes join it here.
"""

from gyre.control._app import ControlApp
from gyre.control._server import build_control_app, control

__all__ = ["ControlApp", "build_control_app", "control"]
