"""Tests of the bandit router and its gate."""

from __future__ import annotations

import numpy as np
import torch

from sfhfe_node.learner import Router

EXPERTS = 5


def _router(**options: float) -> Router:
    return Router(EXPERTS, 4, generator=torch.Generator().manual_seed(3), **options)


def _contexts(rng: np.random.Generator, n: int = 32) -> np.ndarray:
    return np.concatenate([np.ones((n, 1)), rng.normal(size=(n, 3))], axis=1)


def _run(router: Router, batches: int, reward_of: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    for _ in range(batches):
        C = _contexts(rng)
        active = router.route(C, explore=True)
        router.learn_many(C, active, reward_of[active])
        router.count_routes(active)


def test_one_dominant_expert_does_not_collapse_routing() -> None:
    """When one expert always wins, every expert keeps a share of the routings."""
    router = _router()
    _run(router, 300, np.array([0.0, -1.0, -1.0, -1.0, -1.0]))
    usage = router.usage()
    assert usage.argmax() == 0
    assert usage.min() > 0.01
    assert router.entropy() > 0.5


def test_router_learns_which_experts_are_better() -> None:
    """Experts with higher rewards get more routings."""
    router = _router(epsilon=0.0)
    _run(router, 200, np.array([-0.1, -0.2, -0.3, -2.0, -3.0]))
    usage = router.usage()
    assert usage[:3].sum() > usage[3:].sum()


def test_nan_reward_is_ignored() -> None:
    """NaN and infinite rewards leave the statistics finite and are counted."""
    router = _router()
    rng = np.random.default_rng(1)
    C = _contexts(rng)
    active = router.route(C, explore=True)
    rewards = np.full(active.shape, np.nan)
    rewards[::2, 0] = -np.inf
    router.learn_many(C, active, rewards)
    assert router.ignored_rewards == rewards.size
    assert np.isfinite(router.scores(C)).all()
    _run(router, 50, np.array([np.nan, -1.0, -1.0, -1.0, -1.0]))
    assert router.usage().min() > 0.01


def test_priors_bias_the_choice() -> None:
    """With no evidence yet, the experts with the highest priors are picked."""
    router = _router(epsilon=0.0)
    router.priors[:] = [0.0, 0.0, 1.0, 1.0, 1.0]
    active = router.route(_contexts(np.random.default_rng(2)), explore=False)
    assert set(active.ravel().tolist()) == {2, 3, 4}


def test_route_without_exploration_is_pure() -> None:
    """Routing with explore=False neither draws randomness nor varies."""
    router = _router()
    C = _contexts(np.random.default_rng(4))
    before = router.generator.get_state()
    first = router.route(C, explore=False)
    assert np.array_equal(first, router.route(C, explore=False))
    assert torch.equal(before, router.generator.get_state())


def test_gate_weights_are_a_distribution_over_active_experts() -> None:
    """Mixing weights are positive and sum to 1 per row."""
    router = _router()
    C = _contexts(np.random.default_rng(5))
    active = router.route(C, explore=True)
    weights = router.mix_weights(torch.from_numpy(C).float(), torch.from_numpy(active))
    assert weights.shape == active.shape
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(len(C)))


def test_hand_written_gate_gradient_matches_autograd() -> None:
    """:meth:`Router.learn_gate` takes the step autograd's gradient would."""
    gen = torch.Generator().manual_seed(4)
    C = torch.randn((9, 5), generator=gen)
    active = torch.stack([torch.randperm(6, generator=gen)[:3] for _ in range(9)])
    upstream = torch.randn((9, 3), generator=gen)
    by_hand = Router(6, 5, top_k=3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        by_hand.gate.copy_(torch.randn(by_hand.gate.shape, generator=gen))
    reference = Router(6, 5, top_k=3, generator=torch.Generator().manual_seed(0))
    reference.load_state_dict(by_hand.state_dict())
    (reference.mix_weights(C, active) * upstream).sum().backward()
    reference.step_gate()
    with torch.no_grad():
        weights = by_hand.mix_weights(C, active)
    by_hand.learn_gate(C, active, weights, upstream)
    torch.testing.assert_close(by_hand.gate, reference.gate, rtol=1e-5, atol=1e-6)
