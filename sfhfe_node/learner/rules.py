"""User-declared governance rules: feature ranges, allowed labels, monotonicity.

A rules file is TOML (``.toml``) or JSON (``.json``)::

    # rules.toml
    allowed_labels = ["0", "1"]          # labels a prediction may take
    target_range = [0.0, 100.0]          # regression outputs are clipped here

    [ranges]                             # a record outside is a violation
    nswprice = [0.0, 1.0]
    vicdemand = [0.0, 1.0]

    [monotonic]                          # along the stream, record after record
    period = "increasing"                # or "decreasing"

Every key is optional. Names are feature names (the CSV header); labels are
label texts as the stream writes them (``"1"``, ``"UP"``).
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sfhfe_node.errors import ConfigError
from sfhfe_node.learner.labels import LabelEncoder

__all__ = ["Rules", "load_rules", "parse_rules"]

_DIRECTIONS = ("increasing", "decreasing")
_KEYS = ("ranges", "allowed_labels", "monotonic", "target_range")
_MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class Rules:
    """Constraints the governance expert enforces.

    Parameters:
        ranges: feature name -> inclusive ``(low, high)``; a record with a
            finite value outside is a violation (a missing cell is not).
        allowed_labels: label texts a classification may take; ``None``
            allows every label. A labelled record with another label is a
            violation, and predictions never take it.
        monotonic: feature name -> ``"increasing"`` or ``"decreasing"``; a
            record whose value goes the other way from the previous finite
            value of that feature is a violation.
        target_range: inclusive bounds of a regression target; predictions
            are clipped into them and a target outside is a violation.
    """

    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    allowed_labels: tuple[str, ...] | None = None
    monotonic: dict[str, str] = field(default_factory=dict)
    target_range: tuple[float, float] | None = None

    def features(self) -> set[str]:
        """Every feature name the rules mention."""
        return set(self.ranges) | set(self.monotonic)


def load_rules(path: Path) -> Rules:
    """Read and check a rules file; :class:`ConfigError` names any problem."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigError(f"rules file {path} must end in .toml or .json")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"rules file {path} cannot be read: {exc}") from None
    if len(raw) > _MAX_BYTES:
        raise ConfigError(f"rules file {path} is larger than {_MAX_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text) if suffix == ".toml" else json.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, ValueError) as exc:
        raise ConfigError(f"rules file {path} does not parse: {exc}") from None
    try:
        return parse_rules(data)
    except ConfigError as exc:
        raise ConfigError(f"rules file {path}: {exc}") from None


def parse_rules(data: Any) -> Rules:
    """Check already-parsed rules (a mapping) and build :class:`Rules`."""
    if not isinstance(data, dict):
        raise ConfigError(f"rules must be a table, got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - set(_KEYS))
    if unknown:
        raise ConfigError(f"unknown rule keys {unknown}; allowed: {list(_KEYS)}")
    ranges = {}
    for name, bounds in _table(data.get("ranges", {}), "ranges").items():
        ranges[name] = _bounds(bounds, f"ranges.{name}")
    monotonic = {}
    for name, direction in _table(data.get("monotonic", {}), "monotonic").items():
        if direction not in _DIRECTIONS:
            raise ConfigError(
                f"monotonic.{name} is {direction!r}; use one of {list(_DIRECTIONS)}"
            )
        monotonic[name] = direction
    labels = data.get("allowed_labels")
    allowed = None
    if labels is not None:
        if not isinstance(labels, list) or not labels:
            raise ConfigError("allowed_labels must be a non-empty list of labels")
        texts = []
        for label in labels:
            if isinstance(label, bool) or not isinstance(label, (str, int, float)):
                raise ConfigError(f"allowed label {label!r} is not a text or number")
            text = LabelEncoder.normalise(label)
            if text is None:
                raise ConfigError(f"allowed label {label!r} is a missing value")
            texts.append(text)
        allowed = tuple(dict.fromkeys(texts))
    target = data.get("target_range")
    target_range = None if target is None else _bounds(target, "target_range")
    return Rules(ranges, allowed, monotonic, target_range)


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table of feature names")
    for name in value:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where} has a key that is not a feature name: {name!r}")
    return value


def _bounds(value: Any, where: str) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise ConfigError(f"{where} must be a [low, high] pair, got {value!r}")
    low, high = value
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise ConfigError(f"{where} bound {bound!r} is not a number")
        if not math.isfinite(bound):
            raise ConfigError(f"{where} bound {bound!r} is not finite")
    if low > high:
        raise ConfigError(f"{where} has low {low} above high {high}")
    return float(low), float(high)
