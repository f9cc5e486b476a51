"""The client's online learner: ten experts, their jobs, router and memory.

:class:`Learner` is the one object the client daemon uses; the other classes
are its parts, exported for tests and for tools that inspect them.
"""

from __future__ import annotations

from sfhfe_node.learner.context import StreamContext
from sfhfe_node.learner.drift import (
    AdaptiveWindow,
    DriftEvent,
    DriftMonitor,
    FeatureDivergence,
)
from sfhfe_node.learner.exchange import (
    blend_weights,
    check_blend,
    export_weights,
    finite_items,
    weight_spec_of,
)
from sfhfe_node.learner.experts import DEFAULT_EXPERTS, ExpertBank, ExpertSpec
from sfhfe_node.learner.geometry import OnlinePCA
from sfhfe_node.learner.governance import Governor, OutlierDetector
from sfhfe_node.learner.inputs import (
    check_features,
    check_options,
    check_targets,
    labelled_rows,
)
from sfhfe_node.learner.jobs import (
    after_labels,
    apply_rates,
    learn_structure,
    replay_draw,
    schedule_update,
    snapshot,
    watch_drift,
)
from sfhfe_node.learner.labels import LabelEncoder
from sfhfe_node.learner.learner import (
    EMBEDDING_SIZE,
    STATE_FORMAT,
    Learner,
    Prediction,
    StepReport,
)
from sfhfe_node.learner.memory import TIERS, Consolidation, TieredMemory
from sfhfe_node.learner.meta import MetaSchedule
from sfhfe_node.learner.mixture import (
    expert_gradient,
    expert_losses,
    mix,
    mixture_gradient,
    mixture_loss,
)
from sfhfe_node.learner.normalizer import OnlineStandardizer
from sfhfe_node.learner.optim import FlatAdam
from sfhfe_node.learner.peer_models import PeerModels
from sfhfe_node.learner.replay import expand_codes, memory_rows, split_rows
from sfhfe_node.learner.router import Router
from sfhfe_node.learner.rules import Rules, load_rules, parse_rules
from sfhfe_node.learner.state import config_of, restore_state, state_of
from sfhfe_node.learner.structure import Autoencoder, LaggedGraph
from sfhfe_node.learner.summary import (
    embedding,
    memory_bytes_of,
    status_of,
    take_window_of,
)
from sfhfe_node.learner.training import PredictedBatch, Replayed, learn_batch
from sfhfe_node.learner.views import FeatureViews, build_views
from sfhfe_node.learner.window import WindowStats

__all__ = [
    "DEFAULT_EXPERTS",
    "EMBEDDING_SIZE",
    "STATE_FORMAT",
    "TIERS",
    "AdaptiveWindow",
    "Autoencoder",
    "Consolidation",
    "DriftEvent",
    "DriftMonitor",
    "ExpertBank",
    "ExpertSpec",
    "FeatureDivergence",
    "FeatureViews",
    "FlatAdam",
    "Governor",
    "LabelEncoder",
    "LaggedGraph",
    "Learner",
    "MetaSchedule",
    "OnlinePCA",
    "OnlineStandardizer",
    "OutlierDetector",
    "PeerModels",
    "PredictedBatch",
    "Prediction",
    "Replayed",
    "Router",
    "Rules",
    "StepReport",
    "StreamContext",
    "TieredMemory",
    "WindowStats",
    "after_labels",
    "apply_rates",
    "blend_weights",
    "build_views",
    "check_blend",
    "check_features",
    "check_options",
    "check_targets",
    "config_of",
    "embedding",
    "expand_codes",
    "expert_gradient",
    "expert_losses",
    "export_weights",
    "finite_items",
    "labelled_rows",
    "learn_batch",
    "learn_structure",
    "load_rules",
    "memory_bytes_of",
    "memory_rows",
    "mix",
    "mixture_gradient",
    "mixture_loss",
    "parse_rules",
    "replay_draw",
    "restore_state",
    "schedule_update",
    "snapshot",
    "split_rows",
    "state_of",
    "status_of",
    "take_window_of",
    "watch_drift",
    "weight_spec_of",
]
