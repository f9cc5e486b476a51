"""Tests of the experts' jobs: memory, EWC, schedule, outliers, graph, status."""

from __future__ import annotations

import json

import numpy as np
import torch

from sfhfe_node.learner import (
    Consolidation,
    LaggedGraph,
    Learner,
    MetaSchedule,
    OutlierDetector,
    Router,
    TieredMemory,
)

BATCH = 32


def _memory(**options: int) -> TieredMemory:
    return TieredMemory(4, 2, generator=torch.Generator().manual_seed(0), **options)


def test_memory_tiers_never_exceed_their_bounds() -> None:
    """However many rows are offered, every tier holds at most its capacity."""
    memory = _memory(recent=10, latent=7, anchors=3)
    rng = np.random.default_rng(0)
    for _ in range(50):
        memory.add(rng.normal(size=(32, 4)), rng.normal(size=(32, 2)), rng.random(32))
    assert memory.sizes() == {"recent": 10, "latent": 7, "anchors": 3}


def test_anchors_keep_the_highest_losses() -> None:
    """The anchor tier holds the rows with the largest losses offered."""
    memory = _memory(anchors=2)
    full = np.arange(20, dtype=np.float32).reshape(5, 4)
    memory.add(full, np.zeros((5, 2)), np.array([0.1, 5.0, 0.2, 9.0, 0.3]))
    assert sorted(memory.rows["anchors"][:, 0].tolist()) == [4.0, 12.0]


def test_anchors_follow_decayed_scores_batch_after_batch() -> None:
    """Over many batches the tier holds what ranking every row ever offered
    by its decayed loss would keep, ties going to the older row."""
    memory = _memory(anchors=6)
    rng = np.random.default_rng(3)
    offered: list[tuple[float, int, np.ndarray]] = []  # (score, order, row)
    for batch in range(40):
        full = rng.normal(size=(8, 4)).astype(np.float32)
        losses = np.round(rng.exponential(size=8) * (0.2 if batch % 3 else 1.0), 1)
        memory.add(full, np.zeros((8, 2)), losses)
        offered = [(score * 0.995, order, row) for score, order, row in offered]
        offered += [
            (float(loss), batch * 8 + i, full[i]) for i, loss in enumerate(losses)
        ]
        offered = sorted(offered, key=lambda item: (-item[0], item[1]))[:6]
        kept = sorted(offered, key=lambda item: item[1])
        np.testing.assert_array_equal(
            memory.rows["anchors"], np.array([row for _, _, row in kept])
        )
        np.testing.assert_allclose(memory.anchor_scores, [s for s, _, _ in kept])


def test_reservoir_samples_the_whole_stream_evenly() -> None:
    """The latent reservoir keeps old and new rows in proportion to the stream."""
    memory = _memory(latent=200)
    for batch in range(100):
        codes = np.full((32, 2), float(batch))
        memory.add(np.zeros((32, 4)), codes, np.zeros(32))
    held = memory.rows["latent"][:, 0]
    assert 0.3 < np.mean(held < 50) < 0.7


def test_replay_mixes_the_tiers_by_the_configured_shares() -> None:
    """A replay draw takes about half its rows from recent and a quarter each else."""
    memory = _memory()
    memory.add(np.ones((64, 4)), np.ones((64, 2)), np.ones(64))
    drawn = memory.sample(32)
    assert {tier: len(rows) for tier, rows in drawn.items()} == {
        "recent": 16, "latent": 8, "anchors": 8,
    }


def test_ewc_pulls_weights_back_in_proportion_to_importance() -> None:
    """The EWC gradient is lambda * F * (theta - theta*) and zero before a snapshot."""
    params = torch.zeros(3, requires_grad=True)
    ewc = Consolidation(torch.tensor([1.0, 1.0, 0.0]))
    params.grad = torch.zeros(3)
    ewc.penalise(params)
    assert params.grad.abs().sum() == 0
    ewc.snapshot(params, torch.tensor([1.0, 2.0, 3.0]))
    with torch.no_grad():
        params += 1.0
    ewc.penalise(params)
    fisher = torch.tensor([1.0, 2.0, 3.0]) / 2.0
    torch.testing.assert_close(params.grad, fisher * torch.tensor([1.0, 1.0, 0.0]))


