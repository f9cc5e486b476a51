"""Contract and behaviour tests of the learner."""

from __future__ import annotations

import copy
import csv
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sfhfe_node.errors import LearnerError
from sfhfe_node.learner import EMBEDDING_SIZE, Learner
from sfhfe_node.wire.insight import validate_insight

ELEC2 = Path(__file__).resolve().parents[2].parent / "shared/data/elec2.csv"
FEATURES = 4
BATCH = 32


def _stream(n: int = 640, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded autocorrelated two-class stream with a learnable boundary."""
    rng = np.random.default_rng(seed)
    walk = rng.normal(size=(n, FEATURES)).cumsum(axis=0) * 0.1
    X = walk + rng.normal(size=(n, FEATURES))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.float64)
    return X, y


def _trained(
    batches: int = 10, **options: Any
) -> tuple[Learner, np.ndarray, np.ndarray]:
    X, y = _stream()
    learner = Learner(FEATURES, seed=1, **options)
    for start in range(0, batches * BATCH, BATCH):
        learner.step(X[start : start + BATCH], y[start : start + BATCH])
    return learner, X[batches * BATCH :], y[batches * BATCH :]


def _flatten(state: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(state, dict):
        items: dict[str, Any] = {}
        for key, value in state.items():
            items.update(_flatten(value, f"{prefix}.{key}"))
        return items
    return {prefix: state}


def _same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    left, right = _flatten(a), _flatten(b)
    if left.keys() != right.keys():
        return False
    for key, value in left.items():
        other = right[key]
        if isinstance(value, torch.Tensor):
            if not isinstance(other, torch.Tensor) or not _equal_tensors(value, other):
                return False
        elif value != other:
            return False
    return True


def _equal_tensors(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        return bool(torch.equal(a.isnan(), b.isnan())) and torch.equal(
            a.nan_to_num(0.0), b.nan_to_num(0.0)
        )
    return torch.equal(a, b)


def _same_prediction(a: Any, b: Any) -> bool:
    fields = ("labels", "values", "proba", "experts", "anomaly")
    for name in fields:
        left, right = getattr(a, name), getattr(b, name)
        if (left is None) != (right is None):
            return False
        if left is not None and not np.array_equal(left, right):
            return False
    return True


# Contract: every expert and the whole learner


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_predicting_before_learning_works(task: str) -> None:
    """A fresh learner and each of its experts give finite predictions."""
    learner = Learner(FEATURES, task=task)
    X, _ = _stream(10)
    prediction = learner.predict_many(X)
    assert prediction.experts.shape == (10, learner.top_k)
    assert np.isfinite(prediction.anomaly).all()
    outputs = learner.predict_experts(X)
    assert set(outputs) == set(learner.expert_names)
    assert all(np.isfinite(out).all() for out in outputs.values())


def test_predicting_changes_neither_input_nor_state() -> None:
    """predict_many and predict_experts leave X and every weight untouched."""
    learner, X, _ = _trained()
    X = X[:BATCH].copy()
    X[3, 1] = np.nan
    kept = X.copy()
    before = learner.state_dict()
    learner.predict_many(X)
    learner.predict_experts(X)
    assert np.array_equal(X, kept, equal_nan=True)
    assert _same_state(before, learner.state_dict())


def test_state_round_trip_gives_bit_identical_predictions() -> None:
    """A learner restored from another's state predicts and learns identically."""
    learner, X, y = _trained()
    twin = Learner(FEATURES, seed=99)
    twin.load_state_dict(learner.state_dict())
    batch, labels = X[:BATCH], y[:BATCH]
    assert _same_prediction(twin.predict_many(batch), learner.predict_many(batch))
    first, _ = learner.step(batch, labels)
    second, _ = twin.step(batch, labels)
    assert _same_prediction(first, second)
    mine, theirs = learner.predict_experts(X[BATCH:]), twin.predict_experts(X[BATCH:])
    for name in learner.expert_names:
        assert np.array_equal(mine[name], theirs[name]), name


def test_state_loads_with_weights_only(tmp_path: Path) -> None:
    """The state survives torch.save and torch.load(weights_only=True) exactly."""
    learner, X, _ = _trained()
    path = tmp_path / "learner.pt"
    torch.save(learner.state_dict(), path)
    restored = Learner(FEATURES)
    restored.load_state_dict(torch.load(path, weights_only=True))
    assert _same_prediction(restored.predict_many(X), learner.predict_many(X))


def test_deep_copy_is_independent() -> None:
    """Training a deep copy leaves the original's state as it was."""
    learner, X, y = _trained()
    before = learner.state_dict()
    twin = copy.deepcopy(learner)
    twin.step(X[:BATCH], y[:BATCH])
    twin.blend_expert("peer", Learner(FEATURES, seed=5).export_expert("peer"), 1.0)
    assert _same_state(before, learner.state_dict())
    assert not _same_state(before, twin.state_dict())


def test_same_seed_same_numbers() -> None:
    """Two learners with one seed and one stream compute identical predictions."""
    first, X, _ = _trained()
    second, _, _ = _trained()
    assert _same_prediction(first.predict_many(X), second.predict_many(X))


def test_memory_stays_flat_after_warm_up() -> None:
    """The state's size stops growing once the memory tiers are full."""
    X, y = _stream(4000)
    learner = Learner(FEATURES)
    sizes = []
    for start in range(0, len(X), BATCH):
        learner.step(X[start : start + BATCH], y[start : start + BATCH])
        learner.take_window()
        sizes.append(learner.memory_bytes())
    assert sizes[40] == sizes[-1]


# Prequential correctness


@pytest.mark.parametrize("row", [0, 5, BATCH - 1])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_own_label_never_influences_own_prediction(row: int, task: str) -> None:
    """Changing y[row] leaves the prediction of rows up to row unchanged."""
    learner, X, y = _trained(task=task)
    other = y[:BATCH].copy()
    other[row] = 1.0 - other[row] if task == "classification" else 100.0
    twin = copy.deepcopy(learner)
    first, _ = learner.step(X[:BATCH], y[:BATCH])
    second, _ = twin.step(X[:BATCH], other)
    for name in ("labels", "values", "proba", "experts", "anomaly"):
        left, right = getattr(first, name), getattr(second, name)
        if left is not None:
            assert np.array_equal(left[: row + 1], right[: row + 1]), name


def test_previous_label_is_the_context() -> None:
    """With label context, the previous row's label changes the next prediction."""
    learner, X, y = _trained(batches=15)
    other = y[:BATCH].copy()
    other[4] = 1.0 - other[4]
    first, _ = copy.deepcopy(learner).step(X[:BATCH], y[:BATCH])
    second, _ = copy.deepcopy(learner).step(X[:BATCH], other)
    assert not np.array_equal(first.proba[5], second.proba[5])


def test_unknown_labels_are_predicted_not_learned() -> None:
    """Rows with a negative or NaN label are predicted and left out of learning."""
    learner, X, y = _trained()
    labels = y[:BATCH].copy()
    labels[:10] = -1
    labels[10:12] = np.nan
    labels[12] = 99
    prediction, report = learner.step(X[:BATCH], labels)
    assert len(prediction.labels) == BATCH
    assert report.learned == BATCH - 13


# Untrusted input


def test_nan_and_inf_give_finite_outputs_and_are_counted() -> None:
    """Non-finite cells are imputed, counted, and every output stays finite."""
    learner, X, y = _trained()
    bad = X[:BATCH].copy()
    bad[::2, 0] = np.nan
    bad[1, 2] = np.inf
    bad[3, 3] = -1e308
    prediction, report = learner.step(bad, y[:BATCH])
    assert report.imputed == len(range(0, BATCH, 2)) + 2
    assert np.isfinite(prediction.proba).all() and np.isfinite(prediction.anomaly).all()
    assert np.isfinite(report.loss)
    assert all(np.isfinite(v) for v in report.expert_losses.values())
    assert np.isfinite(learner.predict_many(bad).proba).all()


def test_wrong_shapes_are_refused() -> None:
    """A batch with the wrong width or a label vector of the wrong length fails."""
    learner = Learner(FEATURES)
    with pytest.raises(LearnerError):
        learner.predict_many(np.zeros((3, FEATURES + 1)))
    with pytest.raises(LearnerError):
        learner.step(np.zeros((3, FEATURES)), np.zeros(2))
    with pytest.raises(LearnerError):
        learner.step(np.array([["a"] * FEATURES]), np.zeros(1))


def test_empty_batch_is_harmless() -> None:
    """A batch of zero rows predicts nothing and learns nothing."""
    learner = Learner(FEATURES)
    prediction, report = learner.step(np.zeros((0, FEATURES)), np.zeros(0))
    assert prediction.labels.shape == (0,) and report.learned == 0


# Meta-parameters and gossip


def test_apply_meta_moves_at_most_half_per_call() -> None:
    """Learning rates move toward the target by at most 50 % per call."""
    learner = Learner(FEATURES)
    start = learner.learning_rates()
    targets = {"causal": 100.0, "peer": 1e-9, "temporal": float("nan")}
    rates = learner.apply_meta(targets, {})
    assert rates["causal"] == pytest.approx(1.5 * start["causal"])
    assert rates["peer"] == pytest.approx(0.5 * start["peer"])
    assert rates["temporal"] == start["temporal"]


def test_apply_meta_respects_bounds_and_ignores_unknown_names() -> None:
    """Rates stay within [lr_floor, lr_ceiling]; unknown names change nothing."""
    learner = Learner(FEATURES, lr_floor=0.004, lr_ceiling=0.025)
    rates = learner.apply_meta({"causal": 1.0, "peer": 0.0001, "nobody": 1.0}, {"x": 1})
    assert rates["causal"] == 0.025 and rates["peer"] == 0.004
    assert set(rates) == set(learner.expert_names)


def test_router_priors_change_routing() -> None:
    """Router priors from the coordinator bias which experts are activated."""
    learner = Learner(FEATURES, top_k=3)
    priors = {name: 0.0 for name in learner.expert_names}
    priors.update(geometry=1.0, temporal=1.0, drift=1.0)
    learner.apply_meta({}, priors)
    chosen = learner.predict_many(_stream(8)[0]).experts
    names = {learner.expert_names[i] for i in chosen.ravel()}
    assert names == {"geometry", "temporal", "drift"}


def test_weight_spec_matches_exports() -> None:
    """Every exported tensor is float32 with the shape weight_spec announces."""
    learner = Learner(FEATURES)
    for name, spec in learner.weight_spec().items():
        params = learner.export_expert(name)
        assert {k: v.shape for k, v in params.items()} == spec
        assert all(v.dtype == np.float32 for v in params.values())


def test_blend_mixes_weights() -> None:
    """Blending with factor 0.5 lands halfway between own and peer weights."""
    learner, peer = Learner(FEATURES, seed=1), Learner(FEATURES, seed=2)
    own, theirs = learner.export_expert("peer"), peer.export_expert("peer")
    learner.blend_expert("peer", theirs, 0.5)
    for key, value in learner.export_expert("peer").items():
        np.testing.assert_allclose(value, 0.5 * own[key] + 0.5 * theirs[key], rtol=1e-6)


@pytest.mark.parametrize(
    "damage",
    ["shape", "nan", "missing", "extra", "dtype", "factor", "name", "list"],
)
def test_blend_rejects_bad_params_without_changing_weights(damage: str) -> None:
    """Bad shapes, NaN, wrong names or a bad factor raise and change nothing."""
    learner, _, _ = _trained(batches=2)
    params = learner.export_expert("geometry")
    params = {k: v + 1 for k, v in params.items()}
    name, factor = "geometry", 0.5
    if damage == "shape":
        params["w1"] = params["w1"][:-1]
    elif damage == "nan":
        params["w2"][0, 0] = np.nan
    elif damage == "missing":
        del params["b1"]
    elif damage == "extra":
        params["bias"] = params["b1"]
    elif damage == "dtype":
        params["b1"] = params["b1"].astype(np.float64)
    elif damage == "factor":
        factor = float("nan")
    elif damage == "name":
        name = "nobody"
    else:
        params["b1"] = params["b1"].tolist()
    before = learner.state_dict()
    with pytest.raises(LearnerError):
        learner.blend_expert(name, params, factor)
    assert _same_state(before, learner.state_dict())


# Summaries


def test_take_window_fits_the_insight_schema() -> None:
    """A taken window makes a valid insight, and the next one starts empty."""
    learner, _, _ = _trained()
    window = learner.take_window()
    insight = {
        "schema": 1, "node_id": "n1", "seq": 0, "time": 1.0,
        "task": "classification", "records": learner.records,
        "window": {k: window[k] for k in ("records", "loss", "accuracy")},
        "experts": window["experts"], "drift": window["drift"],
        "memory_bytes": window["memory_bytes"],
        "embedding": learner.embedding().tolist(), "gossip": None,
    }
    validate_insight(insight)
    assert window["records"] == 10 * BATCH and 0.5 < window["accuracy"] <= 1.0
    assert learner.take_window()["records"] == 0


def test_window_halves_show_learning() -> None:
    """Experts' losses in the second half of a first window are lower."""
    learner, _, _ = _trained(batches=20)
    experts = learner.take_window()["experts"]
    improved = [e["loss_end"] < e["loss_start"] for e in experts.values()]
    assert sum(improved) >= 4


def test_usage_is_a_distribution() -> None:
    """Usage shares are positive and sum to 1, before and after learning."""
    assert sum(Learner(FEATURES).usage().values()) == pytest.approx(1.0)
    learner, _, _ = _trained()
    usage = learner.usage()
    assert sum(usage.values()) == pytest.approx(1.0) and min(usage.values()) > 0


def test_embedding_reflects_the_data_distribution() -> None:
    """Nodes on similar streams embed close together, unlike a shifted stream."""

    def embed(centre: list[float], seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        X = rng.normal(loc=centre, scale=1.0, size=(640, FEATURES))
        learner = Learner(FEATURES)
        learner.step(X, (X[:, 0] > centre[0]).astype(np.float64))
        return learner.embedding()

    site = [1.0, 2.0, -1.0, 0.5]
    a, b, c = embed(site, 1), embed(site, 2), embed([-3.0, 0.0, 4.0, -2.0], 3)
    assert a.shape == (EMBEDDING_SIZE,) and a.dtype == np.float32
    assert float(np.linalg.norm(a)) == pytest.approx(1.0, abs=1e-6)
    assert float(a @ b) > 0.99 and float(a @ c) < 0.8


# Learning quality


def test_regression_learns_a_real_target() -> None:
    """The mixture predicts a real-valued target far better than its mean."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3200, FEATURES))
    target = 10.0 + 3.0 * X[:, 0] - 2.0 * X[:, 2] + 0.1 * rng.normal(size=3200)
    learner = Learner(FEATURES, task="regression")
    errors = []
    for start in range(0, len(X), BATCH):
        truth = target[start : start + BATCH]
        prediction, _ = learner.step(X[start : start + BATCH], truth)
        errors.append(np.mean((prediction.values - truth) ** 2))
    assert np.mean(errors[-20:]) < 0.1 * np.var(target)


@pytest.mark.skipif(not ELEC2.exists(), reason="shared elec2.csv is not present")
def test_beats_no_change_on_elec2() -> None:
    """On Elec2's first 5,000 records the learner beats repeating the last label."""
    with ELEC2.open(newline="") as handle:
        rows = list(csv.reader(io.StringIO("".join(handle.readlines()[:5001]))))
    data = np.array(rows[1:], dtype=np.float64)
    X, y = data[:, :-1], data[:, -1]
    learner = Learner(X.shape[1])
    correct = 0
    started = time.perf_counter()
    for start in range(0, len(X), BATCH):
        _, report = learner.step(X[start : start + BATCH], y[start : start + BATCH])
        correct += report.correct
    assert time.perf_counter() - started < 60
    no_change = np.mean(y[1:] == y[:-1])
    assert correct / len(X) > no_change + 0.01
