"""The gossip wire format, version 2: msgpack maps in binary websocket frames.

This module only turns messages into bytes and bytes into messages; it never
touches a socket, so every rule below can be tested without an event loop.
The message objects are defined in :mod:`sfhfe_node.gossip.messages`, the
tensor encoding and its checks in :mod:`sfhfe_node.gossip.tensors`, the field
checkers in :mod:`sfhfe_node.gossip.fields`; this module holds the envelope,
the field specification of every type, :func:`encode` and :func:`decode`.
The stateful checks (fresh timestamp, unseen nonce) live in
:class:`~sfhfe_node.gossip.auth.ReplayGuard`, what the node does with each
error in :mod:`sfhfe_node.gossip.handler`; both are summarised here.

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

What a receiver does with accepted ``weights``. The experts of a frame that
passes every check are kept until the end of the exchange round, the latest
per peer and expert. The round hands them to the learner as that peer's
latest model (:class:`~sfhfe_node.learner.peer_models.PeerModels`): a
forward-only copy that never trains, predicts beside the node's own experts
and earns a share of the node's predictions only by predicting the node's
next records better than they do. The node's own experts stay its own; with
a gossip blend above 0 they are also moved toward the robust combination of
the round's updates (:func:`~sfhfe_node.gossip.merge.combine`), a blend the
client undoes when it raises the loss on its recent records.

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

import re
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np

from sfhfe_node.errors import ProtocolError
from sfhfe_node.gossip.auth import MAC_BYTES, frame_mac, verify_frame
from sfhfe_node.gossip.fields import (
    Check,
    binary,
    boolean,
    check_map,
    integer,
    kind,
    list_of,
    number,
    optional,
    text,
    tuple_of,
)
from sfhfe_node.gossip.messages import (
    NONCE_BYTES,
    Ack,
    Error,
    Hello,
    Message,
    Peers,
    Weights,
    new_nonce,
)
from sfhfe_node.gossip.tensors import (
    MAX_DIMS,
    MAX_ELEMENTS,
    TensorError,
    decode_tensor,
    encode_tensor,
    float32,
)

__all__ = [
    "MAX_ADDRESSES",
    "MAX_DIMS",
    "MAX_ELEMENTS",
    "MAX_EMBEDDING",
    "MAX_EXPERTS",
    "MAX_FRAME",
    "MAX_PARAMS",
    "NONCE_BYTES",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "Ack",
    "Error",
    "Hello",
    "Message",
    "Peers",
    "TensorError",
    "Weights",
    "decode",
    "encode",
    "is_address",
    "is_node_id",
    "new_nonce",
]

PROTOCOL_VERSION = 2
SUPPORTED_VERSIONS = (2,)
MAX_FRAME = 4 * 2**20
MAX_EMBEDDING = 64
MAX_EXPERTS = 32
MAX_PARAMS = 64
MAX_ADDRESSES = 64
MAX_COUNT = 2**53
MAX_DETAIL = 200

_NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_EXPERT = re.compile(r"[a-z][a-z0-9_]{0,31}")
_PARAM_NAME = re.compile(r"[A-Za-z0-9._]{1,64}")
_REASON = re.compile(r"[a-z_]{1,32}")
_ADDRESS = re.compile(r"wss?://[A-Za-z0-9.\-\[\]:]{1,200}(/[\x21-\x7e]{0,50})?")


def is_address(value: object) -> bool:
    """Tell whether ``value`` is a ws:// or wss:// address this format allows."""
    return isinstance(value, str) and _ADDRESS.fullmatch(value) is not None


