"""Tests of the meta learner (no I/O)."""

from __future__ import annotations

import math

import pytest

from sfhfe_node.coordinator.meta import MetaLearner, MetaParams
from sfhfe_node.wire.insight import validate_meta
from tests.coordinator.helpers import expert, make_insight


def population(learner: MetaLearner, rates: dict[str, float], **fields) -> None:
    """Feed one insight per node; ``rates`` maps node id to its linear lr.

    The node whose rate is highest improves most.
    """
    top = max(rates.values())
    for node_id, lr in rates.items():
        gain = 0.5 * lr / top
        stats = expert(lr, loss_start=1.0, loss_end=1.0 - gain)
        insight = make_insight(node_id=node_id, experts={"linear": stats}, **fields)
        learner.observe(insight)


def test_starts_at_version_zero_with_empty_maps() -> None:
    """A fresh learner serves version 0 with no rates and no priors."""
    document = MetaLearner().current.to_document()
    assert document == {"version": 0, "learning_rates": {}, "router_priors": {}}


def test_no_version_before_a_trigger() -> None:
    """Fewer than min_samples insights within max_interval make no version."""
    learner = MetaLearner(min_samples=5, max_interval=60.0)
    population(learner, {"a": 0.01, "b": 0.02})
    assert learner.maybe_update(0.0) is None
    assert learner.maybe_update(30.0) is None
    assert learner.current.version == 0


def test_sample_trigger_increments_version_once() -> None:
    """Reaching min_samples makes version 1, and nothing new makes no version 2."""
    learner = MetaLearner(min_samples=2)
    population(learner, {"a": 0.01, "b": 0.02})
    params = learner.maybe_update(0.0)
    assert params is not None and params.version == 1
    assert learner.last_trigger == "samples"
    assert learner.maybe_update(1e6) is None


def test_time_trigger_fires_after_max_interval() -> None:
    """One new insight makes a version once max_interval has passed."""
    learner = MetaLearner(min_samples=100, max_interval=60.0)
    learner.maybe_update(0.0)
    population(learner, {"a": 0.01})
    assert learner.maybe_update(59.0) is None
    assert learner.maybe_update(60.0).version == 1
    assert learner.last_trigger == "time"


def test_drift_share_triggers_once_per_crossing() -> None:
    """A share of drifting nodes makes one version, not one per insight."""
    learner = MetaLearner(min_samples=100, drift_share=0.5)
    drifting = {"events": 1, "active": True}
    population(learner, {"a": 0.01, "b": 0.02}, drift=drifting)
    assert learner.maybe_update(0.0).version == 1
    assert learner.last_trigger == "drift"
    population(learner, {"a": 0.01, "b": 0.02}, drift=drifting)
    assert learner.maybe_update(1.0) is None


def test_accuracy_drop_triggers_a_version() -> None:
    """A fall of mean window accuracy by accuracy_drop makes a version."""
    learner = MetaLearner(min_samples=2, accuracy_drop=0.1)
    population(learner, {"a": 0.01, "b": 0.02})
    learner.maybe_update(0.0)
    worse = {"records": 320, "loss": 0.45, "accuracy": 0.6}
    population(learner, {"a": 0.01}, window=worse, seq=1)
    assert learner.maybe_update(1.0).version == 2
    assert learner.last_trigger == "performance"


def test_rates_move_toward_the_best_nodes() -> None:
    """The new rate is near the rate of the node that improved most."""
    learner = MetaLearner(min_samples=1, top_quantile=0.25)
    population(learner, {"a": 0.001, "b": 0.002, "c": 0.004, "d": 0.1})
    rate = learner.maybe_update(0.0).learning_rates["linear"]
    assert rate == pytest.approx(0.1)


def test_exploit_is_a_geometric_mean() -> None:
    """With every node in the top quantile the rate is their geometric mean."""
    learner = MetaLearner(min_samples=1, top_quantile=1.0, explore=(1.0,))
    population(learner, {"a": 0.001, "b": 0.1})
    rate = learner.maybe_update(0.0).learning_rates["linear"]
    assert rate == pytest.approx(math.sqrt(0.001 * 0.1))


def test_rates_stay_within_floor_and_ceiling() -> None:
    """Rates outside [lr_floor, lr_ceiling] are clipped."""
    learner = MetaLearner(min_samples=1, lr_floor=1e-3, lr_ceiling=0.5)
    stats = {"hot": expert(5.0), "cold": expert(1e-6)}
    learner.observe(make_insight(experts=stats))
    rates = learner.maybe_update(0.0).learning_rates
    assert rates == {"cold": 1e-3, "hot": 0.5}


