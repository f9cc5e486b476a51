"""The five gossip messages as plain objects, before encoding and after decoding.

Free of I/O. Every message carries its sender's node id, a unix timestamp and
a fresh 12-byte nonce; the fields of each type are specified, with their
limits, in :mod:`sfhfe_node.gossip.protocol`, which turns these objects into
frames and back.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import ClassVar, TypeAlias

import numpy as np

__all__ = [
    "NONCE_BYTES",
    "Ack",
    "Error",
    "Hello",
    "Message",
    "Peers",
    "Weights",
    "new_nonce",
]

NONCE_BYTES = 12


def new_nonce() -> bytes:
    """Return 12 fresh random bytes for a message nonce."""
    return os.urandom(NONCE_BYTES)


@dataclass(frozen=True, eq=False)
class Hello:
    """Identity and data profile a node sends when a link opens, and again
    every exchange round so that the peer's similarity estimate stays fresh."""

    TYPE: ClassVar[str] = "hello"
    sender: str
    address: str | None
    embedding: np.ndarray
    usage: dict[str, float]
    records: int
    ts: float = field(default_factory=time.time)
    nonce: bytes = field(default_factory=new_nonce)


@dataclass(frozen=True, eq=False)
class Peers:
    """Addresses of gossip nodes the sender knows."""

    TYPE: ClassVar[str] = "peers"
    sender: str
    addresses: list[str]
    ts: float = field(default_factory=time.time)
    nonce: bytes = field(default_factory=new_nonce)


@dataclass(frozen=True, eq=False)
class Weights:
    """The parameters of one or more experts: expert -> name -> float32 array."""

    TYPE: ClassVar[str] = "weights"
    sender: str
    experts: dict[str, dict[str, np.ndarray]]
    samples: int
    version: int
    ts: float = field(default_factory=time.time)
    nonce: bytes = field(default_factory=new_nonce)


@dataclass(frozen=True, eq=False)
class Ack:
    """The receiver's verdict on one ``weights`` message, named by its nonce."""

    TYPE: ClassVar[str] = "ack"
    sender: str
    ref: bytes
    accepted: bool
    reason: str
    ts: float = field(default_factory=time.time)
    nonce: bytes = field(default_factory=new_nonce)


@dataclass(frozen=True, eq=False)
class Error:
    """Why the sender is about to close the connection."""

    TYPE: ClassVar[str] = "error"
    sender: str
    reason: str
    detail: str
    ts: float = field(default_factory=time.time)
    nonce: bytes = field(default_factory=new_nonce)


Message: TypeAlias = Hello | Peers | Weights | Ack | Error
