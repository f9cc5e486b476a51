"""Field checkers for decoded msgpack: each takes a value and its path.

Free of I/O. A checker returns the clean value or raises
:class:`~sfhfe_node.errors.ProtocolError` with reason ``bad_type`` (wrong
type), ``bad_value`` (out of range or wrong pattern), ``missing_field`` or
``unknown_field``, and a message naming the path of the bad value, such as
``weights.experts[0].params[2].shape``. The builders here combine into the
field specification of every message in :mod:`sfhfe_node.gossip.protocol`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from sfhfe_node.errors import ProtocolError

__all__ = [
    "Check",
    "binary",
    "boolean",
    "check_map",
    "integer",
    "kind",
    "list_of",
    "number",
    "optional",
    "text",
    "tuple_of",
]

Check: TypeAlias = Callable[[Any, str], Any]


def kind(value: object) -> str:
    """The msgpack-level type name of ``value``, for error messages."""
    return "null" if value is None else type(value).__name__


def check_map(
    obj: Mapping[Any, Any], path: str, spec: dict[str, Check]
) -> dict[str, Any]:
    """Check that ``obj`` has exactly the fields of ``spec`` and clean each."""
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


def integer(low: int, high: int) -> Check:
    """An integer (not a boolean) in [``low``, ``high``]."""

    def check(value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(
                "bad_type", f"{path} must be an integer, got {kind(value)}"
            )
        if not low <= value <= high:
            raise ProtocolError(
                "bad_value", f"{path}={value} is outside [{low}, {high}]"
            )
        return value

    return check


def number(low: float, high: float) -> Check:
    """A finite integer or float in [``low``, ``high``], returned as a float."""

    def check(value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError(
                "bad_type", f"{path} must be a number, got {kind(value)}"
            )
        result = float(value)
        if not (math.isfinite(result) and low <= result <= high):
            raise ProtocolError(
                "bad_value",
                f"{path}={result} is not a finite number in [{low}, {high}]",
            )
        return result

    return check


def text(pattern: re.Pattern[str], what: str) -> Check:
    """A string that ``pattern`` matches in full; ``what`` describes it."""

    def check(value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise ProtocolError(
                "bad_type", f"{path} must be a string, got {kind(value)}"
            )
        if pattern.fullmatch(value) is None:
            raise ProtocolError("bad_value", f"{path}={value[:80]!r} is not {what}")
        return value

    return check


def binary(size: int | None, max_size: int) -> Check:
    """Bytes of exactly ``size`` (``None``: any size) and at most ``max_size``."""

    def check(value: Any, path: str) -> bytes:
        if not isinstance(value, bytes):
            raise ProtocolError("bad_type", f"{path} must be bytes, got {kind(value)}")
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


def boolean(value: Any, path: str) -> bool:
    """A boolean."""
    if not isinstance(value, bool):
        raise ProtocolError("bad_type", f"{path} must be a boolean, got {kind(value)}")
    return value


def optional(inner: Check) -> Check:
    """``None``, or a value ``inner`` accepts."""

    def check(value: Any, path: str) -> Any:
        return None if value is None else inner(value, path)

    return check


def list_of(inner: Check, low: int, high: int) -> Check:
    """A list of ``low`` to ``high`` items, each checked by ``inner``."""

    def check(value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise ProtocolError(
                "bad_type", f"{path} must be a list, got {kind(value)}"
            )
        if not low <= len(value) <= high:
            raise ProtocolError(
                "bad_value", f"{path} has {len(value)} items; allowed {low}-{high}"
            )
        return [inner(item, f"{path}[{i}]") for i, item in enumerate(value)]

    return check


def tuple_of(fields: dict[str, Check]) -> Check:
    """A list with one item per field, in order; returned as a field map."""

    def check(value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, list):
            raise ProtocolError(
                "bad_type", f"{path} must be a list, got {kind(value)}"
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
