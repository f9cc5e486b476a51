"""The insight a client uploads, and the meta-parameters it gets back.

An insight holds aggregates of one node's learning since its previous insight;
never a record, a feature value or a target value. Schema version 1::

    {
      "schema": 1,
      "node_id": str,             1-64 chars of [A-Za-z0-9._-]
      "seq": int,                 0 .. 2**53, increasing per node
      "time": float,              sender's unix time, seconds
      "task": str,                "classification" | "regression" | "none"
      "records": int,             records learned since the node started
      "window": {                 the records since the previous insight
        "records": int,
        "loss": float,            mean prequential loss, >= 0
        "accuracy": float|None,   prequential accuracy in [0, 1]
      },
      "experts": {                at most 32, name -> statistics
        name: {
          "lr": float,            learning rate used, in (0, 10]
          "loss_start": float,    expert's mean loss, first half of the window
          "loss_end": float,      expert's mean loss, second half of the window
          "usage": float,         share of records the router sent it, [0, 1]
          "samples": int,         records it learned from in the window
        }
      },
      "drift": {"events": int, "active": bool},
      "memory_bytes": int,        learner memory in use
      "embedding": [float],       node embedding, at most 64 finite numbers
      "gossip": str|None,         ws:// or wss:// address peers can reach
      "peer_models": {            optional: what peers' models earned here
        "weight": float,          peers' share of the predictions now, [0, 1]
        "peers": int,             peers' models held, 0 .. 1024
        "helped": int,            records the peers' share turned right
        "hurt": int,              records the peers' share turned wrong
      }
    }

Every field is required except those marked optional. Unknown fields are
rejected: a field this version does not know cannot be
stored safely, so the sender learns at once that the two sides disagree.

The reply (and ``GET /v1/meta``) carries the meta-parameters::

    {"version": int, "learning_rates": {name: float}, "router_priors": {name: float}}
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import msgpack

from sfhfe_node.errors import InsightError

__all__ = [
    "INSIGHT_SCHEMA",
    "MAX_EMBEDDING",
    "MAX_EXPERTS",
    "MAX_INSIGHT_BYTES",
    "decode_body",
    "make_insight",
    "validate_insight",
    "validate_meta",
]

INSIGHT_SCHEMA = 1
MAX_INSIGHT_BYTES = 64 * 1024
MAX_EXPERTS = 32
MAX_EMBEDDING = 64
MAX_SEQ = 2**53
TASKS = ("classification", "regression", "none")

_NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_EXPERT_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_GOSSIP = re.compile(r"wss?://[A-Za-z0-9.\-\[\]:]{1,200}(/[\x21-\x7e]{0,50})?")


def decode_body(body: bytes, content_type: str) -> Any:
    """Parse a request body as JSON or msgpack, by its Content-Type.

    Raises :class:`InsightError` with reason ``bad_encoding`` for a body that
    does not parse and ``unsupported_media_type`` for any other type.
    """
    kind = content_type.split(";", 1)[0].strip().lower()
    try:
        if kind == "application/json":
            return json.loads(
                body.decode("utf-8"),
                parse_constant=_reject_constant,
                parse_float=_finite_float,
            )
        if kind in ("application/msgpack", "application/x-msgpack"):
            return msgpack.unpackb(
                body,
                raw=False,
                strict_map_key=True,
            )
    except InsightError:
        raise
    except (ValueError, RecursionError, msgpack.UnpackException) as exc:
        raise InsightError(
            "bad_encoding",
            f"body is not valid {kind}: {str(exc) or type(exc).__name__}",
        ) from None
    raise InsightError(
        "unsupported_media_type",
        f"content type {kind!r} is not allowed; use application/json or "
        "application/msgpack",
    )


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InsightError("not_finite", f"{text[:40]} is not a finite number")
    return value


def _reject_constant(name: str) -> float:
    raise InsightError("not_finite", f"{name} is not a finite number")


def make_insight(
    *,
    node_id: str,
    seq: int,
    task: str,
    records: int,
    window: dict[str, Any],
    embedding: Any,
    gossip: str | None,
    now: float,
    peer_models: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build and check an insight from a learner's window of aggregates.

    ``window`` is what the learner's ``take_window()`` returns: ``records``,
    ``loss``, ``accuracy``, ``experts``, ``drift`` and ``memory_bytes``;
    ``peer_models``, when given, holds ``weight``, ``peers``, ``helped`` and
    ``hurt`` (the field is left out otherwise).
    """
    extra = {} if peer_models is None else {"peer_models": peer_models}
    return validate_insight(
        {
            "schema": INSIGHT_SCHEMA,
            "node_id": node_id,
            "seq": seq,
            "time": now,
            "task": task,
            "records": int(records),
            "window": {
                "records": int(window["records"]),
                "loss": float(window["loss"]),
                "accuracy": window["accuracy"],
            },
            "experts": window["experts"],
            "drift": window["drift"],
            "memory_bytes": int(window["memory_bytes"]),
            "embedding": [float(value) for value in embedding],
            "gossip": gossip,
            **extra,
        }
    )


def validate_insight(data: Any) -> dict[str, Any]:
    """Check ``data`` against insight schema 1 and return a clean copy.

    The copy holds plain ``int``, ``float``, ``str``, ``bool``, lists and
    dicts only. Raises :class:`InsightError` naming the first bad field.
    """
    obj = _fields(data, "insight", _TOP_FIELDS, _OPTIONAL_TOP)
    if obj["schema"] != INSIGHT_SCHEMA:
        raise InsightError(
            "bad_schema", f"schema {obj['schema']!r} is not supported; use 1"
        )
    return obj


