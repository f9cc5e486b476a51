"""The learner host keeps a peer's blend only when local data agree."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from sfhfe_node.client.host import LearnerHost
from sfhfe_node.learner import Learner


@pytest.fixture
def host():
    """A host over a learner trained on 640 records of a simple stream."""
    rng = np.random.default_rng(0)
    learner = Learner(3, seed=0)
    for _ in range(20):
        X = rng.normal(size=(32, 3))
        learner.step(X, (X[:, 0] > 0).astype(np.float64))
    pool = ThreadPoolExecutor(1)
    yield LearnerHost(learner, pool)
    pool.shutdown(wait=True)


def flat(params: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([value.ravel() for value in params.values()])


async def test_local_loss_never_rises(host: LearnerHost) -> None:
    """Hostile weights for every expert: blends that hurt are undone, exactly."""
    learner = host._learner
    before = learner.score_recent()
    originals = {name: learner.export_expert(name) for name in host.weight_spec()}
    results = {}
    for name, own in originals.items():
        hostile = {key: -20.0 * value + 3.0 for key, value in own.items()}
        results[name] = await host.import_expert(name, hostile, 1.0)
    assert False in results.values()
    assert host.undone == list(results.values()).count(False)
    assert learner.score_recent() <= before + 1e-9
    for name, kept in results.items():
        if not kept:
            np.testing.assert_allclose(
                flat(learner.export_expert(name)), flat(originals[name]), atol=1e-5
            )


async def test_harmless_blend_is_kept(host: LearnerHost) -> None:
    """Blending a model with its own weights changes nothing and is kept."""
    expert = next(iter(host.weight_spec()))
    own = host._learner.export_expert(expert)
    assert await host.import_expert(expert, own, 0.5) is True
    assert host.kept == 1


async def test_import_runs_off_the_loop(host: LearnerHost) -> None:
    """Scoring and blending run on the learner thread, not on the event loop."""
    expert = next(iter(host.weight_spec()))
    own = host._learner.export_expert(expert)
    results = await asyncio.gather(
        *(host.import_expert(expert, own, 0.1) for _ in range(5))
    )
    assert results == [True] * 5


async def test_peer_weights_become_peer_models(host: LearnerHost) -> None:
    """A peer's experts are kept as its model; the own experts do not move."""
    learner = host._learner
    own = {name: learner.export_expert(name) for name in host.weight_spec()}
    peer = {
        name: {key: value + np.float32(0.01) for key, value in params.items()}
        for name, params in own.items()
    }
    kept = await host.keep_peer_weights({"node-b": peer})
    assert kept == len(own) and host.refused == 0
    for name, params in own.items():
        np.testing.assert_array_equal(flat(learner.export_expert(name)), flat(params))
    status = host.peer_models()
    assert status["peers"]["node-b"]["complete"] is True
    assert status["weight"] == 0.0


async def test_bad_peer_weights_are_refused_and_counted(host: LearnerHost) -> None:
    """Parameters that do not fit an expert are refused, the rest kept."""
    learner = host._learner
    names = list(host.weight_spec())
    good = learner.export_expert(names[0])
    bad = {key: np.full_like(value, np.nan) for key, value in good.items()}
    kept = await host.keep_peer_weights(
        {"node-b": {names[0]: good, names[1]: bad, "nope": good}}
    )
    assert kept == 1 and host.refused == 2
    assert host.peer_models()["peers"]["node-b"]["updates"] == 1
