"""Which connected peers a node gossips with: similarity, hysteresis, trust.

:class:`PeerTable` is plain state, free of I/O and clocks: the caller passes
the time in and logs the :class:`PeerEvent` objects it gets back.

Besides the ``k`` most similar peers the table keeps one exploration slot
filled by a random other candidate and rotated every ``explore_period``
seconds. Peers chosen only by similarity help a node's personal model but
narrow what the federation shares (a node only ever hears from nodes like
itself); one random partner keeps knowledge flowing across clusters of
similar nodes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["PeerEvent", "PeerTable", "cosine"]


@dataclass(frozen=True)
class PeerEvent:
    """A change of the selected peer set.

    ``kind`` is ``"joined"`` (``peer_id`` took a free slot), ``"replaced"``
    (``peer_id`` took the slot of ``replaced``) or ``"left"`` (``peer_id``
    lost its slot); ``reason`` is a short token such as ``"free_slot"``,
    ``"more_similar"``, ``"explore"``, ``"rotated"`` or ``"disconnected"``.
    """

    kind: Literal["joined", "replaced", "left"]
    peer_id: str
    reason: str
    replaced: str | None = None


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors, 0.0 when it is undefined.

    Vectors of different lengths (nodes with different feature sets), zero
    vectors and non-finite values all give 0.0: no evidence of similarity.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.size != b.size or a.size == 0:
        return 0.0
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if not math.isfinite(norms) or norms == 0.0:
        return 0.0
    value = float(np.dot(a, b)) / norms
    return min(1.0, max(-1.0, value)) if math.isfinite(value) else 0.0


@dataclass
class _Entry:
    address: str | None
    similarity: float
    good: int = 0


class PeerTable:
    """The candidate peers of one node and the top ``k`` it has selected.

    Parameters
    ----------
    k
        How many peers are selected (default 3). More peers spread knowledge
        faster and cost more bandwidth per round.
    margin
        Hysteresis, in units of cosine similarity (default 0.05): a candidate
        replaces the weakest selected peer only when its smoothed similarity
        is higher by more than this. Raising it calms churn; lowering it
        follows similarity more closely.
    cooldown
        Seconds that must pass after any change of the selection before a
        replacement (default 60.0). Free slots fill at once regardless.
    ema
        Weight of the newest observation in the exponential moving average of
        a peer's similarity, in (0, 1] (default 0.3). Lower is smoother and
        slower to notice real change.
    trust_after
        Successful exchanges after which a peer is trusted fully (default 3).
        Trust grows linearly from 0 to 1 over them; a failed exchange resets
        it to 0. With 0 every peer is trusted at once.
    explore_period
        Seconds between rotations of the exploration slot (default 300.0);
        ``None`` disables the slot. Shorter mixes knowledge across the
        federation faster and spends more exchanges on less similar peers.
    rng
        Source of the random choice of the exploring peer (default: a new
        ``random.Random()``); pass a seeded one for repeatable choices.
    """

    def __init__(
        self,
        k: int = 3,
        margin: float = 0.05,
        cooldown: float = 60.0,
        ema: float = 0.3,
        trust_after: int = 3,
        explore_period: float | None = 300.0,
        rng: random.Random | None = None,
    ) -> None:
        if k < 1 or margin < 0 or cooldown < 0 or not 0 < ema <= 1 or trust_after < 0:
            raise ValueError(
                f"peer table needs k >= 1, margin >= 0, cooldown >= 0, "
                f"0 < ema <= 1, trust_after >= 0; got k={k}, margin={margin}, "
                f"cooldown={cooldown}, ema={ema}, trust_after={trust_after}"
            )
        if explore_period is not None and not explore_period > 0:
            raise ValueError(f"explore_period must be > 0, got {explore_period}")
        self.k = k
        self.margin = margin
        self.cooldown = cooldown
        self.ema = ema
        self.trust_after = trust_after
        self.explore_period = explore_period
        self._rng = rng or random.Random()
        self._entries: dict[str, _Entry] = {}
        self._selected: set[str] = set()
        self._last_change = -math.inf
        self._explorer: str | None = None
        self._explored_at = -math.inf

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def selected(self) -> list[str]:
        """Ids of every peer gossiped with: most similar first, the explorer last."""
        ranked = self.similar
        return ranked + [self._explorer] if self._explorer is not None else ranked

    @property
    def similar(self) -> list[str]:
        """Ids of the peers chosen by similarity, most similar first."""
        return sorted(self._selected, key=lambda peer: -self._entries[peer].similarity)

    @property
    def explorer(self) -> str | None:
        """Id of the peer in the exploration slot, if any."""
        return self._explorer

    def similarity(self, peer_id: str) -> float:
        """Smoothed cosine similarity of ``peer_id``; KeyError if unknown."""
        return self._entries[peer_id].similarity

    def address(self, peer_id: str) -> str | None:
        """Gossip address ``peer_id`` last announced; KeyError if unknown."""
        return self._entries[peer_id].address

    def trust(self, peer_id: str) -> float:
        """Trust in ``peer_id`` in [0, 1]; 0.0 for an unknown peer."""
        entry = self._entries.get(peer_id)
        if entry is None:
            return 0.0
        if self.trust_after == 0:
            return 1.0
        return min(entry.good, self.trust_after) / self.trust_after

    def observe(
        self,
        peer_id: str,
        address: str | None,
        embedding: np.ndarray,
        own_embedding: np.ndarray,
        now: float,
    ) -> list[PeerEvent]:
        """Fold a fresh embedding of ``peer_id`` in and update the selection."""
        value = cosine(embedding, own_embedding)
        entry = self._entries.get(peer_id)
        if entry is None:
            self._entries[peer_id] = _Entry(address, value)
        else:
            entry.address = address
            entry.similarity += self.ema * (value - entry.similarity)
        return self._rebalance(now)

    def record_exchange(self, peer_id: str, ok: bool) -> None:
        """Count one exchange with ``peer_id``: good ones build trust."""
        entry = self._entries.get(peer_id)
        if entry is not None:
            entry.good = entry.good + 1 if ok else 0

    def remove(
        self, peer_id: str, now: float, reason: str = "disconnected"
    ) -> list[PeerEvent]:
        """Forget ``peer_id``; a freed slot goes to the best other candidate."""
        if self._entries.pop(peer_id, None) is None:
            return []
        events: list[PeerEvent] = []
        if peer_id in self._selected:
            self._selected.discard(peer_id)
            self._last_change = now
            events.append(PeerEvent("left", peer_id, reason))
        if peer_id == self._explorer:
            self._explorer = None
            events.append(PeerEvent("left", peer_id, reason))
        return events + self._rebalance(now)

    def _rebalance(self, now: float) -> list[PeerEvent]:
        return self._choose_similar(now) + self._choose_explorer(now)

    def _choose_similar(self, now: float) -> list[PeerEvent]:
        events: list[PeerEvent] = []
        candidates = sorted(
            (peer for peer in self._entries if peer not in self._selected),
            key=lambda peer: -self._entries[peer].similarity,
        )
        while candidates and len(self._selected) < self.k:
            peer = candidates.pop(0)
            self._promote(peer)
            self._last_change = now
            events.append(PeerEvent("joined", peer, "free_slot"))
        if not candidates or now - self._last_change < self.cooldown:
            return events
        best = candidates[0]
        weakest = min(self._selected, key=lambda peer: self._entries[peer].similarity)
        gain = self._entries[best].similarity - self._entries[weakest].similarity
        if gain > self.margin:
            self._selected.discard(weakest)
            self._promote(best)
            self._last_change = now
            events.append(PeerEvent("replaced", best, "more_similar", weakest))
        return events

    def _promote(self, peer: str) -> None:
        self._selected.add(peer)
        if peer == self._explorer:
            self._explorer = None

    def _choose_explorer(self, now: float) -> list[PeerEvent]:
        if self.explore_period is None:
            return []
        due = now - self._explored_at >= self.explore_period
        if self._explorer is not None and not due:
            return []
        others = sorted(
            peer for peer in self._entries
            if peer not in self._selected and peer != self._explorer
        )
        if not others:
            return []
        previous, self._explorer = self._explorer, self._rng.choice(others)
        self._explored_at = now
        if previous is None:
            return [PeerEvent("joined", self._explorer, "explore")]
        return [PeerEvent("replaced", self._explorer, "rotated", previous)]
