"""Peer selection: similarity smoothing, hysteresis, cooldown and trust."""

from __future__ import annotations

import random

import numpy as np
import pytest

from sfhfe_node.gossip.peers import PeerEvent, PeerTable, cosine

OWN = np.array([1.0, 0.0], np.float32)


def _vector(similarity: float) -> np.ndarray:
    """A unit vector whose cosine with OWN is ``similarity``."""
    return np.array([similarity, np.sqrt(1.0 - similarity**2)], np.float32)


def _table(**options: float | None) -> PeerTable:
    settings: dict = {"explore_period": None, **options}
    table = PeerTable(k=1, margin=0.05, cooldown=60.0, ema=1.0, **settings)
    table.observe("a", "ws://a:1", _vector(0.80), OWN, now=0.0)
    return table


def test_free_slot_fills_at_once() -> None:
    """The first candidate joins without waiting for any cooldown."""
    table = PeerTable(k=2)
    events = table.observe("a", None, _vector(0.5), OWN, now=0.0)
    assert events == [PeerEvent("joined", "a", "free_slot")]
    assert table.selected == ["a"]


def test_choice_holds_within_margin() -> None:
    """A candidate better by less than the margin does not replace a peer."""
    table = _table()
    events = table.observe("b", "ws://b:1", _vector(0.84), OWN, now=1000.0)
    assert events == []
    assert table.selected == ["a"]


def test_choice_changes_beyond_margin_after_cooldown() -> None:
    """A candidate better by more than the margin replaces the weakest peer."""
    table = _table()
    events = table.observe("b", "ws://b:1", _vector(0.90), OWN, now=60.0)
    assert events == [PeerEvent("replaced", "b", "more_similar", "a")]
    assert table.selected == ["b"]


def test_choice_holds_within_cooldown() -> None:
    """Even a much better candidate waits until the cooldown has passed."""
    table = _table()
    assert table.observe("b", None, _vector(0.99), OWN, now=59.0) == []
    assert table.selected == ["a"]
    assert table.observe("b", None, _vector(0.99), OWN, now=61.0)[0].kind == "replaced"


def test_similarity_is_smoothed() -> None:
    """A single odd embedding moves the similarity by the EMA weight only."""
    table = PeerTable(ema=0.3)
    table.observe("a", None, _vector(1.0), OWN, now=0.0)
    table.observe("a", None, _vector(0.0), OWN, now=1.0)
    assert table.similarity("a") == pytest.approx(0.7, abs=1e-6)


def test_removing_a_peer_frees_its_slot_for_the_best_candidate() -> None:
    """When a selected peer leaves, the best other candidate joins at once."""
    table = _table()
    table.observe("b", None, _vector(0.6), OWN, now=1.0)
    table.observe("c", None, _vector(0.7), OWN, now=2.0)
    events = table.remove("a", now=3.0)
    assert events == [
        PeerEvent("left", "a", "disconnected"),
        PeerEvent("joined", "c", "free_slot"),
    ]
    assert "a" not in table and len(table) == 2


def test_trust_grows_with_good_exchanges() -> None:
    """Trust climbs linearly to 1 over trust_after good exchanges."""
    table = _table(trust_after=3)
    seen = [table.trust("a")]
    for _ in range(4):
        table.record_exchange("a", ok=True)
        seen.append(table.trust("a"))
    assert seen == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0, 1.0])


def test_failed_exchange_resets_trust() -> None:
    """A rejected exchange takes trust back to zero."""
    table = _table(trust_after=2)
    table.record_exchange("a", ok=True)
    table.record_exchange("a", ok=True)
    table.record_exchange("a", ok=False)
    assert table.trust("a") == 0.0


def test_cosine_of_unlike_vectors_is_zero() -> None:
    """Vectors of different length, zero vectors and NaN give no similarity."""
    assert cosine(np.ones(3), np.ones(2)) == 0.0
    assert cosine(np.zeros(2), np.ones(2)) == 0.0
    assert cosine(np.array([np.nan, 1.0]), np.ones(2)) == 0.0


def test_bad_settings_are_refused() -> None:
    """A table with k below 1 or an EMA weight outside (0, 1] cannot be made."""
    with pytest.raises(ValueError):
        PeerTable(k=0)
    with pytest.raises(ValueError):
        PeerTable(ema=0.0)


def test_peer_set_is_stable_under_noise_below_the_margin() -> None:
    """Similarity noise of +-0.02 around fixed levels never changes the choice."""
    table = PeerTable(k=2, margin=0.05, cooldown=0.0, explore_period=None)
    levels = {"a": 0.90, "b": 0.86, "c": 0.84, "d": 0.82}
    rng = np.random.default_rng(3)
    events = []
    for step in range(300):
        for peer, level in levels.items():
            noisy = level + rng.uniform(-0.02, 0.02)
            events += table.observe(peer, None, _vector(noisy), OWN, now=float(step))
    assert sorted(table.selected) == ["a", "b"]
    assert [event.kind for event in events] == ["joined", "joined"]


def _explore_table() -> PeerTable:
    table = PeerTable(
        k=1, cooldown=0.0, ema=1.0, explore_period=100.0, rng=random.Random(1)
    )
    for i, peer in enumerate(["a", "b", "c", "d"]):
        table.observe(peer, None, _vector(0.9 - 0.1 * i), OWN, now=0.0)
    return table


def test_exploration_slot_holds_a_less_similar_peer() -> None:
    """Besides the k most similar peers, one other candidate is gossiped with."""
    table = _explore_table()
    assert table.similar == ["a"]
    assert table.explorer in {"b", "c", "d"}
    assert table.selected == ["a", table.explorer]


def test_exploration_slot_rotates_after_its_period() -> None:
    """The explorer is replaced by another candidate once its period is over."""
    table = _explore_table()
    first = table.explorer
    assert table.observe("a", None, _vector(0.9), OWN, now=99.0) == []
    events = table.observe("a", None, _vector(0.9), OWN, now=100.0)
    assert events == [PeerEvent("replaced", table.explorer, "rotated", first)]
    assert table.explorer not in (first, "a")


def test_explorer_that_leaves_is_replaced_at_once() -> None:
    """When the exploring peer disconnects another candidate takes the slot."""
    table = _explore_table()
    first = table.explorer
    assert first is not None
    events = table.remove(first, now=1.0)
    assert events[0] == PeerEvent("left", first, "disconnected")
    assert events[1].kind == "joined" and events[1].reason == "explore"
