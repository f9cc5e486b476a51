"""Tests of the online standardiser."""

from __future__ import annotations

import numpy as np

from sfhfe_node.learner import OnlineStandardizer


def _stream(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(loc=[3.0, -2.0, 50.0], scale=[1.0, 0.1, 10.0], size=(500, 3))


def test_batched_statistics_match_closed_form() -> None:
    """Merging uneven batches gives numpy's mean and population variance."""
    X = _stream()
    scaler = OnlineStandardizer(3)
    for start, stop in ((0, 1), (1, 33), (33, 250), (250, 500)):
        scaler.learn_many(X[start:stop])
    np.testing.assert_allclose(scaler.mean, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(scaler.std, X.std(axis=0), rtol=1e-10)


def test_non_finite_cells_are_left_out_and_counted() -> None:
    """A NaN or inf cell leaves its feature's statistics alone and is counted."""
    X = _stream()
    dirty = X.copy()
    dirty[::7, 1] = np.nan
    dirty[3, 2] = np.inf
    scaler = OnlineStandardizer(3)
    scaler.learn_many(dirty)
    clean = X[np.arange(500) % 7 != 0, 1]
    np.testing.assert_allclose(scaler.mean[1], clean.mean(), rtol=1e-12)
    assert scaler.imputed == len(range(0, 500, 7)) + 1


def test_transform_imputes_and_clips() -> None:
    """Bad cells become 0 and extreme values are clipped, as float32."""
    scaler = OnlineStandardizer(3, clip=8.0)
    scaler.learn_many(_stream())
    z = scaler.transform_many(np.array([[np.nan, -np.inf, 1e300], [3.0, 1e9, 50.0]]))
    assert z.dtype == np.float32
    assert z[0].tolist() == [0.0, 0.0, 0.0]
    assert z[1, 1] == 8.0


def test_transform_before_learning_is_identity() -> None:
    """Without statistics the z-score of a value is the value itself."""
    z = OnlineStandardizer(2).transform_many(np.array([[0.5, -1.5]]))
    assert z.tolist() == [[0.5, -1.5]]


def test_state_round_trip_is_exact() -> None:
    """A restored standardiser transforms bit for bit like the original."""
    scaler = OnlineStandardizer(3)
    scaler.learn_many(_stream())
    twin = OnlineStandardizer(3)
    twin.load_state_dict(scaler.state_dict())
    probe = _stream(1)[:20]
    assert np.array_equal(twin.transform_many(probe), scaler.transform_many(probe))
