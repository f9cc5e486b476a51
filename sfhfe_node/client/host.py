"""The learner as the gossip node sees it.

The gossip node lives on the event loop; the learner belongs to its worker
thread. :class:`LearnerHost` bridges the two: cheap reads (embedding, usage,
norms) are copies the learner thread refreshes after each batch, and weight
exports and imports are queued on the learner thread, between two batches.

Peers' weights reach the learner in two ways. Each peer's latest weights
are kept as that peer's model (:meth:`LearnerHost.keep_peer_weights`,
:class:`~sfhfe_node.learner.peer_models.PeerModels`): the model never trains
here, and earns a share of the node's predictions only by predicting the
node's next records well. An import (only with a gossip blend above 0)
moves the node's own experts instead and is checked against the node's own
recent records: the blend is kept only if the mixture's loss on them does
not rise by more than ``tolerance``; otherwise the expert's weights are put
back.
"""

from __future__ import annotations

import asyncio
import copy
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from sfhfe_node.errors import LearnerError
from sfhfe_node.learner import Learner

__all__ = ["LearnerHost"]


class LearnerHost:
    """Serve ``learner`` to the gossip node through ``executor`` (one thread)."""

    def __init__(
        self,
        learner: Learner,
        executor: ThreadPoolExecutor,
        *,
        tolerance: float = 0.0,
    ) -> None:
        self._learner = learner
        self._executor = executor
        self.tolerance = tolerance
        self.kept = 0
        self.undone = 0
        self.refused = 0
        self._score: tuple[int, float] | None = None
        self._spec = learner.weight_spec()
        self._norms: dict[str, float] = {}
        self.refresh()

    def refresh(self) -> None:
        """Copy the cheap reads; call on the learner thread."""
        self._embedding = self._learner.embedding()
        self._usage = self._learner.usage()
        self._records = int(self._learner.records)
        self._peer_models = self._learner.peer_models.status()

    def peer_models(self) -> dict[str, Any]:
        """What the peers' models earned, as of the last batch (a copy)."""
        return copy.deepcopy(self._peer_models)

    def update_norms(self) -> None:
        """Recompute the L2 norm of every expert's weights (learner thread)."""
        norms = {}
        for name in self._spec:
            params = self._learner.export_expert(name)
            total = sum(
                float(np.square(value, dtype=np.float64).sum())
                for value in params.values()
            )
            norms[name] = math.sqrt(total)
        self._norms = norms

    def embedding(self) -> np.ndarray:
        return self._embedding

    def expert_usage(self) -> dict[str, float]:
        return self._usage

    def records(self) -> int:
        return self._records

    def weight_spec(self) -> dict[str, dict[str, tuple[int, ...]]]:
        return self._spec

    def own_norm(self, expert: str) -> float:
        return self._norms.get(expert, 0.0)

    async def export_experts(
        self, names: list[str]
    ) -> dict[str, dict[str, np.ndarray]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._export, names)

    async def import_expert(
        self, expert: str, params: dict[str, np.ndarray], factor: float
    ) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self._import_checked, expert, params, factor
        )

    async def keep_peer_weights(
        self, updates: dict[str, dict[str, dict[str, np.ndarray]]]
    ) -> int:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._keep, updates)

    def _keep(self, updates: dict[str, dict[str, dict[str, np.ndarray]]]) -> int:
        """Store every peer's experts in its peer model (learner thread)."""
        kept = 0
        for peer, experts in updates.items():
            for expert, params in experts.items():
                try:
                    self._learner.store_peer_expert(peer, expert, params)
                except LearnerError:
                    self.refused += 1
                    continue
                kept += 1
        self._peer_models = self._learner.peer_models.status()
        return kept

    def _import_checked(
        self, expert: str, params: dict[str, np.ndarray], factor: float
    ) -> bool:
        """Blend, score on recent records, undo if worse (learner thread)."""
        learner = self._learner
        before = self._recent_score()
        saved = learner.export_expert(expert)
        learner.blend_expert(expert, params, factor)
        after = learner.score_recent()
        if math.isfinite(before) and not after <= before * (1.0 + self.tolerance):
            learner.blend_expert(expert, saved, 1.0)
            self.undone += 1
            return False
        self._score = (int(learner.records), after)
        self.kept += 1
        return True

    def _recent_score(self) -> float:
        # The score after the last kept import stands until the learner learns.
        if self._score is not None and self._score[0] == int(self._learner.records):
            return self._score[1]
        return self._learner.score_recent()

    def _export(self, names: list[str]) -> dict[str, dict[str, np.ndarray]]:
        exported = {name: self._learner.export_expert(name) for name in names}
        self.update_norms()
        return exported
