"""The training half of :meth:`Learner.step`: learning one predicted batch.

:meth:`Learner.step` predicts a batch and hands what it computed on the way
(a :class:`PredictedBatch`) to :func:`learn_batch`, which screens the rows
(governance rules, outliers), trains the experts, the gate and the bandit on
the labelled ones together with the replay rows, runs the experts' jobs
(:mod:`sfhfe_node.learner.jobs`) and moves the stream context on. The
gradients are written out by hand (:func:`expert_gradient`,
:func:`mixture_gradient`, :meth:`ExpertBank.backward`); only the autoencoder
keeps autograd, on the batches where the structure learns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sfhfe_node.learner import jobs
from sfhfe_node.learner.inputs import labelled_rows
from sfhfe_node.learner.mixture import (
    LOSS_CAP,
    PROBA_FLOOR,
    expert_gradient,
    mixture_gradient,
)
from sfhfe_node.learner.records import Prediction, StepReport
from sfhfe_node.learner.views import FeatureViews

if TYPE_CHECKING:
    from sfhfe_node.learner.learner import Learner

__all__ = ["PredictedBatch", "Replayed", "learn_batch"]

# replayed rows: their views, float32 targets and which rows were compressed
Replayed = tuple[FeatureViews, np.ndarray, np.ndarray]


@dataclass
class PredictedBatch:
    """A batch as its prediction left it, ready to be learned.

    ``X`` and ``y`` are the batch; ``windows``, ``lags``, ``codes`` and
    ``ema`` its stream context (the moving averages after it); ``built`` its
    feature views; ``tracked`` the autoencoder's errors with their gradient on
    the batches where the structure learns (None otherwise); ``active`` and
    ``weights`` the router's choices and gate; ``outputs`` every expert's
    outputs on the batch's rows then the replayed ones, with the ``tape`` of
    that pass; ``probs`` the experts' class probabilities of the batch's rows
    (None outside classification); ``replayed`` the replay draw, if any.
    """

    X: np.ndarray
    y: np.ndarray
    windows: np.ndarray
    lags: np.ndarray
    built: FeatureViews
    codes: torch.Tensor
    tracked: torch.Tensor | None
    active: np.ndarray
    outputs: torch.Tensor
    tape: list[Any]
    weights: torch.Tensor
    prediction: Prediction
    replayed: Replayed | None
    ema: np.ndarray
    probs: torch.Tensor | None


@dataclass
class _Learned:
    """What training on the labelled rows measured."""

    expert_sums: np.ndarray  # each expert's summed prequential loss
    samples: np.ndarray  # rows each expert learned from with some weight
    mixture: torch.Tensor  # the mixture's loss per labelled row


@torch.no_grad()
def learn_batch(learner: Learner, batch: PredictedBatch) -> StepReport:
    """Learn a predicted batch; return what the step did."""
    X, y, prediction = batch.X, batch.y, batch.prediction
    n = len(X)
    n_experts = len(learner.expert_names)
    imputed_before = learner._scaler.imputed
    labelled = labelled_rows(
        y, learner.task, learner.max_classes, learner._target.max_abs
    )
    broken, outliers = _screen(learner, batch, labelled)
    rows = np.flatnonzero(labelled & ~broken)
    metric_rows = np.flatnonzero(labelled)
    loss_sum, correct, errors_seen = 0.0, 0, prediction.anomaly
    if len(metric_rows) and learner.task == "classification":
        targets = y[metric_rows].astype(np.int64)
        picked = prediction.proba[metric_rows, targets].astype(np.float64)
        loss_sum = float(-np.log(np.maximum(picked, PROBA_FLOOR)).sum())
        hits = prediction.labels[metric_rows] == targets
        correct = int(hits.sum())
        errors_seen = (~hits).astype(np.float64)
    expert_sums, samples = np.zeros(n_experts), np.zeros(n_experts)
    if len(rows):
        learned = _train(learner, batch, rows, outliers)
        expert_sums, samples = learned.expert_sums, learned.samples
        if learner.task != "classification":
            scaled = learned.mixture.clamp(max=LOSS_CAP)
            loss_sum = float(scaled.sum())
            errors_seen = scaled.double().numpy()
        jobs.after_labels(
            learner, rows, batch.windows, batch.lags, y, batch.codes,
            batch.built.trends, learned.mixture.double().numpy(),
        )
        jobs.schedule_update(learner, expert_sums / len(rows))
    _advance(learner, batch, broken, outliers, errors_seen)
    routed_rows = np.bincount(
        batch.active[:, : learner.top_k].ravel(), minlength=n_experts
    ).astype(float)
    learner._window_stats.add(
        n, len(metric_rows), loss_sum, correct, expert_sums, routed_rows, samples
    )
    scale = max(len(rows), 1)
    return StepReport(
        records=n,
        learned=len(rows),
        loss=loss_sum / max(len(metric_rows), 1),
        correct=correct,
        imputed=learner._scaler.imputed - imputed_before,
        expert_losses={
            name: float(expert_sums[i] / scale)
            for i, name in enumerate(learner.expert_names)
        },
        excluded=int((broken & labelled).sum()),
        quarantined=int(outliers.sum()),
        replayed=0 if batch.replayed is None else len(batch.replayed[1]),
    )


def _screen(
    learner: Learner, batch: PredictedBatch, labelled: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows breaking a rule and outlier rows (bool [n] each); counts them
    and takes the autoencoder's gradient on the clean rows."""
    X, y = batch.X, batch.y
    governor = learner._governor
    broken = governor.check_records(X) if governor.active else None
    if broken is not None:
        broken |= governor.check_targets(y, labelled, learner.task)
    else:
        broken = np.zeros(len(X), dtype=bool)
    outliers = learner._outliers.flag(X)
    learner._quarantined += int(outliers.sum())
    learner._excluded += int((broken & labelled).sum())
    clean = np.flatnonzero(~broken & ~outliers)
    if batch.tracked is not None and len(clean):
        with torch.enable_grad():
            batch.tracked[torch.from_numpy(clean)].mean().backward()
        learner._autoencoder.observe(batch.prediction.anomaly[clean])
    return broken, outliers


