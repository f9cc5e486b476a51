"""Exceptions raised by sfhfe-node.

Every exception the package raises on purpose derives from :class:`SfhfeError`::

    SfhfeError
    ├── ConfigError (ValueError)          bad setting; the command exits with 78
    ├── StreamError (ValueError)          a stream cannot be opened or has no usable header
    ├── ValidationError (ValueError)      untrusted input (insight, frame, tensor) rejected
    │   ├── InsightError                  an insight does not match the schema
    │   └── ProtocolError                 a gossip frame is malformed or not allowed
    │       └── TensorError               a bad tensor in a well-formed weights frame
    │                                     (defined in sfhfe_node.gossip.tensors)
    ├── LearnerError                      the learner was used in a way it cannot serve
    ├── StoreError                        the coordinator's database failed
    └── InvalidStateError (RuntimeError)  a call made in the wrong lifecycle state

Each :class:`ValidationError` carries a short machine-readable ``reason`` used
for counters and 4xx replies, next to its human-readable message.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "InsightError",
    "InvalidStateError",
    "LearnerError",
    "ProtocolError",
    "SfhfeError",
    "StoreError",
    "StreamError",
    "ValidationError",
]


class SfhfeError(Exception):
    """Base class of every error raised by sfhfe-node."""


class ConfigError(SfhfeError, ValueError):
    """A configuration value is missing or not allowed."""


class StreamError(SfhfeError, ValueError):
    """A data stream cannot be opened or read."""


class ValidationError(SfhfeError, ValueError):
    """Untrusted input was rejected.

    ``reason`` is a short token (``"bad_type"``, ``"not_finite"``, ...) for
    counters and replies; the message says what was wrong and with what value.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class InsightError(ValidationError):
    """An insight does not match the insight schema."""


class ProtocolError(ValidationError):
    """A gossip frame is malformed, oversize or not allowed now."""


class LearnerError(SfhfeError):
    """The learner cannot serve the call (for example a wrong feature count)."""


class StoreError(SfhfeError):
    """The coordinator's store failed to read or write."""


class InvalidStateError(SfhfeError, RuntimeError):
    """A call was made while its object was in a state that forbids it."""