def test_priors_favour_the_lowest_loss() -> None:
    """The expert with the lowest population loss gets prior 1, others less."""
    learner = MetaLearner(min_samples=1)
    stats = {"good": expert(0.01, loss_end=0.1), "bad": expert(0.01, loss_end=2.0)}
    learner.observe(make_insight(experts=stats))
    priors = learner.maybe_update(0.0).router_priors
    assert priors["good"] == 1.0
    assert 0.0 <= priors["bad"] < 0.2


def test_experts_without_samples_are_ignored() -> None:
    """An expert that learnt from no record contributes no rate."""
    learner = MetaLearner(min_samples=1)
    stats = {"linear": expert(0.01), "idle": expert(0.5, samples=0)}
    learner.observe(make_insight(experts=stats))
    assert set(learner.maybe_update(0.0).learning_rates) == {"linear"}


def test_document_passes_the_wire_check() -> None:
    """Every version serialises to a document validate_meta accepts."""
    learner = MetaLearner(min_samples=1)
    population(learner, {f"n{i}": 0.001 * (i + 1) for i in range(10)})
    document = learner.maybe_update(0.0).to_document()
    assert validate_meta(document) == document
    assert MetaParams.from_document(document).version == 1


def test_explore_draws_are_seeded() -> None:
    """Two learners with one seed and one history give each node the same rates."""
    results = []
    for _ in range(2):
        learner = MetaLearner(min_samples=1, seed=7)
        population(learner, {"a": 0.01, "b": 0.03})
        results.append(learner.for_node(learner.maybe_update(0.0), "a"))
    assert results[0] == results[1]


def test_nodes_explore_around_the_population_rate() -> None:
    """Each node gets the population rate times one of the explore factors."""
    learner = MetaLearner(min_samples=1, explore=(0.5, 1.0, 2.0))
    population(learner, {"a": 0.01})
    params = learner.maybe_update(0.0)
    base = params.learning_rates["linear"]
    spread = {
        round(learner.for_node(params, f"n{i}").learning_rates["linear"] / base, 9)
        for i in range(40)
    }
    assert spread == {0.5, 1.0, 2.0}
    assert learner.for_node(params, "n1").router_priors == params.router_priors


def test_resume_keeps_the_version_and_does_not_trigger() -> None:
    """Resuming from a saved version restores it without making a new one."""
    learner = MetaLearner(min_samples=1)
    saved = MetaParams(7, {"linear": 0.02}, {"linear": 1.0})
    learner.resume(saved, [make_insight(node_id="a"), make_insight(node_id="b")])
    assert learner.population == 2
    assert learner.maybe_update(0.0) is None
    learner.observe(make_insight(node_id="a", seq=1))
    assert learner.maybe_update(1.0).version == 8


def test_forgets_the_oldest_node_beyond_max_nodes() -> None:
    """The population holds at most max_nodes latest reports."""
    learner = MetaLearner(max_nodes=3)
    population(learner, {f"n{i}": 0.01 for i in range(5)})
    assert learner.population == 3


def test_bad_bounds_are_refused() -> None:
    """A floor above the ceiling raises ValueError."""
    with pytest.raises(ValueError, match="lr_floor"):
        MetaLearner(lr_floor=0.5, lr_ceiling=0.1)


def test_min_interval_spaces_versions() -> None:
    """A trigger within min_interval of the last version waits for it."""
    learner = MetaLearner(min_samples=1, min_interval=5.0)
    population(learner, {"a": 0.01})
    assert learner.maybe_update(0.0).version == 1
    population(learner, {"a": 0.02})
    assert learner.maybe_update(4.0) is None
    assert learner.maybe_update(5.0).version == 2


def test_priors_do_not_depend_on_the_loss_scale() -> None:
    """Losses ten times larger give the same priors (relative temperature)."""
    priors = []
    for scale in (1.0, 10.0):
        learner = MetaLearner(min_samples=1)
        stats = {
            "good": expert(0.01, loss_end=0.2 * scale),
            "fair": expert(0.01, loss_end=0.3 * scale),
        }
        learner.observe(make_insight(experts=stats))
        priors.append(learner.maybe_update(0.0).router_priors)
    assert priors[0] == pytest.approx(priors[1])
    assert priors[0]["good"] == 1.0 and 0.0 < priors[0]["fair"] < 0.5


