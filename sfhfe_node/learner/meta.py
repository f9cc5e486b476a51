"""The meta-adaptation expert's job: learning-rate schedule and freezing."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sfhfe_node.errors import LearnerError

__all__ = ["MetaSchedule"]


class MetaSchedule:
    """Per-expert learning-rate multipliers from loss trends, and freezing.

    Each expert's loss is followed by a fast and a slow exponential average.
    Every ``period`` batches the ratio ``fast / slow`` decides: above
    ``1 + tolerance`` the expert is getting worse (the stream moved), so its
    multiplier grows by ``step``; below ``1 - tolerance`` it improves and
    keeps its rate; in between it has settled, and its multiplier shrinks by
    ``step``. Multipliers stay in ``[low, high]``. An expert settled for
    ``freeze_after`` periods in a row is frozen (multiplier 0: it predicts
    but does not learn) until a drift or ``thaw_after`` periods pass.

    The learner multiplies the coordinator's rate by the multiplier; the
    coordinator's own changes are clamped to ±50 % per update elsewhere.

    Parameters:
        n_experts: experts followed.
        period: batches between two decisions (default 32).
        step: factor of one change (default 1.25).
        tolerance: relative band of a settled loss (default 0.02).
        low, high: bounds of a multiplier (default 0.25 and 4).
        freeze_after: settled periods before freezing (default 8; 0 never
            freezes).
        thaw_after: frozen periods before thawing (default 4).
    """

    def __init__(
        self,
        n_experts: int,
        *,
        period: int = 32,
        step: float = 1.25,
        tolerance: float = 0.02,
        low: float = 0.25,
        high: float = 4.0,
        freeze_after: int = 8,
        thaw_after: int = 4,
    ) -> None:
        if period < 1 or step <= 1.0 or not 0 < low <= 1.0 <= high:
            raise LearnerError(
                f"need period >= 1, step > 1, 0 < low <= 1 <= high; got "
                f"{period}, {step}, {low}, {high}"
            )
        self.n_experts = n_experts
        self.period = period
        self.step = step
        self.tolerance = tolerance
        self.low = low
        self.high = high
        self.freeze_after = freeze_after
        self.thaw_after = thaw_after
        self.fast = np.zeros(n_experts)
        self.slow = np.zeros(n_experts)
        self.multiplier = np.ones(n_experts)
        self.settled = np.zeros(n_experts, dtype=np.int64)
        self.frozen = np.zeros(n_experts, dtype=np.int64)  # periods left frozen
        self.batches = 0
        self.freezes = 0

    def effective(self) -> np.ndarray:
        """Multiplier in force per expert (0 while frozen)."""
        return np.where(self.frozen > 0, 0.0, self.multiplier)

    def update(self, losses: np.ndarray) -> bool:
        """Add one batch's per-expert mean losses; return whether rates changed."""
        losses = np.asarray(losses, dtype=np.float64)
        if not np.isfinite(losses).all():
            return False
        first = self.batches == 0
        self.fast = losses.copy() if first else 0.8 * self.fast + 0.2 * losses
        self.slow = losses.copy() if first else 0.98 * self.slow + 0.02 * losses
        self.batches += 1
        if self.batches % self.period:
            return False
        ratio = self.fast / np.maximum(self.slow, 1e-9)
        worse = ratio > 1 + self.tolerance
        better = ratio < 1 - self.tolerance
        settled = ~worse & ~better
        self.multiplier = np.where(worse, self.multiplier * self.step, self.multiplier)
        self.multiplier = np.where(
            settled, self.multiplier / self.step, self.multiplier
        )
        self.multiplier = np.clip(self.multiplier, self.low, self.high)
        self.settled = np.where(settled, self.settled + 1, 0)
        self.frozen = np.maximum(self.frozen - 1, 0)
        if self.freeze_after:
            newly = (self.settled >= self.freeze_after) & (self.frozen == 0)
            self.frozen[newly] = self.thaw_after
            self.settled[newly] = 0
            self.freezes += int(newly.sum())
        return True

    def thaw(self) -> None:
        """Unfreeze every expert and reset multipliers to 1 (after a drift)."""
        self.frozen[:] = 0
        self.settled[:] = 0
        self.multiplier[:] = np.maximum(self.multiplier, 1.0)

    def state_dict(self) -> dict[str, Any]:
        """Averages, multipliers and counters."""
        arrays = np.stack([self.fast, self.slow, self.multiplier])
        counts = np.stack([self.settled, self.frozen])
        return {
            "arrays": torch.from_numpy(arrays),
            "counts": torch.from_numpy(counts),
            "batches": self.batches,
            "freezes": self.freezes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        arrays = np.asarray(state["arrays"], dtype=np.float64)
        counts = np.asarray(state["counts"], dtype=np.int64)
        if arrays.shape != (3, self.n_experts) or counts.shape != (2, self.n_experts):
            raise LearnerError("saved schedule does not match the number of experts")
        self.fast, self.slow, self.multiplier = (a.copy() for a in arrays)
        self.settled, self.frozen = (c.copy() for c in counts)
        self.batches = int(state["batches"])
        self.freezes = int(state["freezes"])
