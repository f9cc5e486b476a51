"""Back-off of misbehaving peers, without a loop."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from sfhfe_node.gossip.penalties import Penalties


def _delays() -> Iterator[float]:
    return itertools.count(1.0)


def test_penalised_peer_is_backed_off_until_its_delay_ends() -> None:
    """A penalty lasts exactly its delay from the moment it is given."""
    penalties = Penalties(_delays)
    assert penalties.penalise("peer", now=10.0) == 1.0
    assert penalties.active("peer", 10.5)
    assert not penalties.active("peer", 11.0)
    assert not penalties.active("other", 10.5)


def test_penalties_in_a_row_grow_and_forgiving_resets_them() -> None:
    """Each penalty draws the next delay; a forgiven peer starts over."""
    penalties = Penalties(_delays)
    assert [penalties.penalise("peer", 0.0) for _ in range(3)] == [1.0, 2.0, 3.0]
    penalties.forgive("peer")
    assert penalties.penalise("peer", 0.0) == 1.0


def test_full_table_forgets_expired_penalties() -> None:
    """At the limit, peers whose back-off has ended make room."""
    penalties = Penalties(_delays, limit=2)
    penalties.penalise("a", 0.0)
    penalties.penalise("b", 5.0)
    penalties.penalise("c", 2.0)
    assert len(penalties) == 2
    assert not penalties.active("a", 2.0) and penalties.active("b", 2.0)
