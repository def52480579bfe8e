"""The model server: v2 / TF Serving / MLflow protocols over batched onnxruntime sessions.

Importing this package pulls no training stack (scikit-learn, LightGBM, torch).
"""

from gyre.serve._app import GyreApp
from gyre.serve._batcher import Batcher
from gyre.serve._metrics import ServerMetrics
from gyre.serve._repository import ModelRepository
from gyre.serve._runtime import ModelRuntime
from gyre.serve._server import build_app, serve
from gyre.serve._snapshot import Snapshot

__all__ = [
    "Batcher",
    "GyreApp",
    "ModelRepository",
    "ModelRuntime",
    "ServerMetrics",
    "Snapshot",
    "build_app",
    "serve",
]