def test_schedule_raises_rates_of_worsening_experts_and_freezes_settled_ones() -> None:
    """A rising loss raises the multiplier; a flat loss shrinks then freezes it."""
    schedule = MetaSchedule(2, period=4, freeze_after=3, thaw_after=2)
    for t in range(40):
        schedule.update(np.array([1.0 + 0.1 * t, 1.0]))
    assert schedule.multiplier[0] > 1.0
    assert schedule.effective()[1] in (0.0, schedule.low)
    assert schedule.freezes >= 1
    schedule.thaw()
    assert (schedule.effective() > 0).all()


def test_outliers_are_flagged_but_normal_rows_are_not() -> None:
    """A row 50 robust deviations away is an outlier; typical rows are not."""
    detector = OutlierDetector(3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        detector.learn_many(rng.normal(size=(32, 3)))
    rows = rng.normal(size=(32, 3))
    rows[5, 1] = 50.0
    assert np.flatnonzero(detector.flag(rows)).tolist() == [5]


def test_outliers_are_quarantined_from_training_not_prediction() -> None:
    """An extreme row is predicted, counted, and kept out of the normaliser."""
    learner = Learner(3, seed=0)
    rng = np.random.default_rng(1)
    for _ in range(20):
        learner.step(rng.normal(size=(32, 3)), rng.integers(0, 2, 32))
    before = learner._scaler.mean.copy()
    X = rng.normal(size=(32, 3)) * 0.0
    X[0, 0] = 1e6
    prediction, report = learner.step(X, np.zeros(32))
    assert report.quarantined == 1 and np.isfinite(prediction.proba[0]).all()
    assert abs(learner._scaler.mean[0] - before[0]) < 1.0


def test_lagged_graph_finds_the_true_parent() -> None:
    """The target's strongest parent is the feature that drives it."""
    rng = np.random.default_rng(2)
    graph = LaggedGraph(3, 1, refresh=4)
    previous = rng.normal(size=3)
    for _ in range(64):
        X = rng.normal(size=(32, 3))
        lagged = np.vstack([previous, X[:-1]])
        y = 2.0 * X[:, 1:2]
        graph.learn_many(np.hstack([X, lagged, np.zeros((32, 1)), y]))
        previous = X[-1]
    edges = graph.edges(["a", "b", "c"], "y")
    assert edges[0][:2] == ("b", "y")


def test_router_does_not_lock_onto_one_expert_after_bad_rewards() -> None:
    """NaN and infinite rewards are ignored and routing stays spread."""
    router = Router(5, 3, generator=torch.Generator().manual_seed(0))
    rng = np.random.default_rng(3)
    for _ in range(50):
        C = np.hstack([np.ones((32, 1)), rng.normal(size=(32, 2))])
        active = router.route(C, explore=True)
        rewards = -rng.random(active.shape)
        rewards[:, 0] = np.where(rng.random(32) < 0.5, np.nan, np.inf)
        router.learn_many(C, active, rewards)
        router.count_routes(active)
    assert router.ignored_rewards > 0
    assert np.isfinite(router.S).all() and np.isfinite(router.b).all()
    assert router.usage().max() < 0.5 and router.entropy() > 0.8


def test_status_reports_every_job_as_json_aggregates() -> None:
    """status() holds each job's output, serialises to JSON and has no raw rows."""
    learner = Learner(3, seed=0, feature_names=["x", "y", "z"], target_name="label")
    rng = np.random.default_rng(4)
    for _ in range(40):
        X = rng.normal(size=(32, 3))
        learner.step(X, (X[:, 0] > 0).astype(float))
    status = learner.status()
    text = json.dumps(status)
    assert len(text) < 16_000
    assert set(status) >= {
        "geometry", "reconstruction", "causal", "drift", "governance",
        "consistency", "peer", "meta", "memory", "router", "experts",
    }
    assert status["memory"]["tiers"]["recent"] > 0
    sources = {edge[0] for edge in status["causal"]["edges"]}
    assert "x" in sources or "x@t-1" in sources
    assert 0.0 < status["router"]["entropy"] <= 1.0


def test_task_none_learns_structure_and_scores_anomalies() -> None:
    """Without a target the learner predicts, scores anomalies and learns its PCA."""
    learner = Learner(4, task="none", seed=0)
    rng = np.random.default_rng(5)
    for _ in range(30):
        prediction, report = learner.step(rng.normal(size=(32, 4)))
    assert prediction.labels is None and np.isfinite(prediction.values).all()
    odd = np.zeros((1, 4))
    odd[0, 2] = 8.0
    typical = learner.predict_many(rng.normal(size=(32, 4))).anomaly
    assert learner.predict_many(odd).anomaly[0] > np.median(typical)
    assert report.learned == 32 and sum(learner.explained_variance()) > 0
