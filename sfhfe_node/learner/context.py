"""The stream context of each record: its recent window, previous labels and
its deviation from the stream's moving averages."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

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

    Beyond the window, every record gets its *trend* features: its deviation
    from exponential moving averages of the stream over several horizons, in
    standard deviations, ``(x_i - m_h,i) / std`` clipped like a z-score, where
    ``m_h,i`` is the bias-corrected average of the records up to and
    including ``i`` with half-life ``h`` records (cells that are missing count
    at the scaler's mean). Within a batch the recurrence
    ``m_i = a m_(i-1) + (1 - a) x_i`` is one product with a lower-triangular
    matrix of powers of ``a = 2^(-1/h)`` plus the carried state, so it costs
    the same as a dense layer. Knowing whether a record sits above or below
    its recent level is what many streams' labels hinge on.

    Parameters:
        n_features: features per record.
        window: records (and labels) in each context.
        task: ``"classification"``, ``"regression"`` or ``"none"``.
        max_classes: one-hot width of a class label.
        use_labels: whether labels are part of the context at all.
        half_lives: horizons of the moving averages in records (default 4,
            16 and 64). More horizons widen every view by ``n_features``
            each; longer ones follow slow drifts, shorter ones local bursts.
    """

    def __init__(
        self,
        n_features: int,
        *,
        window: int,
        task: str,
        max_classes: int,
        use_labels: bool,
        half_lives: tuple[float, ...] = (4.0, 16.0, 64.0),
    ) -> None:
        self.n_features = n_features
        self.half_lives = tuple(float(h) for h in half_lives)
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
        self.decays = np.array([2.0 ** (-1.0 / h) for h in self.half_lives])
        # per horizon: decayed sum of the records and decayed count of them
        self.ema = np.zeros((len(self.half_lives), n_features + 1))
        self._kernels: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._indices: dict[int, np.ndarray] = {}

    @property
    def trend_width(self) -> int:
        """Trend features per record: ``n_features`` per horizon."""
        return len(self.half_lives) * self.n_features

    def trends(
        self, X: np.ndarray, scaler: OnlineStandardizer
    ) -> tuple[np.ndarray, np.ndarray]:
        """Trend features float32 [n, trend_width] and the averages after ``X``.

        Pass the second value to :meth:`advance` to carry the averages on.
        """
        n, d = X.shape
        if not self.half_lives:
            return np.zeros((n, 0), dtype=np.float32), self.ema
        valid = np.isfinite(X) & (np.abs(X) <= scaler.max_abs)
        filled = np.where(valid, X, scaler.mean)
        kernel, carry = self._kernel(n)
        augmented = np.concatenate([filled, np.ones((n, 1))], axis=1)
        sums = kernel @ augmented + carry[:, :, None] * self.ema[:, None, :]
        means = sums[:, :, :d] / np.maximum(sums[:, :, d:], 1e-12)
        clip = scaler.clip
        deviation = np.clip((filled - means) / scaler.std, -clip, clip)
        joined = deviation.transpose(1, 0, 2).reshape(n, -1).astype(np.float32)
        return joined, sums[:, -1].copy()

    def _kernel(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Decay matrices [H, n, n] and carry factors [H, n] of a batch of n."""
        if n not in self._kernels:
            if len(self._kernels) > 8:
                self._kernels.clear()
            lag = np.arange(n)[:, None] - np.arange(n)[None, :]
            a = self.decays[:, None, None]
            powers = np.where(lag >= 0, a ** np.maximum(lag, 0), 0.0)
            kernel = powers * (1.0 - a)
            carry = self.decays[:, None] ** (np.arange(n)[None, :] + 1)
            self._kernels[n] = (kernel, carry)
        return self._kernels[n]

    def windows(
        self, X: np.ndarray, y: np.ndarray | None, scaler: OnlineStandardizer
    ) -> tuple[np.ndarray, np.ndarray]:
        """Standardised windows [n, window, d] (float32) and label lags [n, window].

        Without ``y`` (prediction only), every row gets the last labels seen.
        """
        n = len(X)
        z_all = scaler.transform_many(np.concatenate([self.history_x, X]))
        index = self._window_index(n)
        if y is None:
            lags = np.broadcast_to(self.history_y, (n, self.window)).copy()
        else:
            lags = np.concatenate([self.history_y, y[:-1]])[index]
        return z_all[index], lags

    def _window_index(self, n: int) -> np.ndarray:
        """Row ``i``: positions ``i .. i + window - 1`` of history plus batch."""
        if n not in self._indices:
            if len(self._indices) > 8:
                self._indices.clear()
            self._indices[n] = np.arange(n)[:, None] + np.arange(self.window)
        return self._indices[n]

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

    def advance(self, X: np.ndarray, y: np.ndarray, ema: np.ndarray) -> None:
        """Move the context past a learned batch (``ema`` from :meth:`trends`)."""
        self.ema = np.array(ema, dtype=np.float64)
        keep = self.window - 1
        if keep:
            self.history_x = np.concatenate([self.history_x, X])[-keep:].copy()
        self.history_y = np.concatenate([self.history_y, y])[-self.window :].copy()

    def state_dict(self) -> dict[str, Any]:
        """The last records and labels."""
        return {
            "history_x": torch.from_numpy(self.history_x.copy()),
            "history_y": torch.from_numpy(self.history_y.copy()),
            "ema": torch.from_numpy(self.ema.copy()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        history_x = np.asarray(state["history_x"], dtype=np.float64).copy()
        history_y = np.asarray(state["history_y"], dtype=np.float64).copy()
        ema = np.asarray(state["ema"], dtype=np.float64).copy()
        expected = (self.history_x.shape, self.history_y.shape, self.ema.shape)
        if (history_x.shape, history_y.shape, ema.shape) != expected:
            raise ValueError(
                f"stream context has shapes {history_x.shape}, {history_y.shape}, "
                f"{ema.shape}; expected {expected}"
            )
        self.history_x, self.history_y, self.ema = history_x, history_y, ema
