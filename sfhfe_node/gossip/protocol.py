"""The gossip wire format, version 2: msgpack maps in binary websocket frames.

This module only turns messages into bytes and bytes into messages; it never
touches a socket, so every rule below can be tested without an event loop.
The stateful checks (fresh timestamp, unseen nonce) live in
:class:`~sfhfe_node.gossip.auth.ReplayGuard`, what the node does with each
error in :mod:`sfhfe_node.gossip.node`; both are summarised here.

Envelope, present in every message, ``mac`` always last::

    {
      "v": 2,                     protocol version, an integer
      "type": str,                "hello" | "peers" | "weights" | "ack" | "error"
      "from": str,                sender's node id, 1-64 of [A-Za-z0-9._-]
      "ts": float,                sender's unix time in seconds, finite, >= 0
      "nonce": bytes,             exactly 12 random bytes, new for every message
      ...                         the fields of the type, below
      "mac": bytes | nil          HMAC-SHA256 (32 bytes) under the cluster key,
                                  or nil on a node without a key
    }

Types and their fields::

    hello     "address": str|None  ws:// or wss:// address the sender listens on
              "dim": int           embedding length, 0-64
              "embedding": bytes   dim little-endian float32 values, all finite
              "usage": {str: float}  expert name -> share of use, at most 32
              "records": int       records the sender has learned, 0 .. 2**53
    peers     "addresses": [str]   at most 64 ws:// or wss:// addresses
    weights   "dtype": str         "float32", the only dtype of version 2
              "experts": [         1-32 experts with distinct names, each
                [expert: str,      expert name, [a-z][a-z0-9_]{0,31}
                 params: [         1-64 parameters with distinct names, each
                   [name: str,     1-64 of [A-Za-z0-9._]
                    shape: [int],  at most 4 dimensions, each >= 0
                    data: bytes]   product(shape) little-endian float32 values
                 ]]
              ]
              "samples": int       records the sender learned from
              "version": int       sender's model version (its round), 0 .. 2**53
    ack       "ref": bytes         nonce of the acknowledged message
              "accepted": bool
              "reason": str        "ok" or the rejection reason token
    error     "reason": str        reason token, [a-z_]{1,32}
              "detail": str        human-readable text, at most 200 chars

A field outside this list, a missing field or a field of the wrong type is an
error: two sides that disagree on the format learn it at once. One ``weights``
frame carries every expert a round sends to a peer, so the envelope and the
MAC (about 150 bytes) are paid once per exchange, and a parameter is a 3-item
array rather than a map so that its description costs about 12 bytes: an
exchange stays within 5 % of its raw float32 bytes from about 10,000
parameters up (the whole expert bank of an Elec2 learner is 11,000). Tensors
are never Python lists; :func:`decode` returns them as read-only ``float32``
arrays that share memory with the frame (``np.frombuffer``).

Authentication. With a cluster key (at least 16 bytes, shared by every node)
the sender writes the frame with 32 zero bytes in ``mac`` -- msgpack puts them
at the very end of the frame -- computes HMAC-SHA256 over the whole frame and
writes it over those zeros (:mod:`sfhfe_node.gossip.auth`). The receiver
checks the MAC on the raw bytes before it looks at any other field, then
checks that ``ts`` is within the replay window of its clock (120 s by
default) and that it has not seen ``nonce`` within twice that window. A node
without a key sends ``mac`` nil and refuses signed frames, and a node with a
key refuses unsigned ones: a cluster with mixed settings fails loudly at the
first hello instead of running half authenticated. The node also serves
``wss://`` when given a TLS certificate; the MAC and TLS are independent.

Version negotiation. Every frame names its version in ``v``; this release
speaks version 2 only (:data:`SUPPORTED_VERSIONS`). A receiver answers a frame
of any other version with an ``error`` whose reason is ``bad_version`` and
whose detail lists the versions it speaks (``"supported: 2"``), then closes
with 1008. A later release that speaks several versions opens every link with
a hello of its highest version and, when refused this way, redials with the
highest version both sides list. Version 1 (no ``mac`` field) is refused.

Limits: a frame holds at most ``max_size`` bytes (4 MiB by default, enforced by
the websocket layer as well as here; the node derives its cap from its largest
expert), a tensor at most 2**22 elements and 4 dimensions, a hello's
embedding 64 values, a peers message 64 addresses.

What a receiver does with a bad frame (:class:`ProtocolError` ``reason``):

- ``oversize``: count it, close the connection with 1009 (message too big)
  and back the peer off.
- ``not_binary``, ``not_msgpack``, ``not_map``, ``bad_version``, ``bad_mac``,
  ``unknown_type``, ``missing_field``, ``unknown_field``, ``bad_type``,
  ``bad_value``, and from the node ``no_hello`` (the first message of a link
  is not a ``hello``, or it does not come in time) and ``bad_sender`` (a
  message names another sender than the link's ``hello``): count it, send an
  ``error`` message with the reason, close the connection with 1008 (policy
  violation) and back the peer off before it may connect again.
- ``stale`` (timestamp outside the window) and ``replay`` (nonce seen
  before): count it and drop the frame silently; the link stays, since a
  delayed or duplicated frame is not proof of a hostile peer.
- ``bad_tensor``, ``bad_dtype`` (raised as :class:`TensorError`, a
  well-formed ``weights`` frame whose tensor description is wrong), and the
  checks of :mod:`sfhfe_node.gossip.merge` (``unknown_expert``, ``bad_shape``,
  ``not_finite``, ``norm_too_large``): count it, reply ``ack`` with
  ``accepted`` false and the reason, reset the sender's trust to zero and
  keep the connection.

Close codes: 1000 normal (``self``: the node dialled itself; ``duplicate``:
another link to the same peer is kept), 1001 going away (shutdown), 1008
policy violation (the reasons above, and ``backed_off`` for a peer that
reconnects before its back-off ends), 1009 message too big, 1011 keepalive
ping unanswered (websocket layer), 1013 try later (the node holds its
maximum of links).

Both ends send ``hello`` first on every link and again every exchange round,
and a ``peers`` message after their hello; a receiver answers each
``weights`` with one ``ack`` naming its nonce, and an ``error`` only before it
closes. Addresses in a ``peers`` message are dialled like configured ones,
within the node's address limit, and forgotten after a few failed dials.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

import msgpack
import numpy as np

from sfhfe_node.errors import ProtocolError
from sfhfe_node.gossip.auth import MAC_BYTES, frame_mac, verify_frame

__all__ = [
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "MAX_FRAME",
    "MAX_EMBEDDING",
    "MAX_EXPERTS",
    "MAX_PARAMS",
    "MAX_DIMS",
    "MAX_ELEMENTS",
    "MAX_ADDRESSES",
    "NONCE_BYTES",
    "TensorError",
    "Hello",
    "Peers",
    "Weights",
    "Ack",
    "Error",
    "Message",
    "new_nonce",
    "is_address",
    "encode",
    "decode",
]

PROTOCOL_VERSION = 2
SUPPORTED_VERSIONS = (2,)
MAX_FRAME = 4 * 2**20
MAX_EMBEDDING = 64
MAX_EXPERTS = 32
MAX_PARAMS = 64
MAX_DIMS = 4
MAX_ELEMENTS = 2**22
MAX_ADDRESSES = 64
MAX_COUNT = 2**53
MAX_DETAIL = 200
NONCE_BYTES = 12

_NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_EXPERT = re.compile(r"[a-z][a-z0-9_]{0,31}")
_PARAM_NAME = re.compile(r"[A-Za-z0-9._]{1,64}")
_REASON = re.compile(r"[a-z_]{1,32}")
_ADDRESS = re.compile(r"wss?://[A-Za-z0-9.\-\[\]:]{1,200}(/[\x21-\x7e]{0,50})?")


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


def new_nonce() -> bytes:
    """Return 12 fresh random bytes for a message nonce."""
    return os.urandom(NONCE_BYTES)


def is_address(value: object) -> bool:
    """Tell whether ``value`` is a ws:// or wss:// address this format allows."""
    return isinstance(value, str) and _ADDRESS.fullmatch(value) is not None


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


