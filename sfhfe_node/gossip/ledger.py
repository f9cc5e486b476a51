"""What a gossip node counts: totals, and a bounded record of every peer.

Free of I/O. The :class:`Ledger` keeps the node-wide counters (frames sent
and accepted, bytes, drops, merges, rejections by reason) and, for every peer
met, a :class:`PeerRecord` with the same counters and what is known of the
peer. At most :data:`MAX_KNOWN` peers are remembered; when full, the idle
peer seen longest ago makes room.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

__all__ = ["COUNTERS", "MAX_KNOWN", "Ledger", "PeerRecord"]

MAX_KNOWN = 1024
COUNTERS = ("sent", "accepted", "dropped", "bytes_sent", "bytes_received")


@dataclass
class PeerRecord:
    """What a node knows of one peer and what it exchanged with it.

    ``counts`` holds the :data:`COUNTERS`; ``rejected`` counts rejections by
    reason; ``last_seen`` is the unix time of the peer's latest frame.
    """

    address: str | None
    similarity: float = 0.0
    trust: float = 0.0
    counts: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    last_seen: float = 0.0


class Ledger:
    """Node-wide counters and per-peer records.

    Parameters
    ----------
    linked
        The peers with an open link, never forgotten to make room.
    """

    def __init__(self, linked: Container[str]) -> None:
        self.linked = linked
        self.totals: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.known: dict[str, PeerRecord] = {}

    def record(self, peer: str, address: str | None = None) -> PeerRecord:
        """The record of ``peer``, created if needed; ``address`` updates it."""
        record = self.known.get(peer)
        if record is None:
            if len(self.known) >= MAX_KNOWN:
                self._forget_oldest()
            record = self.known[peer] = PeerRecord(address)
        elif address is not None:
            record.address = address
        return record

    def count(self, peer: str | None, name: str, amount: int = 1) -> None:
        """Add ``amount`` to counter ``name``, and to ``peer``'s when given."""
        self.totals[name] += amount
        if peer:
            self.record(peer).counts[name] += amount

    def seen(self, peer: str | None, size: int) -> None:
        """Count a frame of ``size`` bytes received from ``peer`` just now."""
        self.count(peer, "bytes_received", size)
        if peer:
            self.record(peer).last_seen = time.time()

    def reject(self, peer: str | None, reason: str) -> None:
        """Count one rejection for ``reason``, and against ``peer`` when given."""
        self.rejected[reason] += 1
        if peer:
            self.record(peer).rejected[reason] += 1

    def view(self, roles: dict[str, str]) -> dict[str, dict[str, Any]]:
        """Every known peer as plain data; ``roles`` names linked peers' roles."""
        return {
            peer: {
                "address": record.address,
                "role": roles.get(
                    peer, "candidate" if peer in self.linked else "away"
                ),
                "similarity": record.similarity,
                "trust": record.trust,
                "sent": record.counts["sent"],
                "accepted": record.counts["accepted"],
                "rejected": sum(record.rejected.values()),
                "rejected_by_reason": dict(record.rejected),
                "bytes_sent": record.counts["bytes_sent"],
                "bytes_received": record.counts["bytes_received"],
                "dropped": record.counts["dropped"],
                "last_seen": record.last_seen,
            }
            for peer, record in self.known.items()
        }

    def _forget_oldest(self) -> None:
        idle = [peer for peer in self.known if peer not in self.linked]
        if idle:
            del self.known[min(idle, key=lambda peer: self.known[peer].last_seen)]