def _train(
    learner: Learner, batch: PredictedBatch, rows: np.ndarray, outliers: np.ndarray
) -> _Learned:
    """One step of the experts, the gate and the bandit on the labelled
    ``rows`` and the replayed ones."""
    n, outputs, replayed = len(batch.X), batch.outputs, batch.replayed
    probs = batch.probs
    mask_before = learner._mask()
    target_t = _training_targets(learner, batch.y, rows)
    if learner._mask() is not mask_before:  # a new class: mask again
        probs = None
    if replayed is not None:
        target_t = torch.cat([target_t, torch.from_numpy(replayed[1])])
    total = len(rows) + (0 if replayed is None else len(replayed[1]))
    if len(rows) == n:  # every row learns: slices instead of gathers
        picked_out, learned = outputs, outputs[:, :n]
        gate, routed = batch.weights, batch.active
        learned_probs = probs
    else:
        learned = outputs[:, rows]
        picked_out = torch.cat([learned, outputs[:, n:]], dim=1)
        gate, routed = batch.weights[rows], batch.active[rows]
        learned_probs = None if probs is None else probs[:, rows]
    row_weights = _row_weights(learner, batch.active, rows, outliers, replayed, total)
    mask = learner._mask() if learner.task == "classification" else None
    plain_losses, grad = expert_gradient(
        picked_out, target_t, mask, learner._role["consistency"],
        row_weights.div_(len(rows)),
    )
    if len(rows) != n:  # back to the rows of the forward pass
        kept = np.concatenate([rows, np.arange(n, outputs.shape[1])])
        grad = outputs.new_zeros(outputs.shape).index_copy_(
            1, torch.from_numpy(kept), grad
        )
    if learned_probs is None:
        learned_probs = learner._probs(learned)
    routed_t = torch.from_numpy(routed)
    mixture, gate_grad = mixture_gradient(
        learned, gate, routed_t, target_t[: len(rows)], learned_probs
    )
    bank = learner._bank
    bank.flat.grad = bank.backward(batch.tape, grad)
    learner._consolidation.penalise(bank.flat)
    bank.step()
    current = plain_losses[:, : len(rows)].clamp(max=LOSS_CAP).double().numpy()
    if learner.routing == "bandit":
        context = batch.built.context[rows]
        learner._router.learn_gate(
            torch.from_numpy(context).float(), routed_t, gate, gate_grad
        )
        rewards = -np.take_along_axis(current.T, routed, axis=1)
        learner._router.learn_many(context, routed, rewards)
    samples = (row_weights[:, : len(rows)] > 0).sum(dim=1).double().numpy()
    return _Learned(current.sum(axis=1), samples, mixture)


