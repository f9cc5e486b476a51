"""The client's online learner: experts, router, normaliser and label encoder.

:class:`Learner` is the one object the client daemon uses; the other classes
are its parts, exported for tests and for tools that inspect them.
"""

from __future__ import annotations

from sfhfe_node.learner.experts import DEFAULT_EXPERTS, ExpertBank, ExpertSpec
from sfhfe_node.learner.geometry import OnlinePCA
from sfhfe_node.learner.labels import LabelEncoder
from sfhfe_node.learner.learner import (
    EMBEDDING_SIZE,
    STATE_FORMAT,
    Learner,
    Prediction,
    StepReport,
)
from sfhfe_node.learner.normalizer import OnlineStandardizer
from sfhfe_node.learner.optim import FlatAdam
from sfhfe_node.learner.router import Router
from sfhfe_node.learner.window import WindowStats

__all__ = [
    "DEFAULT_EXPERTS",
    "EMBEDDING_SIZE",
    "STATE_FORMAT",
    "ExpertBank",
    "ExpertSpec",
    "FlatAdam",
    "LabelEncoder",
    "Learner",
    "OnlinePCA",
    "OnlineStandardizer",
    "Prediction",
    "Router",
    "StepReport",
    "WindowStats",
]
