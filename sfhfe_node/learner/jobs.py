"""The experts' jobs on each batch, beside their training.

Functions of a :class:`Learner` called by :func:`training.learn_batch` and
:meth:`Learner.step`: the causal graph and the memory tiers take the labelled
rows (:func:`after_labels`); the memory expert's replay draw
(:func:`replay_draw`); the normaliser, outlier window, principal components
(:func:`learn_structure`); the drift expert's detector (:func:`watch_drift`),
whose events thaw the meta schedule and take an EWC snapshot
(:func:`snapshot`); the meta expert's schedule of learning rates
(:func:`schedule_update`, :func:`apply_rates`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from sfhfe_node.learner.replay import expand_codes, memory_rows, split_rows
from sfhfe_node.learner.views import FeatureViews

if TYPE_CHECKING:
    from sfhfe_node.learner.learner import Learner

__all__ = [
    "after_labels",
    "apply_rates",
    "learn_structure",
    "replay_draw",
    "schedule_update",
    "snapshot",
    "watch_drift",
]


def after_labels(
    learner: Learner,
    rows: np.ndarray,
    windows: np.ndarray,
    lags: np.ndarray,
    y: np.ndarray,
    codes: torch.Tensor,
    trends: np.ndarray,
    losses: np.ndarray,
) -> None:
    """Graph and memory updates from the labelled ``rows`` of a batch."""
    z, z_prev = windows[rows, -1], windows[rows, -2]
    encoded = learner._context.encode(
        np.stack([lags[rows, -1], y[rows]], axis=1), learner._target
    )
    U = np.concatenate([z, z_prev, encoded[:, 0], encoded[:, 1]], axis=1)
    learner._graph.learn_many(U.astype(np.float64))
    full, code_rows = memory_rows(rows, windows, lags, y, codes, trends)
    learner._memory.add(full, code_rows, losses)


def replay_draw(
    learner: Learner,
) -> tuple[FeatureViews, np.ndarray, np.ndarray] | None:
    """Views, targets and compressed-row flags of a replay draw, if due."""
    if (
        not learner.replay
        or learner.task == "none"
        or learner.batches % learner.replay_every
    ):
        return None
    drawn = learner._memory.sample(learner.replay_size)
    full = np.concatenate([drawn["recent"], drawn["anchors"]])
    codes = drawn["latent"]
    if not len(full) + len(codes):
        return None
    W, d = learner.window, learner.n_features
    T, L = learner._context.trend_width, learner._autoencoder.latent
    windows, trends, lags, targets = split_rows(full, W, d, T)
    autoencoder = learner._autoencoder
    with torch.no_grad():
        rebuilt = autoencoder.decode(torch.from_numpy(codes[:, :L])).numpy()
    code_windows, code_trends, code_lags, code_targets = expand_codes(
        codes, rebuilt, W, d, T, L
    )
    windows = np.concatenate([windows, code_windows])
    trends = np.concatenate([trends, code_trends])
    lags = np.concatenate([lags, code_lags])
    targets = np.concatenate([targets, code_targets]).astype(np.float64)
    if learner.task == "regression":
        targets = learner._target.transform_many(targets[:, None])[:, 0]
    with torch.no_grad():
        latent = autoencoder.encode(torch.from_numpy(windows[:, -1]))
    built = learner._views(windows, lags, latent, trends)
    compressed = np.arange(len(windows)) >= len(full)
    return built, targets.astype(np.float32), compressed


def learn_structure(
    learner: Learner,
    X: np.ndarray,
    z: torch.Tensor,
    broken: np.ndarray,
    outliers: np.ndarray,
) -> None:
    """Normaliser and outlier window every batch, PCA every few batches."""
    clean = ~broken & ~outliers
    scaler = learner._scaler
    if clean.any():
        scaler.learn_many(X[clean])
        if learner.batches % learner.structure_every == 0:
            learner._pca.learn_many(z[torch.from_numpy(np.flatnonzero(clean))])
    if not clean.all():
        left_out = X[~clean]
        valid = np.isfinite(left_out) & (np.abs(left_out) <= scaler.max_abs)
        scaler.imputed += int(valid.size - np.count_nonzero(valid))
    learner._outliers.learn_many(X if not broken.any() else X[~broken])


def watch_drift(
    learner: Learner, X: np.ndarray, errors: np.ndarray, broken: np.ndarray
) -> None:
    """Feed the drift detector; on a drift thaw the rates and snapshot."""
    event = learner._drift.update(errors, X[~broken], learner.records + len(X) - 1)
    if event is not None:
        learner._window_events += 1
        learner._schedule.thaw()
        apply_rates(learner)
        snapshot(learner)


def snapshot(learner: Learner) -> None:
    """Take an EWC snapshot of the memory expert (when EWC is on)."""
    if learner.ewc:
        bank = learner._bank
        learner._consolidation.snapshot(bank.flat, bank.optimizer.v)


def schedule_update(learner: Learner, losses: np.ndarray) -> None:
    """Feed the meta schedule each expert's mean loss; apply new rates."""
    if learner._schedule.update(losses):
        apply_rates(learner)


def apply_rates(learner: Learner) -> None:
    """Give every expert its base rate times its schedule factor."""
    base = np.array([learner._lr[name] for name in learner.expert_names])
    learner._bank.set_lrs(base * learner._schedule.effective())