def is_node_id(value: object) -> bool:
    """Tell whether ``value`` is a node id: 1-64 of ``[A-Za-z0-9._-]``."""
    return isinstance(value, str) and _NODE_ID.fullmatch(value) is not None


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
        vector = float32(message.embedding).reshape(-1)
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
            [expert, [encode_tensor(name, t) for name, t in params.items()]]
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
        raise ProtocolError("not_map", f"frame must be a map, got {kind(obj)}")
    version = obj.get("v")
    if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
        supported = ", ".join(map(str, SUPPORTED_VERSIONS))
        raise ProtocolError(
            "bad_version",
            f"protocol version {str(version)[:20]!r} is not spoken here; "
            f"supported: {supported}",
        )
    _check_mac(frame, obj.get("mac"), key)
    name = obj.get("type")
    if name not in _FIELDS:
        raise ProtocolError(
            "unknown_type",
            f"message type {str(name)[:40]!r} is not one of {', '.join(_FIELDS)}",
        )
    clean = check_map(obj, name, {**_ENVELOPE, **_FIELDS[name]})
    return _BUILDERS[name](clean)


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


# Field specification: the envelope, then the fields of each type.


def _usage(value: Any, path: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ProtocolError("bad_type", f"{path} must be a map, got {kind(value)}")
    if len(value) > MAX_EXPERTS:
        raise ProtocolError(
            "bad_value", f"{path} has {len(value)} entries; at most {MAX_EXPERTS}"
        )
    name = text(_EXPERT, "an expert name")
    share = number(0.0, 1e12)
    return {
        name(key, f"{path} key"): share(item, f"{path}.{key}")
        for key, item in value.items()
    }


_ADDRESS_TEXT = text(_ADDRESS, "a ws:// or wss:// address")
_REASON_TEXT = text(_REASON, "a reason token ([a-z_]{1,32})")

_ENVELOPE: dict[str, Check] = {
    "v": integer(PROTOCOL_VERSION, PROTOCOL_VERSION),
    "type": text(re.compile(r"[a-z]{1,16}"), "a message type"),
    "from": text(_NODE_ID, "a node id (1-64 of A-Z a-z 0-9 . _ -)"),
    "ts": number(0.0, 1e11),
    "nonce": binary(NONCE_BYTES, NONCE_BYTES),
    "mac": optional(binary(MAC_BYTES, MAC_BYTES)),
}

_PARAM = tuple_of(
    {
        "name": text(_PARAM_NAME, "a parameter name (1-64 of A-Z a-z 0-9 . _)"),
        "shape": list_of(integer(-MAX_COUNT, MAX_COUNT), 0, 64),
        "data": binary(None, MAX_FRAME * 4),
    }
)

_EXPERT_ENTRY = tuple_of(
    {
        "expert": text(_EXPERT, "an expert name ([a-z][a-z0-9_]{0,31})"),
        "params": list_of(_PARAM, 1, MAX_PARAMS),
    }
)

_FIELDS: dict[str, dict[str, Check]] = {
    "hello": {
        "address": optional(_ADDRESS_TEXT),
        "dim": integer(0, MAX_EMBEDDING),
        "embedding": binary(None, 4 * MAX_EMBEDDING),
        "usage": _usage,
        "records": integer(0, MAX_COUNT),
    },
    "peers": {
        "addresses": list_of(_ADDRESS_TEXT, 0, MAX_ADDRESSES),
    },
    "weights": {
        "dtype": text(re.compile(r".{0,32}", re.DOTALL), "a short string"),
        "experts": list_of(_EXPERT_ENTRY, 1, MAX_EXPERTS),
        "samples": integer(0, MAX_COUNT),
        "version": integer(0, MAX_COUNT),
    },
    "ack": {
        "ref": binary(NONCE_BYTES, NONCE_BYTES),
        "accepted": boolean,
        "reason": _REASON_TEXT,
    },
    "error": {
        "reason": _REASON_TEXT,
        "detail": text(re.compile(r".{0,200}", re.DOTALL), "at most 200 chars"),
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
            params[name] = decode_tensor(
                f"{expert}.{name}", param["shape"], param["data"], sender, ref
            )
        experts[expert] = params
    return Weights(
        sender, experts, obj["samples"], obj["version"], ts=obj["ts"], nonce=ref
    )


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