def validate_meta(data: Any) -> dict[str, Any]:
    """Check a meta-parameter document and return a clean copy."""
    obj = _fields(data, "meta", _META_FIELDS)
    return obj


# Field checkers: each takes the value and its dotted path, returns a clean value.


def _int(lo: int, hi: int):
    def check(value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InsightError(
                "bad_type", f"{path} must be an integer, got {_kind(value)}"
            )
        if not lo <= value <= hi:
            raise InsightError(
                "out_of_range", f"{path}={value} is outside [{lo}, {hi}]"
            )
        return int(value)

    return check


def _float(lo: float, hi: float, *, open_low: bool = False):
    def check(value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InsightError(
                "bad_type", f"{path} must be a number, got {_kind(value)}"
            )
        value = float(value)
        if not math.isfinite(value):
            raise InsightError("not_finite", f"{path}={value} is not a finite number")
        if value < lo or value > hi or (open_low and value == lo):
            raise InsightError(
                "out_of_range", f"{path}={value} is outside [{lo}, {hi}]"
            )
        return value

    return check


def _optional(inner):
    def check(value: Any, path: str) -> Any:
        return None if value is None else inner(value, path)

    return check


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise InsightError(
            "bad_type", f"{path} must be true or false, got {_kind(value)}"
        )
    return value


def _text(pattern: re.Pattern[str], what: str):
    def check(value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise InsightError(
                "bad_type", f"{path} must be a string, got {_kind(value)}"
            )
        if not pattern.fullmatch(value):
            raise InsightError("bad_value", f"{path}={value[:80]!r} is not {what}")
        return value

    return check


def _choice(options: tuple[str, ...]):
    def check(value: Any, path: str) -> str:
        if value not in options:
            raise InsightError(
                "bad_value",
                f"{path}={str(value)[:40]!r} is not one of {', '.join(options)}",
            )
        return str(value)

    return check


def _vector(max_len: int):
    number = _float(-1e6, 1e6)

    def check(value: Any, path: str) -> list[float]:
        if not isinstance(value, list):
            raise InsightError("bad_type", f"{path} must be a list, got {_kind(value)}")
        if len(value) > max_len:
            raise InsightError(
                "too_large", f"{path} has {len(value)} items; at most {max_len}"
            )
        return [number(item, f"{path}[{i}]") for i, item in enumerate(value)]

    return check


def _mapping(key: re.Pattern[str], inner, max_len: int):
    def check(value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise InsightError("bad_type", f"{path} must be a map, got {_kind(value)}")
        if len(value) > max_len:
            raise InsightError(
                "too_large", f"{path} has {len(value)} entries; at most {max_len}"
            )
        clean = {}
        for name, item in value.items():
            _text(key, "a valid name")(name, f"{path} key")
            clean[name] = inner(item, f"{path}.{name}")
        return clean

    return check


def _record(fields: dict[str, Any]):
    def check(value: Any, path: str) -> dict[str, Any]:
        return _fields(value, path, fields)

    return check


def _fields(
    value: Any,
    path: str,
    fields: dict[str, Any],
    optional: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Check a map holding ``fields``; those in ``optional`` may be absent."""
    if not isinstance(value, dict):
        raise InsightError("bad_type", f"{path} must be a map, got {_kind(value)}")
    unknown = sorted(str(name)[:40] for name in value if name not in fields)
    if unknown:
        raise InsightError(
            "unknown_field", f"{path} has unknown field(s): {', '.join(unknown)}"
        )
    missing = sorted(
        name for name in fields if name not in value and name not in optional
    )
    if missing:
        raise InsightError(
            "missing_field", f"{path} lacks field(s): {', '.join(missing)}"
        )
    return {
        name: check(value[name], f"{path}.{name}")
        for name, check in fields.items()
        if name in value
    }


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


_LOSS = _float(0.0, 1e9)

_EXPERT_FIELDS = {
    "lr": _float(0.0, 10.0, open_low=True),
    "loss_start": _LOSS,
    "loss_end": _LOSS,
    "usage": _float(0.0, 1.0),
    "samples": _int(0, MAX_SEQ),
}

_TOP_FIELDS = {
    "schema": _int(0, 1000),
    "node_id": _text(_NODE_ID, "a node id (1-64 of A-Z a-z 0-9 . _ -)"),
    "seq": _int(0, MAX_SEQ),
    "time": _float(0.0, 1e11),
    "task": _choice(TASKS),
    "records": _int(0, MAX_SEQ),
    "window": _record(
        {
            "records": _int(0, MAX_SEQ),
            "loss": _LOSS,
            "accuracy": _optional(_float(0.0, 1.0)),
        }
    ),
    "experts": _mapping(_EXPERT_NAME, _record(_EXPERT_FIELDS), MAX_EXPERTS),
    "drift": _record({"events": _int(0, MAX_SEQ), "active": _bool}),
    "memory_bytes": _int(0, 2**50),
    "embedding": _vector(MAX_EMBEDDING),
    "gossip": _optional(_text(_GOSSIP, "a ws:// or wss:// address")),
    "peer_models": _record(
        {
            "weight": _float(0.0, 1.0),
            "peers": _int(0, 1024),
            "helped": _int(0, MAX_SEQ),
            "hurt": _int(0, MAX_SEQ),
        }
    ),
}
_OPTIONAL_TOP = frozenset({"peer_models"})

_META_FIELDS = {
    "version": _int(0, MAX_SEQ),
    "learning_rates": _mapping(
        _EXPERT_NAME, _float(0.0, 10.0, open_low=True), MAX_EXPERTS
    ),
    "router_priors": _mapping(_EXPERT_NAME, _float(0.0, 1.0), MAX_EXPERTS),
}
