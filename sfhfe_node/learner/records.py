"""The records a learner returns: its prediction and its step report."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Prediction", "StepReport"]


@dataclass
class Prediction:
    """The learner's prediction for every row of a batch.

    ``labels`` (int64 [n]) and ``proba`` (float32 [n, max_classes]) are set
    for classification, ``values`` (float64 [n]) for regression and, for the
    task ``"none"``, the anomaly score the experts expected from the record's
    context. ``experts`` (int64 [n, top_k]) holds the indices of the experts
    the router activated, best first, and ``anomaly`` (float64 [n], >= 0) the
    autoencoder's reconstruction error of the record, in squared standard
    deviations per feature.
    """

    labels: np.ndarray | None
    values: np.ndarray | None
    proba: np.ndarray | None
    experts: np.ndarray
    anomaly: np.ndarray


@dataclass
class StepReport:
    """What one learning step did.

    ``loss`` is the mixture's mean prequential loss over the labelled rows
    (log-loss, or squared error in standardised target units; 0.0 without
    labelled rows), ``correct`` the rows classified right, ``learned`` the
    labelled rows learned from, ``records`` all rows, ``imputed`` the cells
    imputed, ``expert_losses`` each expert's mean prequential loss,
    ``excluded`` the rows governance rules kept out of learning,
    ``quarantined`` the outliers kept out of structure learning, and
    ``replayed`` the memory rows trained on.
    """

    records: int
    learned: int
    loss: float
    correct: int
    imputed: int
    expert_losses: dict[str, float]
    excluded: int = 0
    quarantined: int = 0
    replayed: int = 0
