"""The coordinator (``sfhfe-node --role server``).

It stores the insights clients upload, learns meta-parameters from them
(:mod:`~sfhfe_node.coordinator.meta`), keeps everything in one SQLite file
(:mod:`~sfhfe_node.coordinator.store`) and serves it over HTTP
(:mod:`~sfhfe_node.coordinator.app`).
"""

from sfhfe_node.coordinator.app import CoordinatorConfig, make_app, run_coordinator
from sfhfe_node.coordinator.meta import MetaLearner, MetaParams
from sfhfe_node.coordinator.peers import cosine, rank_peers
from sfhfe_node.coordinator.service import Coordinator, CoordinatorState
from sfhfe_node.coordinator.store import MetaRecord, NodeRecord, Store, StoreState

__all__ = [
    "Coordinator",
    "CoordinatorConfig",
    "CoordinatorState",
    "MetaLearner",
    "MetaParams",
    "MetaRecord",
    "NodeRecord",
    "Store",
    "StoreState",
    "cosine",
    "make_app",
    "rank_peers",
    "run_coordinator",
]
