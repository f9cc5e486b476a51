"""What the learner thread owns: the learner, its labels, scores and outputs.

A :class:`LearningSession` turns one mini-batch of raw records into
predictions (written before the batch is learned), prequential scores and an
updated model. It does no networking and is used from a single thread; the
daemon hands it batches and meta-parameters and reads its figures.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sfhfe_node.client.predictions import PredictionWriter
from sfhfe_node.client.progress import Scoreboard
from sfhfe_node.learner import LabelEncoder, Learner
from sfhfe_node.stream import Batch

__all__ = ["LearningSession"]


class LearningSession:
    """Test-then-train over batches for one task.

    Parameters
    ----------
    learner
        The model; the session calls it and nothing else does meanwhile.
    labels
        Maps raw target cells to class indices (classification only).
    task
        ``"classification"``, ``"regression"`` or ``"none"``.
    predictions
        Where prediction lines go, or None to keep none.
    """

    def __init__(
        self,
        learner: Learner,
        labels: LabelEncoder,
        task: str,
        predictions: PredictionWriter | None = None,
    ) -> None:
        self.learner = learner
        self.labels = labels
        self.task = task
        self.predictions = predictions
        self.scores = Scoreboard()
        self.last_loss: float | None = None
        self.pending_meta: dict[str, Any] | None = None
        self.drift_count = 0
        self.new_drift: list[dict[str, Any]] = []

    def learn(self, batch: Batch) -> None:
        """Apply waiting meta-parameters, predict the batch, write, then learn."""
        if self.pending_meta is not None:
            meta, self.pending_meta = self.pending_meta, None
            self.learner.apply_meta(meta["learning_rates"], meta["router_priors"])
        y = self.targets(batch)
        prediction, report = self.learner.step(batch.features, y)
        self.last_loss = float(report.loss)
        if self.task == "classification":
            self.scores.update(np.asarray(prediction.labels), y.astype(np.int64))
        if self.predictions is not None:
            self.predictions.write(self.prediction_lines(batch, prediction))
        events = self.learner.drift_events()
        self.drift_count += len(events)
        self.new_drift.extend(events)

    def take_drift(self) -> list[dict[str, Any]]:
        """Drift events found since the previous call (for the daemon to log)."""
        events, self.new_drift = self.new_drift, []
        return events

    def targets(self, batch: Batch) -> np.ndarray:
        """The batch's targets as the learner takes them (-1 / NaN: unknown)."""
        if self.task == "classification":
            return self.labels.encode_many(batch.targets).astype(np.float64)
        if self.task == "regression":
            return np.array([_to_float(value) for value in batch.targets])
        return np.full(len(batch), -1.0)

    def prediction_lines(self, batch: Batch, prediction: Any) -> list[dict[str, Any]]:
        """One JSON-ready line per record of ``batch``."""
        names = self.learner.expert_names
        anomaly = np.asarray(prediction.anomaly, dtype=np.float64).tolist()
        experts = np.asarray(prediction.experts).tolist()
        drift = bool(self.learner.drift_active)
        if self.task == "classification":
            shown = [self.labels.decode(int(label)) for label in prediction.labels]
        elif self.task == "regression":
            shown = [float(value) for value in prediction.values]
        else:
            shown = [None] * len(batch)
        return [
            {
                "index": index,
                "prediction": shown[row],
                "anomaly": round(anomaly[row], 6),
                "drift": drift,
                "experts": [names[e] for e in experts[row]],
            }
            for row, index in enumerate(batch.index.tolist())
        ]

    def state_dict(self) -> dict[str, Any]:
        return {
            "learner": self.learner.state_dict(),
            "labels": self.labels.state_dict(),
            "scores": self.scores.state_dict(),
            "drift_count": self.drift_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state["learner"])
        self.labels.load_state_dict(state["labels"])
        self.scores.load_state_dict(state["scores"])
        self.drift_count = int(state.get("drift_count", 0))


def _to_float(value: str | None) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan
