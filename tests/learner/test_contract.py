"""One contract suite over every expert alone, the ablations and the learner."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

from sfhfe_node.learner import DEFAULT_EXPERTS, Learner, Router

BATCH = 32
CONFIGS: dict[str, dict[str, Any]] = {
    **{
        f"expert:{spec.name}": {"experts": (spec,), "top_k": 1}
        for spec in DEFAULT_EXPERTS
    },
    "full": {},
    "uniform": {"routing": "uniform"},
    "no_replay_no_ewc": {"replay": False, "ewc": False},
    "regression": {"task": "regression"},
    "none": {"task": "none"},
}


def _stream(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)).cumsum(axis=0) * 0.1 + rng.normal(size=(n, 3))
    return X, (X[:, 0] - X[:, 2] > 0).astype(np.float64)


def _learner(name: str, batches: int = 12) -> tuple[Learner, np.ndarray, np.ndarray]:
    X, y = _stream((batches + 4) * BATCH)
    learner = Learner(3, seed=1, **CONFIGS[name])
    for start in range(0, batches * BATCH, BATCH):
        learner.step(X[start : start + BATCH], y[start : start + BATCH])
    return learner, X[batches * BATCH :], y[batches * BATCH :]


def _leaves(state: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(state, dict):
        out: dict[str, Any] = {}
        for key, value in state.items():
            out.update(_leaves(value, f"{prefix}.{key}"))
        return out
    return {prefix: state}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    left, right = _leaves(a), _leaves(b)
    if left.keys() != right.keys():
        return False
    for key, value in left.items():
        other = right[key]
        if isinstance(value, torch.Tensor):
            if not isinstance(other, torch.Tensor) or value.shape != other.shape:
                return False
            if value.is_floating_point():
                if not torch.equal(value.nan_to_num(7.0), other.nan_to_num(7.0)):
                    return False
            elif not torch.equal(value, other):
                return False
        elif value != other:
            return False
    return True


def _outputs(prediction: Any) -> list[np.ndarray]:
    fields = (prediction.labels, prediction.values, prediction.proba)
    present = [f for f in fields if f is not None]
    return present + [prediction.experts, prediction.anomaly]


@pytest.mark.parametrize("name", CONFIGS)
def test_predicting_before_learning_gives_finite_outputs(name: str) -> None:
    """A fresh learner predicts finite values of the right shapes."""
    learner = Learner(3, **CONFIGS[name])
    prediction = learner.predict_many(_stream(5)[0])
    assert prediction.experts.shape == (5, learner.top_k)
    assert all(np.isfinite(out).all() for out in _outputs(prediction))


@pytest.mark.parametrize("name", CONFIGS)
def test_predicting_changes_neither_input_nor_state(name: str) -> None:
    """predict_many and predict_experts leave the input and the state untouched."""
    learner, X, _ = _learner(name)
    kept = X.copy()
    before = learner.state_dict()
    learner.predict_many(X)
    learner.predict_experts(X)
    assert np.array_equal(X, kept) and _same(before, learner.state_dict())


@pytest.mark.parametrize("name", CONFIGS)
def test_scoring_recent_rows_changes_no_state(name: str) -> None:
    """score_recent is finite after a few batches and leaves the state untouched."""
    learner, _, _ = _learner(name, batches=4)
    before = learner.state_dict()
    score = learner.score_recent()
    assert np.isfinite(score) and score >= 0.0
    assert learner.score_recent() == score
    assert _same(before, learner.state_dict())


def test_scoring_recent_rows_is_nan_before_any_label() -> None:
    """score_recent is NaN while the recent memory tier is empty."""
    learner = Learner(3)
    learner.step(_stream(BATCH)[0], np.full(BATCH, np.nan))
    assert np.isnan(learner.score_recent())


@pytest.mark.parametrize("name", CONFIGS)
def test_restored_learner_is_bit_identical_on_the_next_batch(name: str) -> None:
    """A learner restored from a saved state predicts and learns exactly alike."""
    learner, X, y = _learner(name)
    twin = Learner(3, seed=42, **CONFIGS[name])
    twin.load_state_dict(learner.state_dict())
    for start in (0, BATCH):
        batch, labels = X[start : start + BATCH], y[start : start + BATCH]
        mine, _ = learner.step(batch, labels)
        theirs, _ = twin.step(batch, labels)
        for left, right in zip(_outputs(mine), _outputs(theirs), strict=True):
            assert np.array_equal(left, right)
    assert _same(learner.state_dict(), twin.state_dict())


@pytest.mark.parametrize("name", CONFIGS)
def test_copy_is_independent_of_its_original(name: str) -> None:
    """Training a deep copy leaves the original's state as it was."""
    learner, X, y = _learner(name)
    before = learner.state_dict()
    twin = copy.deepcopy(learner)
    twin.step(X[:BATCH], y[:BATCH])
    assert _same(before, learner.state_dict())


@pytest.mark.parametrize("name", ["full", "expert:temporal", "none"])
def test_memory_is_flat_after_warm_up(name: str) -> None:
    """memory_bytes stops growing once the tiers and windows are full."""
    learner, _, _ = _learner(name, batches=2)
    X, y = _stream(120 * BATCH, seed=3)
    sizes = []
    for start in range(0, len(X), BATCH):
        learner.step(X[start : start + BATCH], y[start : start + BATCH])
        learner.take_window()
        sizes.append(learner.memory_bytes())
    assert sizes[60] == sizes[-1]


def test_router_state_round_trips_exactly() -> None:
    """A router restored from its state routes the next contexts identically."""
    router = Router(4, 3, generator=torch.Generator().manual_seed(0))
    C = np.hstack([np.ones((32, 1)), np.random.default_rng(0).normal(size=(32, 2))])
    router.learn_many(C, router.route(C, explore=True), -np.ones((32, 3)))
    twin = Router(4, 3, generator=torch.Generator().manual_seed(9))
    twin.load_state_dict(router.state_dict())
    assert np.array_equal(router.route(C, explore=True), twin.route(C, explore=True))


def test_seeded_stream_pins_the_first_predictions() -> None:
    """The full learner's outputs on a seeded stream match recorded numbers."""
    learner, X, _ = _learner("full")
    prediction = learner.predict_many(X[:4])
    np.testing.assert_allclose(
        prediction.proba[:, 0], [0.997579, 0.989828, 0.993830, 0.996263], atol=2e-5
    )
    top = [4, 6, 8, 5]
    assert prediction.experts.tolist() == [top, [4, 5, 8, 6], top, top]
    np.testing.assert_allclose(
        prediction.anomaly, [3.71747, 1.94491, 1.76224, 2.20084], rtol=1e-4
    )
