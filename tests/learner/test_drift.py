"""Tests of drift detection, alone and inside the learner, on seeded streams."""

from __future__ import annotations

import numpy as np
import pytest

from sfhfe_node.learner import AdaptiveWindow, DriftMonitor, FeatureDivergence, Learner

BATCHES = (32, 64)  # a young node's batches, and the default ones
CHANGE = 4000
MAX_DELAY = {"sudden": 200, "gradual": 1200, "recurring": 200}


def _concept_stream(kind: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Four Gaussian features; the label's rule flips at the change point(s)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    t = np.arange(n)
    if kind == "stationary":
        flipped = np.zeros(n, dtype=bool)
    elif kind == "sudden":
        flipped = t >= CHANGE
    elif kind == "gradual":
        flipped = rng.random(n) < np.clip((t - CHANGE) / 1000, 0.0, 1.0)
    else:
        flipped = (t >= 3000) & (t < 6000)
    rule = np.where(flipped, X[:, 0] - X[:, 1], X[:, 0] + X[:, 1])
    return X, (rule > 0).astype(np.float64)


def _events(X: np.ndarray, y: np.ndarray, seed: int, batch: int) -> list[dict]:
    learner = Learner(X.shape[1], seed=seed, feature_names=["a", "b", "c", "d"])
    events = []
    for start in range(0, len(X), batch):
        learner.step(X[start : start + batch], y[start : start + batch])
        events += learner.drift_events()
    return events


def test_adaptive_window_finds_a_jump_in_the_mean() -> None:
    """A jump of the error rate from 0.1 to 0.6 is found within ten batches."""
    window = AdaptiveWindow()
    rng = np.random.default_rng(0)
    for t in range(80):
        if window.update(rng.binomial(1, 0.1 + 0.5 * (t >= 40), 32)):
            break
    assert 40 <= t < 50
    assert window.change > 0.3


def test_adaptive_window_is_quiet_on_a_constant_rate() -> None:
    """No change is reported over 60,000 rows of a constant error rate."""
    window = AdaptiveWindow()
    rng = np.random.default_rng(1)
    assert not any(window.update(rng.binomial(1, 0.2, 32)) for _ in range(2000))


def test_adaptive_window_memory_is_bounded() -> None:
    """The window never holds more than max_entries entries."""
    window = AdaptiveWindow(max_entries=16)
    for _ in range(100):
        window.update(np.zeros(32))
    assert len(window.entries) <= 16


def test_divergence_is_zero_for_one_distribution_and_grows_with_shift() -> None:
    """KL of the current window is near 0 when nothing moves and grows after."""
    rng = np.random.default_rng(2)
    divergence = FeatureDivergence(2, half_life=200)
    for _ in range(100):
        still = divergence.update(rng.normal(size=(32, 2)))
    assert still.max() < 0.05
    for _ in range(60):
        moved = divergence.update(rng.normal(size=(32, 2)) + [3.0, 0.0])
    assert moved[0] > 0.5 and moved[1] < 0.1


def test_monitor_names_the_feature_that_moved() -> None:
    """A shift of one feature raises one feature event naming that feature."""
    rng = np.random.default_rng(3)
    monitor = DriftMonitor(["a", "b", "c"])
    events = []
    for t in range(200):
        X = rng.normal(size=(32, 3)) + (t >= 100) * np.array([0.0, 0.0, 3.0])
        event = monitor.update(np.zeros(32), X, 32 * t + 31)
        assert monitor.drift_detected == (event is not None)
        if event is not None:
            events.append(event)
    assert len(events) == 1
    assert events[0].kind == "features" and events[0].features[0] == "c"
    assert 3200 <= events[0].time < 3200 + 640


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("kind", ["sudden", "gradual"])
def test_learner_detects_a_concept_change_within_the_bound(
    kind: str, batch: int
) -> None:
    """The first drift event follows the change within the stated delay."""
    X, y = _concept_stream(kind, 7000, seed=0)
    events = [e for e in _events(X, y, 0, batch) if e["kind"] == "error"]
    assert events, "no drift detected"
    assert CHANGE <= events[0]["time"] <= CHANGE + MAX_DELAY[kind]


@pytest.mark.parametrize("batch", BATCHES)
def test_learner_detects_both_changes_of_a_recurring_concept(batch: int) -> None:
    """A concept that leaves and comes back is detected both times."""
    X, y = _concept_stream("recurring", 8000, seed=1)
    times = [e["time"] for e in _events(X, y, 1, batch)]
    assert any(3000 <= t <= 3000 + MAX_DELAY["recurring"] for t in times)
    assert any(6000 <= t <= 6000 + MAX_DELAY["recurring"] for t in times)
    assert len(times) <= 3


@pytest.mark.parametrize("batch", BATCHES)
def test_learner_raises_no_false_alarm_on_a_stationary_stream(batch: int) -> None:
    """At most one event per 10,000 records (the stated rate) when nothing changes."""
    X, y = _concept_stream("stationary", 10_000, seed=2)
    assert len(_events(X, y, 2, batch)) <= 1


def test_drift_active_is_read_only_and_follows_the_last_step() -> None:
    """drift_active is true on the step that found the drift and false after."""
    X, y = _concept_stream("sudden", 5000, seed=3)
    learner = Learner(4, seed=3)
    flags = []
    for start in range(0, len(X), BATCHES[0]):
        learner.step(X[start : start + BATCHES[0]], y[start : start + BATCHES[0]])
        flags.append(learner.drift_active)
    with pytest.raises(AttributeError):
        learner.drift_active = True  # type: ignore[misc]
    assert any(flags) and not flags[-1]
    events = learner.drift_events()
    assert events and learner.drift_events() == []
