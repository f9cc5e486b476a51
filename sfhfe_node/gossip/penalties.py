"""Back-off of misbehaving peers: how long each must stay away.

Free of I/O. A peer that breaks the protocol, sends an oversize frame or
stops answering keepalive pings is penalised: it may not link again until a
delay has passed, and the delay grows with every penalty in a row (each peer
draws from its own capped, jittered delay generator). A link that ends
without fault of the peer forgives it, so the next penalty starts small.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from sfhfe_node.gossip.ledger import MAX_KNOWN

__all__ = ["Penalties"]


class Penalties:
    """The back-off deadline of every penalised peer.

    Parameters
    ----------
    delays
        Makes a fresh delay generator for a peer's first penalty, usually
        :func:`~sfhfe_node.retry.backoff_delays` with the node's settings.
    limit
        Peers remembered at most (default 1024); when full, peers whose
        back-off has ended are forgotten to make room.
    """

    def __init__(
        self, delays: Callable[[], Iterator[float]], limit: int = MAX_KNOWN
    ) -> None:
        self.delays = delays
        self.limit = limit
        self._until: dict[str, tuple[float, Iterator[float]]] = {}

    def __len__(self) -> int:
        return len(self._until)

    def active(self, peer: str, now: float) -> bool:
        """Tell whether ``peer`` is still backed off at monotonic time ``now``."""
        penalty = self._until.get(peer)
        return penalty is not None and penalty[0] > now

    def penalise(self, peer: str, now: float) -> float:
        """Back ``peer`` off from ``now``; return the delay in seconds."""
        if len(self._until) >= self.limit:
            self._until = {
                key: value for key, value in self._until.items() if value[0] > now
            }
        penalty = self._until.get(peer)
        delays = penalty[1] if penalty is not None else self.delays()
        delay = next(delays)
        self._until[peer] = (now + delay, delays)
        return delay

    def forgive(self, peer: str) -> None:
        """Forget ``peer``'s penalties: its next one starts at the first delay."""
        self._until.pop(peer, None)