def _training_targets(
    learner: Learner, y: np.ndarray, rows: np.ndarray
) -> torch.Tensor:
    """The learned rows' targets as the losses take them (class indices or
    standardised values); counts the classes seen."""
    if learner.task == "classification":
        targets = y[rows].astype(np.int64)
        np.add.at(learner._class_counts, targets, 1.0)
        learner._seen = max(learner._seen, int(targets.max()) + 1)
        return torch.from_numpy(targets.astype(np.float32))
    if learner.task == "none":
        return torch.from_numpy(y[rows].astype(np.float32))
    learner._target.learn_many(y[rows, None])
    return torch.from_numpy(learner._target.transform_many(y[rows, None])[:, 0])


def _row_weights(
    learner: Learner,
    active: np.ndarray,
    rows: np.ndarray,
    outliers: np.ndarray,
    replayed: Replayed | None,
    total: int,
) -> torch.Tensor:
    """Each expert's loss weight on each learned row then replayed row,
    float32 [E, total]: 1 where routed, ``idle_weight`` elsewhere, 0 for the
    consistency expert on outliers; on replayed rows ``replay_weight``, 1
    for the memory expert and 0 for history views a compressed row lacks."""
    shape = (len(learner.expert_names), total)
    weights = np.full(shape, learner.idle_weight, dtype=np.float32)
    chosen = active[rows, : learner.top_k]
    weights[chosen.T, np.arange(len(rows))] = 1.0
    role = learner._role
    if role["consistency"] >= 0:
        weights[role["consistency"], : len(rows)][outliers[rows]] = 0.0
    if replayed is not None:
        weights[:, len(rows) :] = learner.replay_weight
        block = weights[:, len(rows) :]
        block[np.ix_(learner._history_experts, replayed[2])] = 0.0
        if role["memory"] >= 0:
            weights[role["memory"], len(rows) :] = 1.0
    return torch.from_numpy(weights)


def _advance(
    learner: Learner,
    batch: PredictedBatch,
    broken: np.ndarray,
    outliers: np.ndarray,
    errors_seen: np.ndarray,
) -> None:
    """Everything a batch changes besides the experts: the autoencoder's
    step, routing counts, structure, drift, stream context and counters."""
    X, n = batch.X, len(batch.X)
    if batch.tracked is not None and (~broken & ~outliers).any():
        learner._autoencoder.step()
    learner._router.count_routes(batch.active[:, : learner.top_k])
    jobs.learn_structure(learner, X, batch.built.z, broken, outliers)
    jobs.watch_drift(learner, X, errors_seen, broken)
    labels = batch.y if learner.task != "none" else np.full(n, np.nan)
    learner._context.advance(X, labels, batch.ema)
    learner.records += n
    learner.batches += 1
    every = learner.consolidate_every
    if learner.records // every > (learner.records - n) // every:
        jobs.snapshot(learner)