def test_priors_follow_a_running_average_of_each_node() -> None:
    """One bad window moves an expert's prior less than a steady record would."""
    learner = MetaLearner(min_samples=1, min_interval=0.0, smoothing=0.2)
    for seq in range(5):
        stats = {"a": expert(0.01, loss_end=0.2), "b": expert(0.01, loss_end=0.3)}
        learner.observe(make_insight(seq=seq, experts=stats))
    learner.maybe_update(0.0)
    spike = {"a": expert(0.01, loss_end=0.5), "b": expert(0.01, loss_end=0.3)}
    learner.observe(make_insight(seq=5, experts=spike))
    priors = learner.maybe_update(1.0).router_priors
    assert priors["a"] == 1.0 and priors["b"] < 1.0


def test_first_version_comes_after_first_samples() -> None:
    """The first version needs only first_samples insights, later ones min_samples."""
    learner = MetaLearner(min_samples=20, first_samples=2, min_interval=0.0)
    population(learner, {"a": 0.01, "b": 0.02})
    assert learner.maybe_update(0.0).version == 1
    population(learner, {"a": 0.01, "b": 0.02}, seq=1)
    assert learner.maybe_update(1.0) is None


def test_each_node_tries_every_factor_in_turn() -> None:
    """Over as many versions as factors, one node is sent every factor once."""
    learner = MetaLearner(min_samples=1, min_interval=0.0, explore=(0.5, 1.0, 2.0))
    seen = set()
    for seq in range(3):
        population(learner, {"a": 0.01}, seq=seq)
        params = learner.maybe_update(float(seq))
        rate = learner.for_node(params, "a").learning_rates["linear"]
        seen.add(round(rate / params.learning_rates["linear"], 9))
    assert seen == {0.5, 1.0, 2.0}


def feed_credited(
    learner: MetaLearner, seq: int, gain_of: dict[float, float], nodes: int
) -> None:
    """One reply then one report per node; a node's gain follows its factor.

    Each report has the expert ``linear`` and a reference expert ``still``
    that never improves, so the node's median gain is half of linear's.
    """
    params = learner.current
    for i in range(nodes):
        node_id = f"n{i}"
        factor = 1.0
        if params.learning_rates:
            sent = learner.for_node(params, node_id).learning_rates["linear"]
            factor = round(sent / params.learning_rates["linear"], 9)
        gain = gain_of[factor] + 0.01 * ((seq + i) % 3 - 1)
        stats = {
            "linear": expert(0.01, loss_start=1.0, loss_end=1.0 - gain),
            "still": expert(0.01, loss_start=1.0, loss_end=1.0),
        }
        learner.observe(make_insight(node_id=node_id, seq=seq, experts=stats))


def test_rate_moves_to_the_factor_whose_nodes_gained_most() -> None:
    """When nodes sent the higher rate gain clearly more, the rate rises by it."""
    learner = MetaLearner(
        min_samples=1000, first_samples=1, min_interval=0.0, max_interval=1.0,
        explore=(0.5, 1.0, 2.0), evidence=4,
    )
    feed_credited(learner, 0, {0.5: 0.0, 1.0: 0.0, 2.0: 0.0}, nodes=9)
    start = learner.maybe_update(0.0).learning_rates["linear"]
    for seq in range(1, 3):
        feed_credited(learner, seq, {0.5: 0.0, 1.0: 0.05, 2.0: 0.2}, nodes=9)
    rate = learner.maybe_update(10.0).learning_rates["linear"]
    assert rate == pytest.approx(2.0 * start)


def test_rate_stays_without_a_clear_winner() -> None:
    """Gains that do not differ between factors leave the rate where it is."""
    learner = MetaLearner(
        min_samples=1000, first_samples=1, min_interval=0.0, max_interval=1.0,
        explore=(0.5, 1.0, 2.0), evidence=4,
    )
    feed_credited(learner, 0, {0.5: 0.0, 1.0: 0.0, 2.0: 0.0}, nodes=9)
    start = learner.maybe_update(0.0).learning_rates["linear"]
    for seq in range(1, 3):
        feed_credited(learner, seq, {0.5: 0.1, 1.0: 0.1, 2.0: 0.1}, nodes=9)
    assert learner.maybe_update(10.0).learning_rates["linear"] == start


def test_rate_stays_before_every_factor_has_evidence() -> None:
    """Too few reports per factor leave the rate where it is."""
    learner = MetaLearner(
        min_samples=1000, first_samples=1, min_interval=0.0, max_interval=1.0,
        explore=(0.5, 1.0, 2.0), evidence=50,
    )
    feed_credited(learner, 0, {0.5: 0.0, 1.0: 0.0, 2.0: 0.0}, nodes=9)
    start = learner.maybe_update(0.0).learning_rates["linear"]
    feed_credited(learner, 1, {0.5: 0.0, 1.0: 0.05, 2.0: 0.2}, nodes=9)
    assert learner.maybe_update(10.0).learning_rates["linear"] == start
