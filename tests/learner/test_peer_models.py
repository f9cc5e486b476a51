"""Peers' models: kept beside the own experts and mixed in by learned weights."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from sfhfe_node.errors import LearnerError
from sfhfe_node.learner import Learner
from sfhfe_node.learner.peer_models import PeerModels

BATCH = 32


def _stream(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Records whose class is a fixed linear rule of the first two features."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.float64)
    return X, y


def _trained(batches: int, seed: int = 0, *, inverted: bool = False) -> Learner:
    learner = Learner(3, seed=1)
    X, y = _stream(batches * BATCH, seed)
    if inverted:
        y = 1.0 - y
    for start in range(0, len(X), BATCH):
        learner.step(X[start : start + BATCH], y[start : start + BATCH])
    return learner


def _experts(learner: Learner) -> dict[str, dict[str, np.ndarray]]:
    return {name: learner.export_expert(name) for name in learner.weight_spec()}


def _give(node: Learner, peer: str, experts: dict[str, dict[str, np.ndarray]]) -> None:
    for name, params in experts.items():
        node.store_peer_expert(peer, name, params)


def _run(node: Learner, batches: int, seed: int) -> int:
    """Step ``node`` over a fresh stretch of the stream; return rows right."""
    X, y = _stream(batches * BATCH, seed)
    right = 0
    for start in range(0, len(X), BATCH):
        prediction, _ = node.step(X[start : start + BATCH], y[start : start + BATCH])
        right += int((prediction.labels == y[start : start + BATCH]).sum())
    return right


def test_a_node_without_peers_predicts_as_before() -> None:
    """Without peers' models the prediction is the own mixture's, bit for bit."""
    X, y = _stream(4 * BATCH, 3)
    plain, other = Learner(3, seed=1), Learner(3, seed=1)
    for start in range(0, len(X), BATCH):
        a, _ = plain.step(X[start : start + BATCH], y[start : start + BATCH])
        b, _ = other.step(X[start : start + BATCH], y[start : start + BATCH])
        np.testing.assert_array_equal(a.proba, b.proba)
    assert len(plain.peer_models) == 0 and plain.peer_models.total_weight == 0.0


def test_a_better_peer_earns_weight_and_helps() -> None:
    """A peer that learned more of the same stream gains weight and rows."""
    node, peer = _trained(2), _trained(60, seed=5)
    _give(node, "peer-1", _experts(peer))
    _run(node, 20, seed=9)
    status = node.peer_models.status()
    assert status["peers"]["peer-1"]["weight"] > 0.1
    assert status["helped"] > status["hurt"]


def test_a_sign_flipped_peer_earns_nothing() -> None:
    """A peer sending negated weights keeps a weight near 0 and turns no row."""
    node, peer = _trained(30), _trained(30, seed=5)
    flipped = {
        name: {key: -value for key, value in params.items()}
        for name, params in _experts(peer).items()
    }
    _give(node, "attacker", flipped)
    _run(node, 20, seed=9)
    assert node.peer_models.weights()["attacker"] < 0.02


def test_a_peer_trained_to_be_wrong_earns_nothing() -> None:
    """A confident model of the inverted labels keeps a weight near 0."""
    node, liar = _trained(30), _trained(60, seed=5, inverted=True)
    _give(node, "liar", _experts(liar))
    _run(node, 20, seed=9)
    assert node.peer_models.weights()["liar"] < 0.02
    assert node.peer_models.status()["hurt"] == 0


def test_a_garbage_peer_earns_nothing() -> None:
    """Random weights of the right shapes earn (almost) no weight."""
    node = _trained(30)
    rng = np.random.default_rng(4)
    garbage = {
        name: {
            key: rng.normal(0.0, 3.0, shape).astype(np.float32)
            for key, shape in shapes.items()
        }
        for name, shapes in node.weight_spec().items()
    }
    _give(node, "noise", garbage)
    _run(node, 20, seed=9)
    assert node.peer_models.weights()["noise"] < 0.02


def test_the_peers_never_outvote_the_own_model() -> None:
    """However good the peers, their total weight stays within the cap."""
    node = _trained(1)
    for i in range(3):
        _give(node, f"peer-{i}", _experts(_trained(40, seed=10 + i)))
    _run(node, 30, seed=9)
    weights = node.peer_models.weights()
    assert all(value >= 0.0 for value in weights.values())
    assert sum(weights.values()) <= node.peer_models.cap + 1e-9


@pytest.mark.parametrize("row", [0, BATCH // 2, BATCH - 1])
def test_predictions_never_depend_on_their_own_labels(row: int) -> None:
    """With a weighted peer, changing row ``row``'s label changes neither its
    prediction nor an earlier row's, yet it moves the peer's weight."""
    node, peer = _trained(2), _trained(60, seed=5)
    _give(node, "peer-1", _experts(peer))
    _run(node, 5, seed=9)
    assert node.peer_models.total_weight > 0.0
    X, y = _stream(BATCH, 11)
    flipped = y.copy()
    flipped[row] = 1.0 - flipped[row]
    twin = copy.deepcopy(node)
    a, _ = node.step(X, y)
    b, _ = twin.step(X, flipped)
    np.testing.assert_array_equal(a.proba[: row + 1], b.proba[: row + 1])
    assert node.peer_models.weights() != twin.peer_models.weights()


def test_an_incomplete_peer_model_does_not_predict() -> None:
    """A slot predicts only once every expert of its peer has arrived."""
    node, peer = _trained(2), _trained(30, seed=5)
    experts = _experts(peer)
    first = next(iter(experts))
    node.store_peer_expert("peer-1", first, experts[first])
    _run(node, 5, seed=9)
    status = node.peer_models.status()["peers"]["peer-1"]
    assert status == {"weight": 0.0, "updates": 1, "batches": 0, "complete": False}


def test_state_round_trips_exactly() -> None:
    """Saved and restored, a learner with peers' models goes on identically."""
    node, peer = _trained(2), _trained(40, seed=5)
    _give(node, "peer-1", _experts(peer))
    _run(node, 5, seed=9)
    state = node.state_dict()
    restored = Learner(3, seed=1)
    restored.load_state_dict(state)
    assert restored.peer_models.status() == node.peer_models.status()
    X, y = _stream(3 * BATCH, 12)
    for start in range(0, len(X), BATCH):
        a, _ = node.step(X[start : start + BATCH], y[start : start + BATCH])
        b, _ = restored.step(X[start : start + BATCH], y[start : start + BATCH])
        np.testing.assert_array_equal(a.proba, b.proba)
    assert restored.peer_models.weights() == node.peer_models.weights()


