"""Aggregates the learner shows the node: its embedding, status, insight window
and memory footprint."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from sfhfe_node.learner.mixture import LOSS_CAP
from sfhfe_node.learner.normalizer import OnlineStandardizer

if TYPE_CHECKING:
    from sfhfe_node.learner.learner import Learner

__all__ = [
    "EMBEDDING_SIZE",
    "embedding",
    "memory_bytes_of",
    "status_of",
    "take_window_of",
]

EMBEDDING_SIZE = 16
_EXPLAINED = 0.9  # share of variance that defines the intrinsic dimension


def embedding(
    scaler: OnlineStandardizer,
    target: OnlineStandardizer,
    class_counts: np.ndarray,
    task: str,
    max_classes: int,
) -> np.ndarray:
    """A unit float32 [16] summary of a stream's distribution (the peer job).

    Slots 0-5 hold the running means of the raw features and slots 6-11
    their standard deviations (features folded onto the slots by index modulo
    6 and averaged, each value compressed by a signed ``log1p``); slots 12-15
    hold the label distribution (classes folded modulo 4) or, for
    regression, the target's compressed mean and deviation. Nodes with
    similar streams get a cosine similarity near 1. Before any data it is the
    constant unit vector.
    """
    vector = np.zeros(EMBEDDING_SIZE)
    if scaler.count.any():
        slots = np.arange(scaler.n_features) % 6
        per_slot = np.maximum(np.bincount(slots, minlength=6), 1)
        mean = np.bincount(slots, _squash(scaler.mean), minlength=6)
        std = np.bincount(slots, _squash(scaler.std), minlength=6)
        vector[0:6] = mean / per_slot
        vector[6:12] = std / per_slot
    if task == "classification" and class_counts.any():
        folded = np.bincount(np.arange(max_classes) % 4, class_counts, 4)
        vector[12:16] = folded / class_counts.sum()
    elif task == "regression" and target.count.any():
        vector[12] = _squash(target.mean)[0]
        vector[13] = _squash(target.std)[0]
    norm = float(np.linalg.norm(vector))
    if not math.isfinite(norm) or norm == 0.0:
        return np.full(EMBEDDING_SIZE, 1.0 / math.sqrt(EMBEDDING_SIZE), np.float32)
    return (vector / norm).astype(np.float32)


def status_of(learner: Learner) -> dict[str, Any]:
    """Every expert's job output, as aggregates for the node's status page."""
    names = learner.expert_names
    schedule = learner._schedule
    multipliers = schedule.effective()
    usage = learner.usage()
    rates = learner.learning_rates()
    explained = learner._pca.explained_variance_ratio
    cumulative = np.cumsum(explained)
    reached = np.flatnonzero(cumulative >= _EXPLAINED)
    intrinsic = int(reached[0]) + 1 if len(reached) else None
    drift = learner._drift
    memory = learner._memory
    anomaly = learner._autoencoder.stats()
    return {
        "records": learner.records,
        "task": learner.task,
        "experts": {
            name: {
                "usage": usage[name],
                "lr": rates[name],
                "frozen": bool(multipliers[i] == 0.0),
                "loss": float(schedule.fast[i]),
            }
            for i, name in enumerate(names)
        },
        "geometry": {
            "explained_variance": [float(v) for v in explained],
            "intrinsic_dimension": intrinsic,
        },
        "reconstruction": {
            "anomaly_mean": anomaly["mean"],
            "anomaly_std": anomaly["std"],
            "records_scored": learner._autoencoder.scored,
        },
        "causal": {
            "edges": [
                [source, destination, weight]
                for source, destination, weight in learner._graph.edges(
                    learner.feature_names, learner.target_name
                )
            ],
        },
        "drift": {
            "events": drift.total,
            "active": drift.drift_detected,
            "max_divergence": float(drift.last_divergence.max(initial=0.0)),
        },
        "governance": {
            "violations": dict(learner._governor.violations),
            "excluded": learner._excluded,
        },
        "consistency": {"quarantined": learner._quarantined},
        "peer": {"embedding": [float(v) for v in learner.embedding()]},
        "meta": {
            "multipliers": {
                name: float(multipliers[i]) for i, name in enumerate(names)
            },
            "frozen": [name for i, name in enumerate(names) if multipliers[i] == 0.0],
            "freezes": schedule.freezes,
        },
        "memory": {
            "tiers": memory.sizes(),
            "replayed": memory.replayed,
            "ewc_snapshots": learner._consolidation.snapshots,
            "bytes": learner.memory_bytes(),
        },
        "router": {
            "entropy": learner.routing_entropy(),
            "ignored_rewards": learner._router.ignored_rewards,
        },
    }


def take_window_of(learner: Learner) -> dict[str, Any]:
    """The learner's aggregates since the previous call, for an insight; then
    its window statistics and drift-event count are reset."""
    stats = learner._window_stats
    start, end = stats.halves()
    records = max(stats.records, 1)
    rates = learner.learning_rates()
    experts = {
        name: {
            "lr": rates[name],
            "loss_start": float(min(start[i], LOSS_CAP)),
            "loss_end": float(min(end[i], LOSS_CAP)),
            "usage": min(1.0, float(stats.routed[i]) / records),
            "samples": int(stats.samples[i]),
        }
        for i, name in enumerate(learner.expert_names)
    }
    labelled = stats.labelled
    accuracy = None
    if learner.task == "classification" and labelled:
        accuracy = stats.correct / labelled
    window = {
        "records": stats.records,
        "loss": min(stats.loss_sum / labelled, LOSS_CAP) if labelled else 0.0,
        "accuracy": accuracy,
        "experts": experts,
        "drift": {"events": learner._window_events, "active": learner.drift_active},
        "memory_bytes": learner.memory_bytes(),
    }
    stats.reset()
    learner._window_events = 0
    return window


def memory_bytes_of(learner: Learner) -> int:
    """Approximate bytes held by the learner's state (see its ``memory_bytes``)."""
    router = learner._router
    arrays = (router.S, router.b, learner._context.history_x, learner._scaler.mean)
    return (
        learner._bank.nbytes()
        + 3 * 4 * router.gate.numel()
        + sum(a.nbytes for a in arrays)
        + 4 * learner._pca.components.numel()
        + 5 * 4 * learner._autoencoder.flat.numel()
        + learner._graph.outer.nbytes
        + learner._memory.nbytes()
        + learner._outliers.buffer.nbytes
        + 2 * 4 * learner._bank.flat.numel()
        + learner._window_stats.nbytes()
    )


def _squash(values: np.ndarray) -> np.ndarray:
    return np.sign(values) * np.log1p(np.abs(values))
