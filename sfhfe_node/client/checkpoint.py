"""Checkpoints of a client node: written atomically, checked on load.

A checkpoint file is a fixed header followed by a ``torch.save`` payload::

    b"SFHFECK1" | SHA-256 of the payload (32 bytes) | payload length (8 bytes, LE)
    | payload

It is written to a temporary file, fsynced and renamed over the current one,
after the current one was renamed to ``.prev``; the directory is fsynced too.
A torn or corrupted file fails its digest and the previous checkpoint is used.
Payloads load with ``torch.load(weights_only=True)``, which refuses pickled
code: a checkpoint can hold tensors, arrays, numbers, strings, lists and dicts
only, so one planted in the state directory cannot run anything.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from pathlib import Path
from typing import Any

import torch

from sfhfe_node.client.files import write_atomic
from sfhfe_node.logs import client_log

__all__ = ["CHECKPOINT_NAME", "CheckpointStore"]

MAGIC = b"SFHFECK1"
CHECKPOINT_NAME = "checkpoint.bin"
_HEADER = struct.Struct("<8s32sQ")


class CheckpointStore:
    """Save and load the node's checkpoint under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / CHECKPOINT_NAME
        self.previous = directory / (CHECKPOINT_NAME + ".prev")

    def save(self, state: dict[str, Any]) -> int:
        """Write ``state`` durably; return the file's size in bytes."""
        buffer = io.BytesIO()
        torch.save(state, buffer)
        payload = buffer.getvalue()
        header = _HEADER.pack(MAGIC, hashlib.sha256(payload).digest(), len(payload))
        if self.path.exists():
            os.replace(self.path, self.previous)
        write_atomic(self.path, header + payload)
        return len(header) + len(payload)

    def load(self) -> dict[str, Any] | None:
        """The newest intact checkpoint, or None when there is none."""
        for path in (self.path, self.previous):
            state = self._read(path)
            if state is not None:
                if path is self.previous:
                    client_log.warning(
                        "checkpoint %s is damaged; using the previous one", self.path
                    )
                return state
        return None

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            client_log.warning("cannot read checkpoint %s: %s", path, exc.strerror)
            return None
        if len(data) < _HEADER.size:
            return None
        magic, digest, length = _HEADER.unpack_from(data)
        payload = data[_HEADER.size :]
        if magic != MAGIC or length != len(payload):
            client_log.warning("checkpoint %s is torn or not a checkpoint", path)
            return None
        if hashlib.sha256(payload).digest() != digest:
            client_log.warning("checkpoint %s fails its digest", path)
            return None
        try:
            state = torch.load(io.BytesIO(payload), weights_only=True)
        except Exception as exc:  # any unpickling failure means an unusable file
            client_log.warning("checkpoint %s cannot be loaded: %s", path, exc)
            return None
        return state if isinstance(state, dict) else None
