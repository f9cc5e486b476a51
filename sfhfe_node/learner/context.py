"""The stream context of each record: its recent window and previous labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from sfhfe_node.learner.normalizer import OnlineStandardizer

__all__ = ["StreamContext"]


class StreamContext:
    """Builds, for every record, the window of standardised records before it
    and the labels of the records before it.

    Row ``i`` of a batch gets the ``window`` records ending with itself
    (standardised with the scaler's statistics before the batch) and the
    ``window`` labels ending with row ``i - 1``'s: a record's own label is
    never part of its context. Records and labels before the first one are
    missing (NaN): standardised to 0 and encoded as no label.

    Parameters:
        n_features: features per record.
        window: records (and labels) in each context.
        task: ``"classification"``, ``"regression"`` or ``"none"``.
        max_classes: one-hot width of a class label.
        use_labels: whether labels are part of the context at all.
    """

    def __init__(
        self,
        n_features: int,
        *,
        window: int,
        task: str,
        max_classes: int,
        use_labels: bool,
    ) -> None:
        self.n_features = n_features
        self.window = window
        self.task = task
        self.max_classes = max_classes
        self.use_labels = use_labels and task != "none"
        if not self.use_labels:
            self.label_width = 0
        else:
            self.label_width = max_classes if task == "classification" else 1
        self.history_x = np.full((window - 1, n_features), np.nan)
        self.history_y = np.full(window, np.nan)

    def windows(
        self, X: np.ndarray, y: np.ndarray | None, scaler: OnlineStandardizer
    ) -> tuple[np.ndarray, np.ndarray]:
        """Standardised windows [n, window, d] (float32) and label lags [n, window].

        Without ``y`` (prediction only), every row gets the last labels seen.
        """
        n, d = X.shape
        z_all = scaler.transform_many(np.concatenate([self.history_x, X]))
        windows = sliding_window_view(z_all, (self.window, d))[:, 0]
        if y is None:
            lags = np.broadcast_to(self.history_y, (n, self.window)).copy()
        else:
            previous = np.concatenate([self.history_y, y[:-1]])
            lags = sliding_window_view(previous, self.window).copy()
        return windows.copy(), lags

    def encode(self, values: np.ndarray, target: OnlineStandardizer) -> np.ndarray:
        """Label context of ``values`` [n, m]: float32 [n, m, label_width]."""
        n, m = values.shape
        if self.label_width == 0:
            return np.zeros((n, m, 0), dtype=np.float32)
        if self.task == "regression":
            flat = target.transform_many(values.reshape(-1, 1))
            return flat.reshape(n, m, 1)
        flat = values.reshape(-1)
        known = np.isfinite(flat) & (flat >= 0) & (flat < self.max_classes)
        known &= flat == np.floor(np.where(known, flat, 0.0))
        onehot = np.zeros((n * m, self.max_classes), dtype=np.float32)
        onehot[np.flatnonzero(known), flat[known].astype(np.int64)] = 1.0
        return onehot.reshape(n, m, self.max_classes)

    def advance(self, X: np.ndarray, y: np.ndarray) -> None:
        """Move the context past a learned batch."""
        keep = self.window - 1
        if keep:
            self.history_x = np.concatenate([self.history_x, X])[-keep:].copy()
        self.history_y = np.concatenate([self.history_y, y])[-self.window :].copy()

    def state_dict(self) -> dict[str, Any]:
        """The last records and labels."""
        return {
            "history_x": torch.from_numpy(self.history_x.copy()),
            "history_y": torch.from_numpy(self.history_y.copy()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        history_x = np.asarray(state["history_x"], dtype=np.float64).copy()
        history_y = np.asarray(state["history_y"], dtype=np.float64).copy()
        expected = (self.history_x.shape, self.history_y.shape)
        if (history_x.shape, history_y.shape) != expected:
            raise ValueError(
                f"stream context has shapes {history_x.shape}, {history_y.shape}; "
                f"expected {expected}"
            )
        self.history_x, self.history_y = history_x, history_y