def test_a_state_without_peer_models_restores_none() -> None:
    """A state saved before peers' models existed restores an empty set."""
    node = _trained(2)
    _give(node, "peer-1", _experts(_trained(2, seed=5)))
    state = node.state_dict()
    del state["peer_models"]
    node.load_state_dict(state)
    assert len(node.peer_models) == 0


@pytest.mark.parametrize(
    "change",
    ["nan", "shape", "dtype", "missing", "unknown_expert"],
)
def test_bad_peer_weights_are_refused_and_store_nothing(change: str) -> None:
    """Weights that do not fit the node's experts raise and leave no slot."""
    node = _trained(1)
    name = next(iter(node.weight_spec()))
    params = node.export_expert(name)
    key = next(iter(params))
    if change == "nan":
        params[key] = params[key].copy()
        params[key].reshape(-1)[0] = np.nan
    elif change == "shape":
        params[key] = np.zeros((1, 2), np.float32)
    elif change == "dtype":
        params[key] = params[key].astype(np.float64)
    elif change == "missing":
        del params[key]
    else:
        name = "no_such_expert"
    with pytest.raises(LearnerError):
        node.store_peer_expert("peer-1", name, params)
    assert len(node.peer_models) == 0


def test_a_new_peer_replaces_the_least_weighted_slot() -> None:
    """Beyond the slot limit a new peer takes the place of the weakest one."""
    node = _trained(2)
    models = node.peer_models
    good = _experts(_trained(40, seed=5))
    for i in range(models.slots):
        _give(node, f"peer-{i}", good if i == 0 else _experts(_trained(1, seed=i)))
    _run(node, 10, seed=9)
    weakest = min(models.weights(), key=lambda p: models.weights()[p])
    _give(node, "newcomer", good)
    assert len(models) == models.slots
    assert "newcomer" in models.weights() and weakest not in models.weights()
    assert "peer-0" in models.weights()


def test_predict_many_changes_no_state_with_peers() -> None:
    """Predicting without labels mixes the peers in and leaves every weight."""
    node, peer = _trained(2), _trained(40, seed=5)
    _give(node, "peer-1", _experts(peer))
    _run(node, 5, seed=9)
    before = node.state_dict()
    X, _ = _stream(BATCH, 13)
    node.predict_many(X)
    after = node.state_dict()
    assert after["peer_models"]["helped"] == before["peer_models"]["helped"]
    for peer_id, slot in before["peer_models"]["slots"].items():
        saved = after["peer_models"]["slots"][peer_id]
        assert torch.equal(slot["flat"], saved["flat"])
        assert slot["numbers"] == saved["numbers"]


def test_settings_out_of_range_are_refused() -> None:
    """A cap of 1 or more, a step size of 0 or no slot at all is refused."""
    learner = Learner(3)
    for options in ({"cap": 1.0}, {"lr": 0.0}, {"slots": 0}):
        with pytest.raises(LearnerError):
            PeerModels(
                lambda: learner._bank, learner.weight_spec(), (), **options
            )
