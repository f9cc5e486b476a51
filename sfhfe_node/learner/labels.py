"""Mapping of raw label values to class indices."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from sfhfe_node.errors import LearnerError

__all__ = ["LabelEncoder"]

_MISSING = {"", "nan", "na", "null", "none", "?"}


class LabelEncoder:
    """Give each distinct label a class index, in order of first appearance.

    Raw labels come from CSV cells or JSON values, so ``"1"``, ``1`` and
    ``1.0`` are the same label, and surrounding spaces are ignored. Text labels
    (``"UP"``) are kept as they are, case included.

    Parameters:
        max_classes: the most distinct labels encoded (default 16). A new
            label beyond it is not encoded: :meth:`encode` returns -1 and
            counts it in ``rejected``. A larger value lets more classes in but
            widens every classifier's output.

    Attributes:
        classes: the known labels, as normalised text, by class index.
        rejected: labels refused because ``max_classes`` was reached.
        missing: empty or missing labels (returned as -1).

    Example::

        >>> encoder = LabelEncoder(2)
        >>> [encoder.encode(v) for v in ("UP", "DOWN", " UP", "FLAT")]
        [0, 1, 0, -1]
        >>> encoder.rejected
        1
    """

    def __init__(self, max_classes: int = 16) -> None:
        if max_classes < 2:
            raise LearnerError(f"max_classes={max_classes} must be at least 2")
        self.max_classes = max_classes
        self.classes: list[str] = []
        self._index: dict[str, int] = {}
        self.rejected = 0
        self.missing = 0

    def encode(self, value: Any) -> int:
        """Return the class index of ``value``, adding it if there is room."""
        key = self.normalise(value)
        if key is None:
            self.missing += 1
            return -1
        index = self._index.get(key)
        if index is not None:
            return index
        if len(self.classes) >= self.max_classes:
            self.rejected += 1
            return -1
        self._index[key] = len(self.classes)
        self.classes.append(key)
        return len(self.classes) - 1

    def encode_many(self, values: Iterable[Any]) -> np.ndarray:
        """Encode every value; return float64 indices, -1 where not encoded."""
        return np.array([self.encode(value) for value in values], dtype=np.float64)

    def decode(self, index: int) -> str:
        """Return the label of class ``index``."""
        if not 0 <= index < len(self.classes):
            raise LearnerError(
                f"class index {index} is unknown; {len(self.classes)} classes known"
            )
        return self.classes[index]

    @staticmethod
    def normalise(value: Any) -> str | None:
        """Canonical text of a raw label, or ``None`` for a missing one."""
        if value is None or isinstance(value, bool):
            return None if value is None else str(int(value))
        if isinstance(value, (int, np.integer)):
            return str(int(value))
        if isinstance(value, (float, np.floating)):
            return _number(float(value))
        text = str(value).strip()
        if text.lower() in _MISSING:
            return None
        try:
            number = float(text)
        except ValueError:
            return text
        return _number(number) if math.isfinite(number) else text

    def state_dict(self) -> dict[str, Any]:
        """The known classes and counters, as plain Python values."""
        return {
            "max_classes": self.max_classes,
            "classes": list(self.classes),
            "rejected": self.rejected,
            "missing": self.missing,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        classes = [str(label) for label in state["classes"]]
        if len(classes) > self.max_classes or len(set(classes)) != len(classes):
            raise LearnerError(
                f"saved classes do not fit max_classes={self.max_classes} "
                "or hold duplicates"
            )
        self.classes = classes
        self._index = {label: i for i, label in enumerate(classes)}
        self.rejected = int(state["rejected"])
        self.missing = int(state["missing"])


def _number(number: float) -> str | None:
    if not math.isfinite(number):
        return None
    if number == int(number) and abs(number) < 2**53:
        return str(int(number))
    return repr(number)
