"""Tensors on the wire: float32 arrays as raw bytes, and the checks on reading.

Free of I/O. A tensor travels as ``[name, shape, data]`` with ``data`` the
little-endian float32 values of ``product(shape)`` elements; the envelope
around it is specified in :mod:`sfhfe_node.gossip.protocol`. A tensor whose
description is wrong in an otherwise well-formed ``weights`` frame raises
:class:`TensorError`, which names the sender and the frame's nonce so that
the receiver can answer with a negative ``ack`` and keep the link.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sfhfe_node.errors import ProtocolError

__all__ = [
    "MAX_DIMS",
    "MAX_ELEMENTS",
    "TensorError",
    "decode_tensor",
    "encode_tensor",
    "float32",
]

MAX_DIMS = 4
MAX_ELEMENTS = 2**22


class TensorError(ProtocolError):
    """A well-formed ``weights`` frame describes a tensor wrongly.

    The frame itself parsed, so the receiver knows who sent it and which
    message to reject: ``sender`` and ``ref`` (the frame's nonce) let it reply
    with an ``ack`` and keep the connection.
    """

    def __init__(self, reason: str, message: str, sender: str, ref: bytes) -> None:
        super().__init__(reason, message)
        self.sender = sender
        self.ref = ref


def float32(value: np.ndarray) -> np.ndarray:
    """``value`` as a contiguous little-endian float32 array, cast if needed."""
    return np.ascontiguousarray(value, dtype="<f4")


def encode_tensor(name: str, value: np.ndarray) -> list[Any]:
    """The wire entry ``[name, shape, data]`` of one parameter."""
    array = float32(value)
    return [name, [int(size) for size in array.shape], array.tobytes()]


def decode_tensor(
    name: str, shape: list[int], data: bytes, sender: str, ref: bytes
) -> np.ndarray:
    """A read-only float32 array over ``data``, after checking its shape.

    ``name`` is used in messages only; ``sender`` and ``ref`` go into the
    :class:`TensorError` raised for a shape that is too large or does not
    match the number of data bytes.
    """
    if len(shape) > MAX_DIMS or any(size < 0 for size in shape):
        raise TensorError(
            "bad_tensor",
            f"{name} has shape {shape[:8]}; at most {MAX_DIMS} dims, each >= 0",
            sender, ref,
        )
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise TensorError(
            "bad_tensor", f"{name} has {count} elements; at most {MAX_ELEMENTS}",
            sender, ref,
        )
    if 4 * count != len(data):
        raise TensorError(
            "bad_tensor",
            f"{name} has shape {shape} ({count} values) but {len(data)} data bytes",
            sender, ref,
        )
    return np.frombuffer(data, dtype="<f4").reshape(shape)
