"""Every error gyre raises, in one tree.

    GyreError
    ├── ConfigError                  the configuration file or a setting is invalid
    ├── RegistryError
    │   ├── ModelNotFound            no such model, version or alias
    │   ├── ArtifactCorrupted        an artifact is missing or its sha256 does not match
    │   ├── ExportError              a native model could not be turned into ONNX
    │   ├── ParityError              ONNX and native predictions disagree beyond tolerance
    │   └── InvalidModel             a file that is not a usable model, or a bad argument
    └── ServeError
        ├── BadRequest               a request that does not match the protocol or signature
        ├── PayloadTooLarge          a body over the configured size
        ├── NotFound                 an unknown route, model, version or label
        └── Unavailable              the model cannot answer now (shutting down, not loaded)

Each error says what it concerns and what to do next. The server maps these classes to
HTTP statuses in one place (`gyre.serve.errors`).
"""

from __future__ import annotations


class GyreError(Exception):
    """The root of every error gyre raises on purpose."""


class ConfigError(GyreError):
    """The configuration is invalid; the message names the setting and the expected value."""


class RegistryError(GyreError):
    """Something went wrong in the model registry."""


class ModelNotFound(RegistryError):
    """No such model, version or alias."""


class ArtifactCorrupted(RegistryError):
    """An artifact is missing or its content does not match its recorded sha256."""


class ExportError(RegistryError):
    """A native model could not be exported to ONNX."""


class ParityError(RegistryError):
    """ONNX and native predictions differ by more than the configured tolerance."""


class InvalidModel(RegistryError):
    """The file or object given is not a model gyre can publish."""


class ServeError(GyreError):
    """An inference request could not be answered."""


class BadRequest(ServeError):
    """The request does not match the protocol or the model's signature."""


class PayloadTooLarge(ServeError):
    """The request body is larger than `serve.max_body_bytes`."""


class NotFound(ServeError):
    """Unknown route, model, version or label."""


class Unavailable(ServeError):
    """The model cannot answer right now; retry later."""
