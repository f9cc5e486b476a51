"""Drift detection: an adaptive window on the error stream, feature divergence."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sfhfe_node.errors import LearnerError

__all__ = ["AdaptiveWindow", "DriftEvent", "DriftMonitor", "FeatureDivergence"]

_VAR_FLOOR = 1e-6
_MAX_ABS = 1e15  # larger cells are treated as missing, as by the normaliser


class AdaptiveWindow:
    """ADWIN's two-window test over a stream of batch means, in bounded memory.

    The window holds one entry per batch (its row count, sum and sum of
    squares). After each :meth:`update`, every split of the window into an
    older and a newer part is tested at once (prefix sums, no loop): a split
    whose two means differ by more than Bernstein's bound at confidence
    ``delta`` is a change. The older part is then dropped, so the window
    always covers the stream since its last change. Past ``max_entries``
    entries the two oldest are merged, which coarsens the oldest split points
    but keeps memory flat.

    Parameters:
        delta: confidence of the test (default 0.002). Lower raises fewer
            false alarms and detects later.
        min_side: rows each side of a split must hold (default 64). Higher
            ignores short bursts.
        max_entries: batches kept before merging (default 256).

    Attributes:
        drift_detected: whether the last :meth:`update` found a change.
        change: the mean of the newer part minus the older one at the
            detected split (0.0 without a change).

    Reference: Bifet and Gavaldà (2007), "Learning from time-changing data
    with adaptive windowing".

    Example::

        >>> window = AdaptiveWindow()
        >>> rng = np.random.default_rng(0)
        >>> found = [window.update(rng.binomial(1, 0.1 + 0.5 * (t >= 40), 32))
        ...          for t in range(80)]
        >>> 40 <= found.index(True) < 50
        True
    """

    def __init__(
        self, *, delta: float = 0.002, min_side: int = 64, max_entries: int = 256
    ) -> None:
        if not 0.0 < delta < 1.0 or min_side < 1 or max_entries < 4:
            raise LearnerError(
                f"need 0 < delta < 1, min_side >= 1, max_entries >= 4; got "
                f"{delta}, {min_side}, {max_entries}"
            )
        self.delta = delta
        self.min_side = min_side
        self.max_entries = max_entries
        self.entries = np.zeros((0, 3))
        self.drift_detected = False
        self.change = 0.0

    @property
    def width(self) -> int:
        """Rows in the window."""
        return int(self.entries[:, 0].sum())

    def update(self, values: np.ndarray) -> bool:
        """Add one batch of values; return :attr:`drift_detected`."""
        values = np.asarray(values, dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
        self.drift_detected = False
        self.change = 0.0
        if not len(values):
            return False
        row = [[len(values), values.sum(), (values**2).sum()]]
        self.entries = np.concatenate([self.entries, row])
        if len(self.entries) > self.max_entries:
            merged = self.entries[0] + self.entries[1]
            self.entries = np.concatenate([[merged], self.entries[2:]])
        return self._test()

    def _test(self) -> bool:
        counts, sums, squares = self.entries.T
        total = counts.sum()
        if total < 2 * self.min_side or len(counts) < 2:
            return False
        n0 = np.cumsum(counts)[:-1]
        s0 = np.cumsum(sums)[:-1]
        n1 = total - n0
        s1 = sums.sum() - s0
        mean = sums.sum() / total
        var = max(squares.sum() / total - mean**2, 0.0)
        harmonic = 1.0 / (1.0 / n0 + 1.0 / n1)
        log_term = math.log(2.0 * math.log(total) / self.delta)
        bound = np.sqrt(2.0 * var * log_term / harmonic) + 2.0 * log_term / (
            3.0 * harmonic
        )
        gap = s1 / n1 - s0 / n0
        cuts = np.flatnonzero(
            (np.abs(gap) > bound) & (n0 >= self.min_side) & (n1 >= self.min_side)
        )
        if not len(cuts):
            return False
        cut = int(cuts[-1])
        self.drift_detected = True
        self.change = float(gap[cut])
        self.entries = self.entries[cut + 1 :].copy()
        return True

    def state_dict(self) -> dict[str, Any]:
        """The window's entries."""
        return {"entries": torch.from_numpy(self.entries.copy())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        entries = np.asarray(state["entries"], dtype=np.float64)
        if entries.ndim != 2 or entries.shape[1] != 3:
            raise LearnerError(f"window entries have shape {entries.shape}")
        self.entries = entries.copy()
        self.drift_detected = False
        self.change = 0.0


class FeatureDivergence:
    """Per-feature KL divergence of a recent window from a reference window.

    Each feature is summarised by a Gaussian (mean and variance) twice: over
    the reference window, every row since the last reset, and over the
    current window, an exponential moving window of ``half_life`` rows. The
    divergence of a feature is ``KL(current || reference)`` of the two
    Gaussians, in nats; it is 0 for identical windows and grows with the
    squared shift of the mean in reference standard deviations
    (``0.5 * shift**2``) and with a change of spread.

    Parameters:
        n_features: features per row.
        half_life: rows after which a row's weight in the current window has
            halved (default 200). Shorter reacts faster and is noisier.
        threshold: divergence above which a feature has moved (default 0.5
            nats, a shift of one standard deviation).
        warmup: rows the reference needs before a divergence counts (default
            500).
    """

    def __init__(
        self,
        n_features: int,
        *,
        half_life: float = 200.0,
        threshold: float = 0.5,
        warmup: int = 500,
    ) -> None:
        self.n_features = n_features
        self.half_life = half_life
        self.threshold = threshold
        self.warmup = warmup
        self.reset()

    def reset(self) -> None:
        """Make the reference start again from the current window."""
        self.ref_count = 0.0
        self.ref_sum = np.zeros(self.n_features)
        self.ref_sq = np.zeros(self.n_features)
        self.cur_weight = 0.0
        self.cur_sum = np.zeros(self.n_features)
        self.cur_sq = np.zeros(self.n_features)

    def update(self, X: np.ndarray) -> np.ndarray:
        """Add a batch [n, n_features]; return each feature's divergence."""
        valid = np.isfinite(X) & (np.abs(X) <= _MAX_ABS)
        if not valid.any():
            return self.divergence()
        fill = self.ref_sum / self.ref_count if self.ref_count else np.zeros(
            self.n_features
        )
        cells = np.where(valid, X, fill)  # a missing cell counts as the mean
        n = len(X)
        keep = 0.5 ** (n / self.half_life)
        self.cur_weight = keep * self.cur_weight + (1 - keep) * 1.0
        frac = (1 - keep) / max(n, 1)
        total, squares = cells.sum(axis=0), (cells**2).sum(axis=0)
        self.cur_sum = keep * self.cur_sum + frac * total
        self.cur_sq = keep * self.cur_sq + frac * squares
        self.ref_count += n
        self.ref_sum += total
        self.ref_sq += squares
        return self.divergence()

    def divergence(self) -> np.ndarray:
        """KL divergence of the current window from the reference, per feature."""
        if self.ref_count < self.warmup or self.cur_weight <= 0:
            return np.zeros(self.n_features)
        ref_mean = self.ref_sum / self.ref_count
        ref_var = np.maximum(self.ref_sq / self.ref_count - ref_mean**2, 0.0)
        cur_mean = self.cur_sum / self.cur_weight
        cur_var = np.maximum(self.cur_sq / self.cur_weight - cur_mean**2, 0.0)
        floor = _VAR_FLOOR + 1e-3 * ref_var.mean()
        ref_var = ref_var + floor
        cur_var = cur_var + floor
        return 0.5 * (
            np.log(ref_var / cur_var)
            + (cur_var + (cur_mean - ref_mean) ** 2) / ref_var
            - 1.0
        )

    def restart_from_current(self) -> None:
        """Use the current window as the new reference (after a drift)."""
        weight = self.cur_weight
        mean = self.cur_sum / weight if weight > 0 else np.zeros(self.n_features)
        square = self.cur_sq / weight if weight > 0 else np.zeros(self.n_features)
        seed = min(self.half_life, self.ref_count)
        self.ref_count = seed
        self.ref_sum = mean * seed
        self.ref_sq = square * seed

    def state_dict(self) -> dict[str, Any]:
        """Both windows' sums."""
        return {
            "ref": torch.from_numpy(np.stack([self.ref_sum, self.ref_sq])),
            "cur": torch.from_numpy(np.stack([self.cur_sum, self.cur_sq])),
            "ref_count": self.ref_count,
            "cur_weight": self.cur_weight,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        ref = np.asarray(state["ref"], dtype=np.float64)
        cur = np.asarray(state["cur"], dtype=np.float64)
        if ref.shape != (2, self.n_features) or cur.shape != ref.shape:
            raise LearnerError("saved divergence windows do not match the features")
        self.ref_sum, self.ref_sq = ref[0].copy(), ref[1].copy()
        self.cur_sum, self.cur_sq = cur[0].copy(), cur[1].copy()
        self.ref_count = float(state["ref_count"])
        self.cur_weight = float(state["cur_weight"])


@dataclass
class DriftEvent:
    """One detected change of the stream.

    ``time`` is the index of the last record of the batch that revealed it,
    ``kind`` ``"error"`` (the error rate rose) or ``"features"`` (the
    feature distribution moved), ``magnitude`` the change of the mean error or
    the largest feature divergence in nats, and ``features`` the names of the
    features whose divergence passed half the threshold, largest first.
    """

    time: int
    kind: str
    magnitude: float
    features: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The event as plain values."""
        return {
            "time": self.time,
            "kind": self.kind,
            "magnitude": self.magnitude,
            "features": list(self.features),
        }


class DriftMonitor:
    """The drift expert's detector: error-stream ADWIN plus feature divergence.

    :meth:`update` takes one batch's errors and features and returns the
    events it revealed (at most one per batch). A change of the error stream
    is an event only when the error rose: a falling error (the model
    learning) shrinks the window without an alarm. ``drift_detected`` is true
    right after an update that revealed one, as in River's detectors. After a
    feature drift the reference restarts from the current window, so one
    move is reported once.

    Parameters:
        feature_names: names reported in events (one per feature).
        delta: confidence of the error test (see :class:`AdaptiveWindow`).
        threshold: feature divergence that is a drift, in nats (see
            :class:`FeatureDivergence`).
        half_life: rows of the current feature window.
        max_events: events kept until :meth:`take_events` (default 256; the
            oldest are dropped beyond and counted in ``dropped``).
    """

    def __init__(
        self,
        feature_names: list[str],
        *,
        delta: float = 0.002,
        threshold: float = 0.5,
        half_life: float = 200.0,
        max_events: int = 256,
    ) -> None:
        self.feature_names = list(feature_names)
        self.errors = AdaptiveWindow(delta=delta)
        self.features = FeatureDivergence(
            len(feature_names), half_life=half_life, threshold=threshold
        )
        self.max_events = max_events
        self.pending: list[DriftEvent] = []
        self.total = 0
        self.dropped = 0
        self.drift_detected = False
        self.last_divergence = np.zeros(len(feature_names))

    def update(self, errors: np.ndarray, X: np.ndarray, time: int) -> DriftEvent | None:
        """Add a batch's errors [n] and features [n, d]; return its event, if any."""
        divergence = self.features.update(X)
        self.last_divergence = divergence
        error_change = self.errors.update(errors)
        threshold = self.features.threshold
        moved = np.flatnonzero(divergence > 0.5 * threshold)
        moved = moved[np.argsort(-divergence[moved], kind="stable")]
        names = [self.feature_names[i] for i in moved.tolist()]
        event = None
        if error_change and self.errors.change > 0:
            event = DriftEvent(time, "error", self.errors.change, names)
        elif divergence.size and float(divergence.max()) > threshold:
            event = DriftEvent(time, "features", float(divergence.max()), names)
        if event is not None and (event.kind == "features" or names):
            self.features.restart_from_current()
        self.drift_detected = event is not None
        if event is not None:
            self.total += 1
            self.pending.append(event)
            if len(self.pending) > self.max_events:
                self.pending.pop(0)
                self.dropped += 1
        return event

    def take_events(self) -> list[DriftEvent]:
        """The events since the previous call, oldest first; then forget them."""
        events, self.pending = self.pending, []
        return events

    def state_dict(self) -> dict[str, Any]:
        """Both detectors, the pending events and the counters."""
        return {
            "errors": self.errors.state_dict(),
            "features": self.features.state_dict(),
            "pending": [event.as_dict() for event in self.pending],
            "total": self.total,
            "dropped": self.dropped,
            "drift_detected": self.drift_detected,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.errors.load_state_dict(state["errors"])
        self.features.load_state_dict(state["features"])
        self.pending = [
            DriftEvent(
                int(e["time"]), str(e["kind"]), float(e["magnitude"]),
                [str(name) for name in e["features"]],
            )
            for e in state["pending"]
        ]
        self.total = int(state["total"])
        self.dropped = int(state["dropped"])
        self.drift_detected = bool(state["drift_detected"])