def encode(message: Message, key: bytes | None = None) -> bytes:
    """Serialise ``message`` to one msgpack frame, signed when ``key`` is given.

    Arrays are written as raw little-endian float32 bytes, cast if needed.
    """
    body: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "type": message.TYPE,
        "from": message.sender,
        "ts": float(message.ts),
        "nonce": bytes(message.nonce),
    }
    if isinstance(message, Hello):
        vector = _float32(message.embedding).reshape(-1)
        body["address"] = message.address
        body["dim"] = int(vector.size)
        body["embedding"] = vector.tobytes()
        body["usage"] = {name: float(share) for name, share in message.usage.items()}
        body["records"] = int(message.records)
    elif isinstance(message, Peers):
        body["addresses"] = list(message.addresses)
    elif isinstance(message, Weights):
        body["dtype"] = "float32"
        body["experts"] = [
            [expert, [_tensor_entry(name, t) for name, t in params.items()]]
            for expert, params in message.experts.items()
        ]
        body["samples"] = int(message.samples)
        body["version"] = int(message.version)
    elif isinstance(message, Ack):
        body["ref"] = bytes(message.ref)
        body["accepted"] = bool(message.accepted)
        body["reason"] = message.reason
    else:
        body["reason"] = message.reason
        body["detail"] = message.detail[:MAX_DETAIL]
    if key is None:
        body["mac"] = None
        return msgpack.packb(body, use_bin_type=True)
    body["mac"] = bytes(MAC_BYTES)
    frame = msgpack.packb(body, use_bin_type=True)
    return frame[:-MAC_BYTES] + frame_mac(key, frame)


