"""Exchange rounds: every ``interval`` seconds, merge what came in, send out.

Each round first hands the updates accepted since the last round to the
host as each peer's latest weights (its peer models, which compete with the
node's own experts on the node's next records), and, when the node's
``blend`` is above 0, combines them (:func:`~sfhfe_node.gossip.merge.combine`)
and blends the result into the learner's own experts; it then refreshes
every link with a ``hello`` (and every :data:`PEERS_EVERY` rounds a ``peers``
message), and finally sends the node's most-used experts to the peers the
:class:`~sfhfe_node.gossip.peers.PeerTable` selected, in as few ``weights``
frames as the frame cap allows. :func:`frame_cap` and :func:`frame_bytes`
size those frames.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

import numpy as np

from sfhfe_node.gossip.handler import LinkHandler
from sfhfe_node.gossip.ledger import Ledger
from sfhfe_node.gossip.merge import RoundBuffer, Update, combine
from sfhfe_node.gossip.peers import PeerTable
from sfhfe_node.gossip.protocol import Weights
from sfhfe_node.logs import gossip_log

if TYPE_CHECKING:
    from sfhfe_node.gossip.node import GossipNode

__all__ = [
    "ENVELOPE_BYTES",
    "MIN_FRAME",
    "PEERS_EVERY",
    "Exchange",
    "frame_bytes",
    "frame_cap",
    "pack",
]

ENVELOPE_BYTES = 256
MIN_FRAME = 64 * 1024
PEERS_EVERY = 10

Experts = dict[str, dict[str, np.ndarray]]


def frame_bytes(params: dict[str, tuple[int, ...]]) -> int:
    """Bytes one expert takes in a ``weights`` frame, slightly overestimated.

    A ``weights`` frame holds 4 bytes per value, about 12 bytes per parameter
    and about 40 per expert, plus under :data:`ENVELOPE_BYTES` of envelope.
    """
    return 40 + sum(4 * math.prod(shape) + 64 for shape in params.values())


def frame_cap(spec: dict[str, dict[str, tuple[int, ...]]]) -> int:
    """A frame cap that fits every expert of ``spec`` in one frame, twice over.

    Doubling leaves room for experts that grow. Never below 64 KiB.
    """
    total = ENVELOPE_BYTES + sum(frame_bytes(p) for p in spec.values())
    return max(MIN_FRAME, 2 * total)


def pack(experts: Experts, max_frame: int) -> list[Experts]:
    """Group ``experts`` into as few frames of ``max_frame`` bytes as fit.

    An expert too big for a frame of its own still gets one.
    """
    groups: list[Experts] = [{}]
    size = ENVELOPE_BYTES
    for name, params in experts.items():
        needed = frame_bytes({key: value.shape for key, value in params.items()})
        if groups[-1] and size + needed > max_frame:
            groups.append({})
            size = ENVELOPE_BYTES
        groups[-1][name] = params
        size += needed
    return [group for group in groups if group]


class Exchange:
    """The exchange rounds of one gossip node.

    Parameters
    ----------
    node
        The node served; its host and round settings (``interval``,
        ``experts_per_exchange``, ``blend``, ``clip_ratio``, ``max_frame``)
        are read at every round.
    links
        Runs the node's links; messages are queued through it.
    ledger, table, buffer
        The node's counters, peer choice and accepted updates.
    """

    def __init__(
        self,
        node: GossipNode,
        links: LinkHandler,
        ledger: Ledger,
        table: PeerTable,
        buffer: RoundBuffer,
    ) -> None:
        self.node = node
        self.links = links
        self.ledger = ledger
        self.table = table
        self.buffer = buffer
        self.round = 0

    async def run_forever(self) -> None:
        """Run a round every ``interval`` seconds; a failed round is logged."""
        while True:
            await asyncio.sleep(self.node.interval)
            try:
                await self.run_round()
            except Exception:
                gossip_log.warning(
                    "exchange round %d failed", self.round, exc_info=True
                )

    async def run_round(self) -> None:
        """Merge, refresh every link, and send experts to the selected peers."""
        self.round += 1
        await self.merge()
        links = self.links.links
        for peer, link in list(links.items()):
            self.links.queue(link, self.links.hello())
            if self.round % PEERS_EVERY == 0:
                self.links.queue(link, self.links.peers_for(peer))
        selected = [peer for peer in self.table.selected if peer in links]
        names = self._top_experts()
        if not selected or not names:
            return
        host = self.node.host
        experts = await host.export_experts(names)
        records = int(host.records())
        max_frame = self.node.max_frame
        assert max_frame is not None
        messages = [
            Weights(self.node.node_id, group, records, self.round)
            for group in pack(experts, max_frame)
        ]
        for peer in selected:
            link = links.get(peer)
            if link is None:
                continue
            for message in messages:
                if self.links.queue(link, message):
                    self.ledger.count(peer, "sent")

    async def merge(self) -> None:
        """Hand the updates accepted since the last round to the host as peer
        models and, with ``blend`` above 0, blend their combination in."""
        pending = self.buffer.take()
        if not pending:
            return
        await self._keep_peer_weights(pending)
        if self.node.blend > 0.0:
            await self._blend(pending)

    async def _keep_peer_weights(self, pending: dict[str, list[Update]]) -> None:
        """Give the host every peer's latest weights that carry weight."""
        by_peer: dict[str, Experts] = {}
        for expert, updates in pending.items():
            for update in updates:
                if update.weight > 0.0:
                    by_peer.setdefault(update.peer, {})[expert] = dict(update.params)
        if not by_peer:
            return
        try:
            kept = await self.node.host.keep_peer_weights(by_peer)
        except Exception:
            gossip_log.warning("keeping peer weights failed", exc_info=True)
            self.ledger.reject(None, "import_failed")
            return
        self.ledger.count(None, "peer_updates", kept)

    async def _blend(self, pending: dict[str, list[Update]]) -> None:
        """Combine each expert's updates robustly and blend them in."""
        host = self.node.host
        own = await host.export_experts(sorted(pending))
        for expert, updates in pending.items():
            target, factor = combine(
                own[expert], updates, self.node.blend, self.node.clip_ratio
            )
            if factor <= 0.0:
                continue
            try:
                kept = await host.import_expert(expert, target, factor)
            except Exception:
                gossip_log.warning("import of %s failed", expert, exc_info=True)
                self.ledger.reject(None, "import_failed")
                continue
            if kept is False:
                self.ledger.count(None, "undone")
                continue
            self.ledger.count(None, "merges")
            gossip_log.debug(
                "merged %d update(s) of %s by %.3f", len(updates), expert, factor
            )

    def _top_experts(self) -> list[str]:
        spec = self.node.host.weight_spec()
        usage = self.node.host.expert_usage()
        ranked = sorted(
            (name for name in spec if math.isfinite(usage.get(name, 0.0))),
            key=lambda name: -usage.get(name, 0.0),
        )
        limit = self.node.experts_per_exchange
        return ranked if limit is None else ranked[:limit]
