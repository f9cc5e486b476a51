"""Online standardisation of numeric features, with imputation of bad cells."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sfhfe_node.errors import LearnerError

__all__ = ["OnlineStandardizer"]


class OnlineStandardizer:
    """Running mean and variance per feature; maps records to z-scores.

    Statistics are merged one mini-batch at a time with Chan et al.'s parallel
    update (float64), per feature, so a cell that is NaN, infinite or larger in
    magnitude than ``max_abs`` is left out of that feature's statistics
    without discarding the rest of its row. :meth:`transform_many` puts such a
    cell at the running mean (0 after scaling).

    Parameters:
        n_features: number of columns of every batch.
        clip: z-scores are clipped to ``[-clip, clip]`` (default 8.0). Lower
            values tame outliers more but flatten genuine extremes.
        max_abs: finite cells with a larger magnitude are treated as missing
            (default 1e15), which keeps the squared sums finite.

    Attributes:
        imputed: cells left out by :meth:`learn_many` so far, which are the
            cells the learner had to impute.

    Reference: Chan, Golub and LeVeque (1979), "Updating formulae and a
    pairwise algorithm for computing sample variances".

    Example::

        >>> scaler = OnlineStandardizer(2)
        >>> scaler.learn_many(np.array([[1.0, np.nan], [3.0, 4.0]]))
        >>> scaler.transform_many(np.array([[2.0, np.inf]])).tolist()
        [[0.0, 0.0]]
        >>> scaler.imputed
        1
    """

    def __init__(
        self, n_features: int, *, clip: float = 8.0, max_abs: float = 1e15
    ) -> None:
        if n_features < 1:
            raise LearnerError(f"n_features={n_features} must be at least 1")
        self.n_features = n_features
        self.clip = clip
        self.max_abs = max_abs
        self.count = np.zeros(n_features)
        self.mean = np.zeros(n_features)
        self.m2 = np.zeros(n_features)
        self.imputed = 0

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation per feature; 1 where it is unknown or 0."""
        var = np.divide(
            self.m2, self.count, out=np.ones(self.n_features), where=self.count > 1
        )
        std = np.sqrt(var)
        return np.where(std > 1e-12, std, 1.0)

    def learn_many(self, X: np.ndarray) -> None:
        """Merge the finite cells of ``X`` [n, n_features] into the statistics."""
        X = self._check(X)
        valid = np.isfinite(X) & (np.abs(X) <= self.max_abs)
        self.imputed += int(valid.size - np.count_nonzero(valid))
        n_b = valid.sum(axis=0).astype(np.float64)
        if not n_b.any():
            return
        cells = np.where(valid, X, 0.0)
        safe_n = np.maximum(n_b, 1.0)
        mean_b = cells.sum(axis=0) / safe_n
        m2_b = (np.where(valid, X - mean_b, 0.0) ** 2).sum(axis=0)
        total = self.count + n_b
        safe_total = np.maximum(total, 1.0)
        delta = mean_b - self.mean
        self.mean = self.mean + delta * n_b / safe_total
        self.m2 = self.m2 + m2_b + delta**2 * self.count * n_b / safe_total
        self.count = total

    def transform_many(self, X: np.ndarray) -> np.ndarray:
        """Return the clipped z-scores of ``X`` as float32, bad cells at 0."""
        X = self._check(X)
        valid = np.isfinite(X) & (np.abs(X) <= self.max_abs)
        z = (np.where(valid, X, self.mean) - self.mean) / self.std
        return np.clip(z, -self.clip, self.clip).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        """The statistics as tensors, for :meth:`load_state_dict`."""
        return {
            "count": torch.from_numpy(self.count.copy()),
            "mean": torch.from_numpy(self.mean.copy()),
            "m2": torch.from_numpy(self.m2.copy()),
            "imputed": self.imputed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore statistics saved by :meth:`state_dict`."""
        arrays = {}
        for key in ("count", "mean", "m2"):
            value = np.asarray(state[key], dtype=np.float64).copy()
            if value.shape != (self.n_features,):
                raise LearnerError(
                    f"normalizer {key} has shape {value.shape}; "
                    f"expected ({self.n_features},)"
                )
            arrays[key] = value
        self.count, self.mean, self.m2 = arrays["count"], arrays["mean"], arrays["m2"]
        self.imputed = int(state["imputed"])

    def _check(self, X: np.ndarray) -> np.ndarray:
        try:
            X = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise LearnerError(f"batch is not numeric: {exc}") from None
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise LearnerError(
                f"expected a batch of shape [n, {self.n_features}], got {X.shape}"
            )
        return X
