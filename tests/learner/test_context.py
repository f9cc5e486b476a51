"""Tests of the stream context: windows, label lags and moving-average trends."""

from __future__ import annotations

import numpy as np

from sfhfe_node.learner.context import StreamContext
from sfhfe_node.learner.normalizer import OnlineStandardizer


def _context() -> StreamContext:
    return StreamContext(
        2, window=3, task="classification", max_classes=2, use_labels=True,
        half_lives=(2.0, 8.0),
    )


def _record_by_record(X: np.ndarray, scaler: OnlineStandardizer) -> np.ndarray:
    """Trend features from the plain recurrence, one record at a time."""
    decays = 2.0 ** (-1.0 / np.array([2.0, 8.0]))
    sums, weights = np.zeros((2, X.shape[1])), np.zeros(2)
    rows = []
    for x in X:
        sums = decays[:, None] * sums + (1 - decays[:, None]) * x
        weights = decays * weights + (1 - decays)
        deviation = (x - sums / weights[:, None]) / scaler.std
        rows.append(np.clip(deviation, -scaler.clip, scaler.clip).ravel())
    return np.array(rows)


def test_batched_trends_match_the_record_by_record_recurrence() -> None:
    """Trends of batches of 5 and 7 equal the one-record-at-a-time averages."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(12, 2)).cumsum(axis=0)
    scaler = OnlineStandardizer(2)
    scaler.learn_many(X)
    context = _context()
    parts = []
    for batch in (X[:5], X[5:]):
        trends, ema = context.trends(batch, scaler)
        context.advance(batch, np.zeros(len(batch)), ema)
        parts.append(trends)
    expected = _record_by_record(X, scaler)
    np.testing.assert_allclose(np.concatenate(parts), expected, atol=1e-5)


def test_trends_put_missing_cells_at_the_mean() -> None:
    """A missing cell counts at the scaler's mean and its trend stays finite."""
    scaler = OnlineStandardizer(2)
    scaler.learn_many(np.array([[0.0, 1.0], [2.0, 3.0]]))
    trends, ema = _context().trends(np.array([[np.nan, np.inf]]), scaler)
    assert trends.shape == (1, 4) and np.isfinite(trends).all()
    assert np.allclose(trends, 0.0) and np.isfinite(ema).all()
