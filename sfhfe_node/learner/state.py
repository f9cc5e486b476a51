"""A learner's saved state: its format, its contents and how it is restored.

The state is a dict of tensors and plain values, safe to load with
``torch.load(..., weights_only=True)``. It carries the configuration it was
saved with so that it is only restored into a learner built alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from sfhfe_node.learner.learner import Learner

__all__ = ["STATE_FORMAT", "config_of", "restore_state", "state_of"]

STATE_FORMAT = 3


def state_of(learner: Learner) -> dict[str, Any]:
    """The whole state of ``learner``, as tensors and plain values."""
    return {
        "format": STATE_FORMAT,
        "config": config_of(learner),
        "records": learner.records,
        "batches": learner.batches,
        "lr": dict(learner._lr),
        "scaler": learner._scaler.state_dict(),
        "target": learner._target.state_dict(),
        "pca": learner._pca.state_dict(),
        "autoencoder": learner._autoencoder.state_dict(),
        "graph": learner._graph.state_dict(),
        "governor": learner._governor.state_dict(),
        "outliers": learner._outliers.state_dict(),
        "drift": learner._drift.state_dict(),
        "bank": learner._bank.state_dict(),
        "router": learner._router.state_dict(),
        "memory": learner._memory.state_dict(),
        "schedule": learner._schedule.state_dict(),
        "consolidation": learner._consolidation.state_dict(),
        "context": learner._context.state_dict(),
        "class_counts": torch.from_numpy(learner._class_counts.copy()),
        "seen": learner._seen,
        "counters": [
            learner._window_events, learner._quarantined, learner._excluded
        ],
        "window": learner._window_stats.state_dict(),
        "peer_models": learner.peer_models.state_dict(),
    }


def restore_state(learner: Learner, state: dict[str, Any]) -> None:
    """Load ``state`` into ``learner``, unchecked.

    Raises whatever a malformed part raises (``KeyError``, ``ValueError``,
    ...), possibly after restoring other parts: callers try it on a scratch
    learner first.
    """
    counts = np.asarray(state["class_counts"], dtype=np.float64).copy()
    if counts.shape != (learner.max_classes,):
        raise ValueError(f"class counts have shape {counts.shape}")
    lr = {name: float(state["lr"][name]) for name in learner.expert_names}
    learner._scaler.load_state_dict(state["scaler"])
    learner._target.load_state_dict(state["target"])
    learner._pca.load_state_dict(state["pca"])
    learner._autoencoder.load_state_dict(state["autoencoder"])
    learner._graph.load_state_dict(state["graph"])
    learner._governor.load_state_dict(state["governor"])
    learner._outliers.load_state_dict(state["outliers"])
    learner._drift.load_state_dict(state["drift"])
    learner._bank.load_state_dict(state["bank"])
    learner._router.load_state_dict(state["router"])
    learner._memory.load_state_dict(state["memory"])
    learner._schedule.load_state_dict(state["schedule"])
    learner._consolidation.load_state_dict(state["consolidation"])
    learner._context.load_state_dict(state["context"])
    learner._window_stats.load_state_dict(state["window"])
    # states saved before peer models existed hold none
    empty = {"slots": {}, "helped": 0, "hurt": 0}
    learner.peer_models.load_state_dict(state.get("peer_models", empty))
    learner._class_counts = counts
    learner._lr = lr
    learner._seen = int(state["seen"])
    learner._window_events, learner._quarantined, learner._excluded = (
        int(v) for v in state["counters"]
    )
    learner.records = int(state["records"])
    learner.batches = int(state["batches"])


def config_of(learner: Learner) -> dict[str, Any]:
    """The settings a state must have been saved with to be restored."""
    return {
        "n_features": learner.n_features,
        "task": learner.task,
        "max_classes": learner.max_classes,
        "top_k": learner.top_k,
        "use_label_context": learner.use_label_context,
        "experts": list(learner.expert_names),
        "window": learner.window,
        "n_components": learner._pca.n_components,
        "latent": learner._autoencoder.latent,
        "routing": learner.routing,
        "feature_names": list(learner.feature_names),
    }
