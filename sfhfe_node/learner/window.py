"""Aggregates of the learner's progress between two insights."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sfhfe_node.errors import LearnerError

__all__ = ["WindowStats"]


class WindowStats:
    """Sums over the batches since the last :meth:`take`, in bounded memory.

    Per-expert losses are kept per batch so that the window can be cut into a
    first and a second half when it is taken; past ``max_batches`` entries,
    neighbouring entries are merged in pairs, which halves the resolution of
    the split but keeps memory flat however long the window runs.

    Parameters:
        n_experts: number of experts.
        max_batches: entries kept before merging (default 512).
    """

    def __init__(self, n_experts: int, *, max_batches: int = 512) -> None:
        self.n_experts = n_experts
        self.max_batches = max_batches
        self.reset()

    def reset(self) -> None:
        """Forget everything added so far."""
        self.records = 0
        self.labelled = 0
        self.loss_sum = 0.0
        self.correct = 0
        self.routed = np.zeros(self.n_experts)
        self.samples = np.zeros(self.n_experts)
        self._rows: list[int] = []
        self._expert_sums: list[np.ndarray] = []

    def add(
        self,
        records: int,
        labelled: int,
        loss_sum: float,
        correct: int,
        expert_loss_sums: np.ndarray,
        routed: np.ndarray,
        samples: np.ndarray,
    ) -> None:
        """Count one batch: rows, labelled rows, losses, routings, samples."""
        self.records += records
        self.samples += samples
        self.labelled += labelled
        self.loss_sum += loss_sum
        self.correct += correct
        self.routed += routed
        if labelled:
            self._rows.append(labelled)
            self._expert_sums.append(np.asarray(expert_loss_sums, dtype=np.float64))
        if len(self._rows) > self.max_batches:
            self._merge()

    def _merge(self) -> None:
        rows, sums = self._rows, self._expert_sums
        self._rows = [sum(rows[i : i + 2]) for i in range(0, len(rows), 2)]
        self._expert_sums = [
            sum(sums[i : i + 2], np.zeros(self.n_experts))
            for i in range(0, len(sums), 2)
        ]

    def nbytes(self) -> int:
        """Bytes held by the per-batch entries."""
        return 8 * (self.n_experts + 1) * len(self._rows)

    def halves(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean loss of every expert over the first and second half of the rows."""
        if not self._rows:
            zeros = np.zeros(self.n_experts)
            return zeros, zeros
        rows = np.array(self._rows, dtype=np.float64)
        sums = np.stack(self._expert_sums)
        cut = int(np.searchsorted(np.cumsum(rows), rows.sum() / 2.0))
        cut = min(max(cut, 1), len(rows))
        first = sums[:cut].sum(axis=0) / rows[:cut].sum()
        if cut == len(rows):
            return first, first
        second = sums[cut:].sum(axis=0) / rows[cut:].sum()
        return first, second

    def state_dict(self) -> dict[str, Any]:
        """Everything added since the last reset."""
        return {
            "records": self.records,
            "labelled": self.labelled,
            "loss_sum": self.loss_sum,
            "correct": self.correct,
            "routed": torch.from_numpy(self.routed.copy()),
            "samples": torch.from_numpy(self.samples.copy()),
            "rows": list(self._rows),
            "expert_sums": torch.from_numpy(
                np.stack(self._expert_sums)
                if self._expert_sums
                else np.zeros((0, self.n_experts))
            ),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        sums = np.asarray(state["expert_sums"], dtype=np.float64)
        rows = [int(r) for r in state["rows"]]
        if sums.shape != (len(rows), self.n_experts):
            raise LearnerError("saved window does not match the number of experts")
        self.records = int(state["records"])
        self.labelled = int(state["labelled"])
        self.loss_sum = float(state["loss_sum"])
        self.correct = int(state["correct"])
        self.routed = np.asarray(state["routed"], dtype=np.float64).copy()
        self.samples = np.asarray(state["samples"], dtype=np.float64).copy()
        self._rows = rows
        self._expert_sums = [row.copy() for row in sums]
