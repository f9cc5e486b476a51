"""Prequential scores kept by the client, beside the learner.

The learner reports what it predicted; :class:`Scoreboard` compares each
prediction with the label that followed, and scores the no-change baseline
(repeat the previous record's label) on the same records, so the node can show
whether it learned more than the stream's autocorrelation gives for free.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Scoreboard"]


class Scoreboard:
    """Running prequential accuracy of the node and of the no-change baseline.

    Only records with a known label count. The baseline has no guess for the
    first labelled record and counts it as a miss.
    """

    def __init__(self) -> None:
        self.labelled = 0
        self.correct = 0
        self.no_change_correct = 0
        self.last_label = -1

    def update(self, predicted: np.ndarray, labels: np.ndarray) -> None:
        """Score one batch: predicted and true class indices (-1 = no label)."""
        known = labels >= 0
        if not known.any():
            return
        truth = labels[known]
        previous = np.concatenate(([self.last_label], truth[:-1]))
        self.labelled += int(known.sum())
        self.correct += int((predicted[known] == truth).sum())
        self.no_change_correct += int((previous == truth).sum())
        self.last_label = int(truth[-1])

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    @property
    def no_change_accuracy(self) -> float | None:
        return self.no_change_correct / self.labelled if self.labelled else None

    def state_dict(self) -> dict[str, int]:
        return {
            "labelled": self.labelled,
            "correct": self.correct,
            "no_change_correct": self.no_change_correct,
            "last_label": self.last_label,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        for name in ("labelled", "correct", "no_change_correct", "last_label"):
            setattr(self, name, int(state[name]))
