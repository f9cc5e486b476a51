"""Enforcement of governance rules and robust outlier detection."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sfhfe_node.errors import ConfigError, LearnerError
from sfhfe_node.learner.labels import LabelEncoder
from sfhfe_node.learner.rules import Rules

__all__ = ["Governor", "OutlierDetector"]

_MAD_TO_STD = 1.4826


class Governor:
    """Checks records, labels and predictions against :class:`Rules`.

    Records that break a range or a monotonic rule, and labels that are not
    allowed (or targets outside ``target_range``), are counted by rule kind
    and excluded from learning by the learner; they are still predicted.
    Classes whose label is not allowed are masked out of every prediction,
    and regression outputs are clipped into ``target_range``.

    Parameters:
        rules: the constraints; ``None`` checks nothing.
        feature_names: the stream's feature names, in column order. A rule
            naming another feature raises :class:`ConfigError`.
        max_classes: classifier width.
        labels: the encoder that maps label texts to class indices; without
            it class ``i`` has label text ``str(i)``.
    """

    def __init__(
        self,
        rules: Rules | None,
        feature_names: list[str],
        *,
        max_classes: int,
        labels: LabelEncoder | None = None,
    ) -> None:
        self.rules = rules or Rules()
        self.feature_names = list(feature_names)
        self.max_classes = max_classes
        self.labels = labels
        unknown = sorted(self.rules.features() - set(feature_names))
        if unknown:
            raise ConfigError(
                f"rules name unknown features {unknown}; known: {feature_names}"
            )
        index = {name: i for i, name in enumerate(feature_names)}
        ranges = self.rules.ranges
        self._range_cols = np.array([index[n] for n in ranges], dtype=np.int64)
        self._low = np.array([low for low, _ in ranges.values()])
        self._high = np.array([high for _, high in ranges.values()])
        mono = self.rules.monotonic
        self._mono_cols = np.array([index[n] for n in mono], dtype=np.int64)
        self._sign = np.array(
            [1.0 if d == "increasing" else -1.0 for d in mono.values()]
        )
        self.last = np.full(len(mono), np.nan)
        self.violations = {"range": 0, "monotonic": 0, "label": 0, "target": 0}

    def replaced(self, rules: Rules | None) -> Governor:
        """A governor for new ``rules`` that keeps the violation counts."""
        governor = Governor(
            rules, self.feature_names, max_classes=self.max_classes, labels=self.labels
        )
        governor.violations = dict(self.violations)
        if governor.rules.monotonic == self.rules.monotonic:
            governor.last = self.last.copy()
        return governor

    @property
    def active(self) -> bool:
        """Whether any rule is declared."""
        rules = self.rules
        return bool(
            rules.ranges or rules.monotonic or rules.allowed_labels is not None
            or rules.target_range is not None
        )

    def check_records(self, X: np.ndarray) -> np.ndarray:
        """Rows of ``X`` that break a range or monotonic rule (bool [n])."""
        bad = np.zeros(len(X), dtype=bool)
        if len(self._range_cols):
            cols = X[:, self._range_cols]
            outside = np.isfinite(cols) & ((cols < self._low) | (cols > self._high))
            self.violations["range"] += int(outside.any(axis=1).sum())
            bad |= outside.any(axis=1)
        if len(self._mono_cols):
            cols = np.concatenate([self.last[None, :], X[:, self._mono_cols]])
            finite = np.isfinite(cols)
            rows = np.where(finite, np.arange(len(cols))[:, None], 0)
            filled = np.take_along_axis(cols, np.maximum.accumulate(rows, axis=0), 0)
            previous, current = filled[:-1], cols[1:]
            against = finite[1:] & np.isfinite(previous)
            against &= self._sign * (current - previous) < 0
            self.violations["monotonic"] += int(against.any(axis=1).sum())
            bad |= against.any(axis=1)
            self.last = filled[-1].copy()
        return bad

    def check_targets(
        self, y: np.ndarray, labelled: np.ndarray, task: str
    ) -> np.ndarray:
        """Labelled rows whose label is not allowed or target is out of range."""
        bad = np.zeros(len(y), dtype=bool)
        if task == "classification" and self.rules.allowed_labels is not None:
            allowed = self.allowed_classes()
            classes = np.where(labelled, y, 0).astype(np.int64)
            bad = labelled & ~allowed[np.clip(classes, 0, self.max_classes - 1)]
            self.violations["label"] += int(bad.sum())
        elif task == "regression" and self.rules.target_range is not None:
            low, high = self.rules.target_range
            bad = labelled & ((y < low) | (y > high))
            self.violations["target"] += int(bad.sum())
        return bad

    def allowed_classes(self) -> np.ndarray:
        """Whether each class index may be predicted (bool [max_classes])."""
        allowed = np.ones(self.max_classes, dtype=bool)
        permitted = self.rules.allowed_labels
        if permitted is None:
            return allowed
        names = self.labels.classes if self.labels is not None else None
        for i in range(self.max_classes):
            if names is None:
                allowed[i] = str(i) in permitted
            elif i < len(names):
                allowed[i] = names[i] in permitted
        return allowed

    def class_mask(self, masked: float) -> torch.Tensor:
        """Logit offsets: 0 for allowed classes, ``masked`` for the others."""
        return torch.from_numpy(np.where(self.allowed_classes(), 0.0, masked)).float()

    def clip(self, values: np.ndarray) -> np.ndarray:
        """Regression outputs clipped into ``target_range`` when it is declared."""
        if self.rules.target_range is None:
            return values
        low, high = self.rules.target_range
        return np.clip(values, low, high)

    def state_dict(self) -> dict[str, Any]:
        """Last monotonic values and the violation counters."""
        return {
            "last": torch.from_numpy(self.last.copy()),
            "violations": dict(self.violations),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        last = np.asarray(state["last"], dtype=np.float64)
        if last.shape == self.last.shape:
            self.last = last.copy()
        # Otherwise the rules changed since the save: monotonic checks restart.
        saved = state["violations"]
        self.violations = {key: int(saved[key]) for key in self.violations}


class OutlierDetector:
    """Robust z-scores against the median and MAD of the recent records.

    The detector keeps the last ``capacity`` complete rows (every cell
    finite) and recomputes each
    feature's median and median absolute deviation every ``refresh`` batches.
    A row is an outlier when any finite feature lies more than ``threshold``
    robust standard deviations (``1.4826 * MAD``) from its median. The MAD is
    floored at a tenth of the feature's standard deviation, so that a feature
    that is almost constant does not flag every rare value.

    Parameters:
        n_features: features per row.
        threshold: robust z-score of an outlier (default 12). Lower
            quarantines more, including genuine rare regimes.
        capacity: recent rows the statistics come from (default 1024).
        refresh: batches between two recomputations (default 8).
        warmup: rows seen before any row is flagged (default 256, at least
            ``refresh`` batches' worth so that statistics exist).

    Reference: Rousseeuw and Croux (1993), "Alternatives to the median
    absolute deviation".
    """

    def __init__(
        self,
        n_features: int,
        *,
        threshold: float = 12.0,
        capacity: int = 1024,
        refresh: int = 8,
        warmup: int = 256,
    ) -> None:
        self.n_features = n_features
        self.threshold = threshold
        self.capacity = capacity
        self.refresh = refresh
        self.warmup = warmup
        self.buffer = np.zeros((0, n_features))
        self.median = np.zeros(n_features)
        self.scale = np.ones(n_features)
        self.batches = 0
        self.seen = 0
        self.flagged = 0

    def score(self, X: np.ndarray) -> np.ndarray:
        """Largest robust z-score of each row (0 before warm-up)."""
        if self.seen < self.warmup or self.batches < self.refresh:
            return np.zeros(len(X))
        z = np.abs(X - self.median) / self.scale
        return np.where(np.isfinite(z), z, 0.0).max(axis=1, initial=0.0)

    def flag(self, X: np.ndarray) -> np.ndarray:
        """Outlier rows of ``X`` (bool [n]); counts them."""
        outliers = self.score(X) > self.threshold
        self.flagged += int(outliers.sum())
        return outliers

    def learn_many(self, X: np.ndarray) -> None:
        """Add rows to the recent window and refresh the statistics on cadence."""
        X = X[(np.isfinite(X) & (np.abs(X) <= 1e15)).all(axis=1)]
        self.buffer = np.concatenate([self.buffer, X])[-self.capacity :]
        self.seen += len(X)
        self.batches += 1
        if self.batches % self.refresh == 0:
            self._refresh()

    def _refresh(self) -> None:
        data = self.buffer
        if not len(data):
            return
        with np.errstate(all="ignore"):
            median = np.median(data, axis=0)
            mad = np.median(np.abs(data - median), axis=0)
            std = data.std(axis=0)
        scale = np.maximum(_MAD_TO_STD * mad, 0.1 * std)
        self.median = np.where(np.isfinite(median), median, 0.0)
        self.scale = np.where(np.isfinite(scale) & (scale > 1e-9), scale, 1.0)

    def state_dict(self) -> dict[str, Any]:
        """Recent rows, statistics and counters."""
        return {
            "buffer": torch.from_numpy(self.buffer.copy()),
            "median": torch.from_numpy(self.median.copy()),
            "scale": torch.from_numpy(self.scale.copy()),
            "batches": self.batches,
            "seen": self.seen,
            "flagged": self.flagged,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        buffer = np.asarray(state["buffer"], dtype=np.float64)
        if buffer.ndim != 2 or buffer.shape[1] != self.n_features:
            raise LearnerError("saved outlier window does not match the features")
        self.buffer = buffer.copy()
        self.median = np.asarray(state["median"], dtype=np.float64).copy()
        self.scale = np.asarray(state["scale"], dtype=np.float64).copy()
        self.batches = int(state["batches"])
        self.seen = int(state["seen"])
        self.flagged = int(state["flagged"])