def _float32(value: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(value, dtype="<f4")


def _tensor_entry(name: str, value: np.ndarray) -> list[Any]:
    array = _float32(value)
    return [name, [int(size) for size in array.shape], array.tobytes()]


def decode(
    frame: bytes, max_size: int = MAX_FRAME, key: bytes | None = None
) -> Message:
    """Parse and validate one frame of at most ``max_size`` bytes.

    With ``key`` the frame must carry a matching MAC, without it none; the MAC
    is checked before any field but the version is looked at. Raises
    :class:`ProtocolError` naming the first problem found, or its subclass
    :class:`TensorError` for a bad tensor in a well-formed ``weights`` frame.
    Timestamps and nonces are checked by the caller's
    :class:`~sfhfe_node.gossip.auth.ReplayGuard`.
    """
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise ProtocolError("not_binary", "gossip frames must be binary, got text")
    if len(frame) > max_size:
        raise ProtocolError(
            "oversize", f"frame of {len(frame)} bytes exceeds the {max_size} limit"
        )
    try:
        obj = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except (ValueError, TypeError, RecursionError, msgpack.UnpackException) as exc:
        raise ProtocolError(
            "not_msgpack", f"frame is not msgpack: {exc or type(exc).__name__}"
        ) from None
    if not isinstance(obj, dict):
        raise ProtocolError("not_map", f"frame must be a map, got {_kind(obj)}")
    version = obj.get("v")
    if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
        supported = ", ".join(map(str, SUPPORTED_VERSIONS))
        raise ProtocolError(
            "bad_version",
            f"protocol version {str(version)[:20]!r} is not spoken here; "
            f"supported: {supported}",
        )
    _check_mac(frame, obj.get("mac"), key)
    kind = obj.get("type")
    if kind not in _FIELDS:
        raise ProtocolError(
            "unknown_type",
            f"message type {str(kind)[:40]!r} is not one of {', '.join(_FIELDS)}",
        )
    clean = _fields(obj, kind, {**_ENVELOPE, **_FIELDS[kind]})
    return _BUILDERS[kind](clean)


def _check_mac(frame: bytes, mac: object, key: bytes | None) -> None:
    if key is None:
        if mac is not None:
            raise ProtocolError(
                "bad_mac", "frame is signed but this node has no cluster key"
            )
        return
    if not isinstance(mac, bytes):
        raise ProtocolError("bad_mac", "frame is not signed; a cluster key is required")
    verify_frame(key, frame, mac)


# Field checkers: each takes a value and its path and returns a clean value.

_Check: TypeAlias = Callable[[Any, str], Any]


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _fields(
    obj: Mapping[Any, Any], path: str, spec: dict[str, _Check]
) -> dict[str, Any]:
    unknown = sorted(str(name)[:40] for name in obj if name not in spec)
    if unknown:
        raise ProtocolError(
            "unknown_field", f"{path} has unknown field(s): {', '.join(unknown)}"
        )
    missing = sorted(name for name in spec if name not in obj)
    if missing:
        raise ProtocolError(
            "missing_field", f"{path} lacks field(s): {', '.join(missing)}"
        )
    return {name: check(obj[name], f"{path}.{name}") for name, check in spec.items()}


def _int(low: int, high: int) -> _Check:
    def check(value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(
                "bad_type", f"{path} must be an integer, got {_kind(value)}"
            )
        if not low <= value <= high:
            raise ProtocolError(
                "bad_value", f"{path}={value} is outside [{low}, {high}]"
            )
        return value

    return check


def _number(low: float, high: float) -> _Check:
    def check(value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError(
                "bad_type", f"{path} must be a number, got {_kind(value)}"
            )
        number = float(value)
        if not (math.isfinite(number) and low <= number <= high):
            raise ProtocolError(
                "bad_value",
                f"{path}={number} is not a finite number in [{low}, {high}]",
            )
        return number

    return check


def _text(pattern: re.Pattern[str], what: str) -> _Check:
    def check(value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise ProtocolError(
                "bad_type", f"{path} must be a string, got {_kind(value)}"
            )
        if pattern.fullmatch(value) is None:
            raise ProtocolError("bad_value", f"{path}={value[:80]!r} is not {what}")
        return value

    return check


def _bytes(size: int | None, max_size: int) -> _Check:
    def check(value: Any, path: str) -> bytes:
        if not isinstance(value, bytes):
            raise ProtocolError("bad_type", f"{path} must be bytes, got {_kind(value)}")
        if size is not None and len(value) != size:
            raise ProtocolError(
                "bad_value", f"{path} has {len(value)} bytes; expected {size}"
            )
        if len(value) > max_size:
            raise ProtocolError(
                "bad_value", f"{path} has {len(value)} bytes; at most {max_size}"
            )
        return value

    return check


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError("bad_type", f"{path} must be a boolean, got {_kind(value)}")
    return value


def _optional(inner: _Check) -> _Check:
    def check(value: Any, path: str) -> Any:
        return None if value is None else inner(value, path)

    return check


def _list(inner: _Check, low: int, high: int) -> _Check:
    def check(value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise ProtocolError(
                "bad_type", f"{path} must be a list, got {_kind(value)}"
            )
        if not low <= len(value) <= high:
            raise ProtocolError(
                "bad_value", f"{path} has {len(value)} items; allowed {low}-{high}"
            )
        return [inner(item, f"{path}[{i}]") for i, item in enumerate(value)]

    return check


def _usage(value: Any, path: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ProtocolError("bad_type", f"{path} must be a map, got {_kind(value)}")
    if len(value) > MAX_EXPERTS:
        raise ProtocolError(
            "bad_value", f"{path} has {len(value)} entries; at most {MAX_EXPERTS}"
        )
    name = _text(_EXPERT, "an expert name")
    share = _number(0.0, 1e12)
    return {
        name(key, f"{path} key"): share(item, f"{path}.{key}")
        for key, item in value.items()
    }


def _tuple(fields: dict[str, _Check]) -> _Check:
    def check(value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, list):
            raise ProtocolError(
                "bad_type", f"{path} must be a list, got {_kind(value)}"
            )
        if len(value) != len(fields):
            reason = "missing_field" if len(value) < len(fields) else "unknown_field"
            raise ProtocolError(
                reason,
                f"{path} has {len(value)} items; need {', '.join(fields)}",
            )
        return {
            name: item_check(item, f"{path}.{name}")
            for (name, item_check), item in zip(fields.items(), value)
        }

    return check


_ENVELOPE: dict[str, _Check] = {
    "v": _int(PROTOCOL_VERSION, PROTOCOL_VERSION),
    "type": _text(re.compile(r"[a-z]{1,16}"), "a message type"),
    "from": _text(_NODE_ID, "a node id (1-64 of A-Z a-z 0-9 . _ -)"),
    "ts": _number(0.0, 1e11),
    "nonce": _bytes(NONCE_BYTES, NONCE_BYTES),
    "mac": _optional(_bytes(MAC_BYTES, MAC_BYTES)),
}

_PARAM = _tuple(
    {
        "name": _text(_PARAM_NAME, "a parameter name (1-64 of A-Z a-z 0-9 . _)"),
        "shape": _list(_int(-MAX_COUNT, MAX_COUNT), 0, 64),
        "data": _bytes(None, MAX_FRAME * 4),
    }
)

_EXPERT_ENTRY = _tuple(
    {
        "expert": _text(_EXPERT, "an expert name ([a-z][a-z0-9_]{0,31})"),
        "params": _list(_PARAM, 1, MAX_PARAMS),
    }
)

_FIELDS: dict[str, dict[str, _Check]] = {
    "hello": {
        "address": _optional(_text(_ADDRESS, "a ws:// or wss:// address")),
        "dim": _int(0, MAX_EMBEDDING),
        "embedding": _bytes(None, 4 * MAX_EMBEDDING),
        "usage": _usage,
        "records": _int(0, MAX_COUNT),
    },
    "peers": {
        "addresses": _list(
            _text(_ADDRESS, "a ws:// or wss:// address"), 0, MAX_ADDRESSES
        ),
    },
    "weights": {
        "dtype": _text(re.compile(r".{0,32}", re.DOTALL), "a short string"),
        "experts": _list(_EXPERT_ENTRY, 1, MAX_EXPERTS),
        "samples": _int(0, MAX_COUNT),
        "version": _int(0, MAX_COUNT),
    },
    "ack": {
        "ref": _bytes(NONCE_BYTES, NONCE_BYTES),
        "accepted": _bool,
        "reason": _text(_REASON, "a reason token ([a-z_]{1,32})"),
    },
    "error": {
        "reason": _text(_REASON, "a reason token ([a-z_]{1,32})"),
        "detail": _text(re.compile(r".{0,200}", re.DOTALL), "at most 200 chars"),
    },
}


# Builders: turn a clean field map into its message object.


def _hello(obj: dict[str, Any]) -> Hello:
    if len(obj["embedding"]) != 4 * obj["dim"]:
        raise ProtocolError(
            "bad_value",
            f"hello.embedding has {len(obj['embedding'])} bytes; dim {obj['dim']} "
            f"needs {4 * obj['dim']}",
        )
    embedding = np.frombuffer(obj["embedding"], dtype="<f4")
    if not np.isfinite(embedding).all():
        raise ProtocolError("bad_value", "hello.embedding holds non-finite values")
    return Hello(
        obj["from"], obj["address"], embedding, obj["usage"], obj["records"],
        ts=obj["ts"], nonce=obj["nonce"],
    )


def _peers(obj: dict[str, Any]) -> Peers:
    return Peers(obj["from"], obj["addresses"], ts=obj["ts"], nonce=obj["nonce"])


def _weights(obj: dict[str, Any]) -> Weights:
    sender, ref = obj["from"], obj["nonce"]
    if obj["dtype"] != "float32":
        raise TensorError(
            "bad_dtype",
            f"weights have dtype {obj['dtype'][:32]!r}; only float32 is allowed",
            sender, ref,
        )
    experts: dict[str, dict[str, np.ndarray]] = {}
    for entry in obj["experts"]:
        expert = entry["expert"]
        if expert in experts:
            raise ProtocolError("bad_value", f"weights.experts repeats {expert!r}")
        params: dict[str, np.ndarray] = {}
        for param in entry["params"]:
            name = param["name"]
            if name in params:
                raise ProtocolError(
                    "bad_value", f"weights of {expert} repeat {name!r}"
                )
            params[name] = _tensor(expert, param, sender, ref)
        experts[expert] = params
    return Weights(
        sender, experts, obj["samples"], obj["version"], ts=obj["ts"], nonce=ref
    )


def _tensor(
    expert: str, entry: dict[str, Any], sender: str, ref: bytes
) -> np.ndarray:
    name, shape, data = f"{expert}.{entry['name']}", entry["shape"], entry["data"]
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


def _ack(obj: dict[str, Any]) -> Ack:
    return Ack(
        obj["from"], obj["ref"], obj["accepted"], obj["reason"],
        ts=obj["ts"], nonce=obj["nonce"],
    )


def _error(obj: dict[str, Any]) -> Error:
    return Error(
        obj["from"], obj["reason"], obj["detail"], ts=obj["ts"], nonce=obj["nonce"]
    )


_BUILDERS: dict[str, Callable[[dict[str, Any]], Message]] = {
    "hello": _hello,
    "peers": _peers,
    "weights": _weights,
    "ack": _ack,
    "error": _error,
}
