"""gyre: a production machine-learning system, from events to predictions and back."""

from gyre.config import Config, load_config
from gyre.errors import GyreError

__version__ = "0.1.0"

__all__ = ["Config", "GyreError", "__version__", "load_config"]
