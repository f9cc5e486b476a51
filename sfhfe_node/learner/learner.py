"""The learner a client node runs: experts, router and stream context."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from sfhfe_node.errors import LearnerError
from sfhfe_node.learner.experts import DEFAULT_EXPERTS, ExpertBank, ExpertSpec
from sfhfe_node.learner.geometry import OnlinePCA
from sfhfe_node.learner.normalizer import OnlineStandardizer
from sfhfe_node.learner.router import Router
from sfhfe_node.learner.window import WindowStats

__all__ = ["Learner", "Prediction", "StepReport", "EMBEDDING_SIZE", "STATE_FORMAT"]

EMBEDDING_SIZE = 16
STATE_FORMAT = 1
TASKS = ("classification", "regression")

_MASKED = -30.0  # logit offset of classes not seen yet
_PROBA_FLOOR = 1e-7  # floor of a probability inside a log-loss
_LOSS_CAP = 1e6  # per-row losses are clipped here, far below the schema's 1e9
_ROUTER_FEATURES = 16  # features beyond this are randomly projected for the router


@dataclass
class Prediction:
    """The learner's prediction for every row of a batch.

    ``labels`` (int64 [n]) and ``proba`` (float32 [n, max_classes]) are set
    for classification, ``values`` (float64 [n]) for regression. ``experts``
    (int64 [n, top_k]) holds the indices of the experts the router activated,
    best first, and ``anomaly`` (float64 [n], >= 0) the record's squared
    distance from the principal subspace of the stream, in standardised units
    per feature.
    """

    labels: np.ndarray | None
    values: np.ndarray | None
    proba: np.ndarray | None
    experts: np.ndarray
    anomaly: np.ndarray


@dataclass
class StepReport:
    """What one learning step did.

    ``loss`` is the mixture's mean prequential loss over the labelled rows
    (log-loss, or squared error in standardised target units; 0.0 without
    labelled rows), ``correct`` the rows classified right, ``learned`` the
    labelled rows learned from, ``records`` all rows, ``imputed`` the cells
    imputed, and ``expert_losses`` each expert's mean prequential loss.
    """

    records: int
    learned: int
    loss: float
    correct: int
    imputed: int
    expert_losses: dict[str, float]


@dataclass
class _Batch:
    X: np.ndarray
    z: torch.Tensor
    views: dict[str, torch.Tensor]
    context: np.ndarray


class Learner:
    """A mixture of experts learning test-then-train from one data stream.

    Every row is standardised online (:class:`OnlineStandardizer`), turned
    into a few feature views (the record and its label context; its online
    principal components; a lagged window of the last ``window`` records and
    ``lags`` labels), and scored by every expert in one batched pass
    (:class:`ExpertBank`). A contextual bandit (:class:`Router`) activates
    ``top_k`` experts per row and a gate mixes their predictions.

    Training: every expert learns from every labelled row of the batch, with
    weight 1 on the rows routed to it and ``idle_weight`` on the others. The
    experts run batched anyway, so this costs nothing extra, and it keeps
    every expert ready for the moment the router turns to it. Each expert has
    its own Adam learning rate, which :meth:`apply_meta` moves toward the
    coordinator's. The router earns, per active expert, the negative of the
    expert's loss on the row; the gate learns from the mixture's loss.

    Label context: with ``use_label_context`` the label (or target) of the
    previous row is an input of row ``i``: in :meth:`step` it is ``y[i - 1]``
    (the previous batch's last label for row 0), never ``y[i]``; in
    :meth:`predict_many` every row gets the last label seen.

    Parameters:
        n_features: number of feature columns of every batch.
        task: ``"classification"`` (``y`` holds class indices, negative or
            NaN when unknown) or ``"regression"`` (``y`` holds real targets,
            NaN when unknown).
        max_classes: width of every classifier's output (default 16); a
            class index at or above it is treated as unknown.
        top_k: experts active per row (default 3). More makes the mixture
            smoother and the bandit's feedback richer, fewer specialises more.
        seed: seeds the initial weights and the router's random draws; two
            learners with the same seed and stream compute the same numbers.
        use_label_context: feed previous labels to the experts (default True).
        experts: the expert specs (default :data:`DEFAULT_EXPERTS`).
        window: records in the temporal expert's window, current one included
            (default 4).
        lags: previous labels in the temporal expert's window (default 4).
        n_components: principal components of the geometry expert (default 3,
            at most ``n_features``).
        idle_weight: weight of the rows not routed to an expert in its loss
            (default 1.0); 0 trains an expert on its routed rows only.
        lr_floor, lr_ceiling: bounds of every learning rate (default 1e-5
            and 1.0).
        router_options: keyword arguments passed on to :class:`Router`
            (``alpha``, ``epsilon``, ``discount``, ...).

    Attributes:
        expert_names: the experts' names, in the order of every per-expert
            array (``Prediction.experts`` holds indices into it).
        records: rows passed to :meth:`step` or :meth:`learn_many` so far,
            labelled or not.

    Limitations: drift detection, the three memory tiers and EWC are not part
    of this learner yet, so :meth:`take_window` always reports no drift. The
    learner is not thread-safe: the caller serialises its calls.

    Example::

        >>> learner = Learner(2, seed=1)
        >>> X = np.array([[0.1, 0.2], [0.3, np.nan]])
        >>> prediction, report = learner.step(X, np.array([0.0, 1.0]))
        >>> prediction.labels.shape, report.learned
        ((2,), 2)
    """

    def __init__(
        self,
        n_features: int,
        *,
        task: str = "classification",
        max_classes: int = 16,
        top_k: int = 3,
        seed: int = 0,
        use_label_context: bool = True,
        experts: tuple[ExpertSpec, ...] = DEFAULT_EXPERTS,
        window: int = 4,
        lags: int = 4,
        n_components: int = 3,
        idle_weight: float = 1.0,
        lr_floor: float = 1e-5,
        lr_ceiling: float = 1.0,
        router_options: dict[str, float] | None = None,
    ) -> None:
        if task not in TASKS:
            raise LearnerError(
                f"task {task!r} is not supported; use {' or '.join(TASKS)}"
            )
        if n_features < 1 or max_classes < 2 or window < 1 or lags < 1:
            raise LearnerError(
                f"n_features={n_features}, max_classes={max_classes}, window={window} "
                f"and lags={lags} must be positive (max_classes at least 2)"
            )
        if not 0 < lr_floor <= lr_ceiling <= 10.0:
            raise LearnerError(
                f"need 0 < lr_floor <= lr_ceiling <= 10, got {lr_floor}, {lr_ceiling}"
            )
        self._options: dict[str, Any] = dict(
            task=task, max_classes=max_classes, top_k=top_k, seed=seed,
            use_label_context=use_label_context, experts=experts, window=window,
            lags=lags, n_components=n_components, idle_weight=idle_weight,
            lr_floor=lr_floor, lr_ceiling=lr_ceiling,
            router_options=dict(router_options or {}),
        )
        self.n_features = n_features
        self.task = task
        self.max_classes = max_classes
        self.top_k = top_k
        self.seed = seed
        self.use_label_context = use_label_context
        self.window = window
        self.lags = lags
        self.idle_weight = idle_weight
        self.lr_floor = lr_floor
        self.lr_ceiling = lr_ceiling
        self.expert_names: tuple[str, ...] = tuple(spec.name for spec in experts)
        self.records = 0

        classify = task == "classification"
        self._n_outputs = max_classes if classify else 1
        self._label_width = (max_classes if classify else 1) if use_label_context else 0
        generator = torch.Generator().manual_seed(seed)
        self._scaler = OnlineStandardizer(n_features)
        self._target = OnlineStandardizer(1)
        self._pca = OnlinePCA(n_features, min(n_components, n_features))
        self._history_x = np.full((window - 1, n_features), np.nan)
        self._history_y = np.full(lags, np.nan)
        self._class_counts = np.zeros(max_classes)
        self._seen = 0
        if n_features > _ROUTER_FEATURES:
            shape = (n_features, _ROUTER_FEATURES)
            projection = torch.randn(shape, generator=generator)
            self._projection = (projection / math.sqrt(n_features)).double().numpy()
        else:
            self._projection = None
        widths = {
            "plain": n_features + self._label_width,
            "geometry": self._pca.n_components + self._label_width,
            "temporal": window * n_features + lags * self._label_width,
        }
        self._bank = ExpertBank(experts, widths, self._n_outputs, generator)
        context_dim = 1 + self._label_width + min(n_features, _ROUTER_FEATURES)
        self._router = Router(
            len(experts), context_dim, top_k=top_k, generator=generator,
            **dict(router_options or {}),
        )
        self._lr = {spec.name: float(spec.lr) for spec in experts}
        self._geometry = tuple(spec.name for spec in experts if spec.view == "geometry")
        self._window_stats = WindowStats(len(experts))

    # Prediction and learning

    @torch.no_grad()
    def predict_many(self, X: np.ndarray) -> Prediction:
        """Predict every row of ``X`` [n, n_features]; changes no state."""
        X = self._check_X(X)
        if not len(X):
            return self._empty_prediction()
        batch = self._prepare(X, None)
        active = self._router.route(batch.context, explore=False)
        outputs = self._bank.forward(batch.views)
        weights = self._router.mix_weights(
            torch.from_numpy(batch.context).float(), torch.from_numpy(active)
        )
        return self._predict(batch, active, outputs, weights)

    @torch.no_grad()
    def predict_experts(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Each expert's own prediction for every row; changes no state.

        Class probabilities [n, max_classes] for classification, target
        values [n] for regression.
        """
        X = self._check_X(X)
        if not len(X):
            width = self.max_classes if self.task == "classification" else 0
            empty = np.zeros((0, width)) if width else np.zeros(0)
            return {name: empty.copy() for name in self.expert_names}
        batch = self._prepare(X, None)
        outputs = self._bank.forward(batch.views)
        if self.task == "classification":
            probs = torch.softmax(outputs + self._mask(self._seen), dim=2).numpy()
            return {name: probs[i] for i, name in enumerate(self.expert_names)}
        values = outputs[:, :, 0].double().numpy()
        values = values * float(self._target.std[0]) + float(self._target.mean[0])
        return {name: values[i] for i, name in enumerate(self.expert_names)}

    def step(self, X: np.ndarray, y: np.ndarray) -> tuple[Prediction, StepReport]:
        """Predict every row of ``X``, then learn from ``(X, y)``.

        Rows whose ``y`` is unknown (negative or NaN for classification, NaN
        for regression) are predicted but not learned.
        """
        X = self._check_X(X)
        y = self._check_y(y, len(X))
        if not len(X):
            report = StepReport(0, 0, 0.0, 0, 0, dict.fromkeys(self.expert_names, 0.0))
            return self._empty_prediction(), report
        batch = self._prepare(X, y)
        active = self._router.route(batch.context, explore=True)
        context = torch.from_numpy(batch.context).float()
        active_t = torch.from_numpy(active)
        outputs = self._bank.forward(batch.views)
        weights = self._router.mix_weights(context, active_t)
        prediction = self._predict(batch, active, outputs.detach(), weights.detach())
        report = self._learn(batch, y, active, active_t, outputs, weights, prediction)
        return prediction, report

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> StepReport:
        """Learn from ``(X, y)``; :meth:`step` without the prediction."""
        return self.step(X, y)[1]

    def _empty_prediction(self) -> Prediction:
        experts = np.zeros((0, self.top_k), dtype=np.int64)
        anomaly = np.zeros(0)
        if self.task == "classification":
            proba = np.zeros((0, self.max_classes), dtype=np.float32)
            return Prediction(np.zeros(0, np.int64), None, proba, experts, anomaly)
        return Prediction(None, np.zeros(0), None, experts, anomaly)

    def _predict(
        self,
        batch: _Batch,
        active: np.ndarray,
        outputs: torch.Tensor,
        weights: torch.Tensor,
    ) -> Prediction:
        anomaly = self._pca.residual(batch.z).double().numpy()
        index = torch.from_numpy(active)
        if self.task == "classification":
            probs = torch.softmax(outputs + self._mask(self._seen), dim=2)
            mixed = _mix(probs, index, weights)
            proba = mixed.numpy().astype(np.float32)
            labels = proba.argmax(axis=1).astype(np.int64)
            return Prediction(labels, None, proba, active, anomaly)
        mixed = _mix(outputs, index, weights)[:, 0].double().numpy()
        values = mixed * float(self._target.std[0]) + float(self._target.mean[0])
        return Prediction(None, values, None, active, anomaly)

    def _learn(
        self,
        batch: _Batch,
        y: np.ndarray,
        active: np.ndarray,
        active_t: torch.Tensor,
        outputs: torch.Tensor,
        weights: torch.Tensor,
        prediction: Prediction,
    ) -> StepReport:
        imputed_before = self._scaler.imputed
        labelled = self._labelled(y)
        rows = np.flatnonzero(labelled)
        n_experts = len(self.expert_names)
        expert_sums = np.zeros(n_experts)
        loss_sum = 0.0
        correct = 0
        samples = np.zeros(n_experts)
        if len(rows):
            rows_t = torch.from_numpy(rows)
            if self.task == "classification":
                targets = y[rows].astype(np.int64)
                np.add.at(self._class_counts, targets, 1.0)
                self._seen = max(self._seen, int(targets.max()) + 1)
                picked = prediction.proba[rows, targets].astype(np.float64)
                loss_sum = float(-np.log(np.maximum(picked, _PROBA_FLOOR)).sum())
                correct = int((prediction.labels[rows] == targets).sum())
                row_losses, mixture = self._class_losses(
                    outputs, weights, active_t, rows_t, torch.from_numpy(targets)
                )
            else:
                self._target.learn_many(y[rows, None])
                target = torch.from_numpy(
                    self._target.transform_many(y[rows, None])[:, 0]
                )
                row_losses, mixture = self._value_losses(
                    outputs, weights, active_t, rows_t, target
                )
                loss_sum = float(mixture.detach().clamp(max=_LOSS_CAP).sum())
            routed = torch.zeros((n_experts, len(rows)))
            routed.scatter_(0, active_t[rows_t].T, 1.0)
            row_weights = routed + self.idle_weight * (1.0 - routed)
            expert_loss = (row_losses * row_weights).sum() / len(rows)
            (expert_loss + mixture.mean()).backward()
            self._bank.step()
            self._router.step_gate()
            detached = row_losses.detach().clamp(max=_LOSS_CAP).double().numpy()
            expert_sums = detached.sum(axis=1)
            rewards = -np.take_along_axis(detached.T, active[rows], axis=1)
            self._router.learn_many(batch.context[rows], active[rows], rewards)
            samples = (row_weights > 0).sum(dim=1).double().numpy()

        self._router.count_routes(active)
        self._pca.learn_many(batch.z)
        self._scaler.learn_many(batch.X)
        self._advance(batch.X, y)
        self.records += len(batch.X)
        routed_rows = np.bincount(active.ravel(), minlength=n_experts).astype(float)
        self._window_stats.add(
            len(batch.X),
            len(rows),
            loss_sum,
            correct,
            expert_sums,
            routed_rows,
            samples,
        )
        scale = max(len(rows), 1)
        return StepReport(
            records=len(batch.X),
            learned=len(rows),
            loss=loss_sum / scale,
            correct=correct,
            imputed=self._scaler.imputed - imputed_before,
            expert_losses={
                name: float(expert_sums[i] / scale)
                for i, name in enumerate(self.expert_names)
            },
        )

    def _class_losses(
        self,
        outputs: torch.Tensor,
        weights: torch.Tensor,
        active: torch.Tensor,
        rows: torch.Tensor,
        targets: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logp = torch.log_softmax(outputs[:, rows] + self._mask(self._seen), dim=2)
        index = targets.view(1, -1, 1).expand(logp.shape[0], -1, 1)
        row_losses = -logp.gather(2, index)[:, :, 0]
        probs = logp.detach().exp()
        mixed = _mix(probs, active[rows], weights[rows])
        picked = mixed.gather(1, targets.view(-1, 1))[:, 0]
        return row_losses, -torch.log(picked + _PROBA_FLOOR)

    def _value_losses(
        self,
        outputs: torch.Tensor,
        weights: torch.Tensor,
        active: torch.Tensor,
        rows: torch.Tensor,
        target: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        values = outputs[:, rows, 0]
        row_losses = (values - target).pow(2)
        mixed = _mix(values.detach().unsqueeze(2), active[rows], weights[rows])[:, 0]
        return row_losses, (mixed - target).pow(2)

    def _mask(self, seen: int) -> torch.Tensor:
        mask = torch.zeros(self._n_outputs)
        mask[max(seen, 1) :] = _MASKED
        return mask

    # Stream context and feature views

    def _prepare(self, X: np.ndarray, y: np.ndarray | None) -> _Batch:
        X = self._check_X(X)
        n, d = X.shape
        raw = np.concatenate([self._history_x, X])
        z_all = self._scaler.transform_many(raw)
        z = torch.from_numpy(z_all[self.window - 1 :])
        lagged = sliding_window_view(z_all, (self.window, d))[:, 0].reshape(n, -1)
        if y is None:
            label_lags = np.broadcast_to(self._history_y, (n, self.lags))
        else:
            previous = np.concatenate([self._history_y, y[:-1]])
            label_lags = sliding_window_view(previous, self.lags)
        last_label = self._encode_labels(label_lags[:, -1:])
        label_t = torch.from_numpy(last_label)
        views = {
            "plain": torch.cat([z, label_t], 1),
            "geometry": torch.cat([self._pca.project(z), label_t], 1),
            "temporal": torch.from_numpy(
                np.concatenate([lagged, self._encode_labels(label_lags)], 1)
            ),
        }
        z_router = z_all[self.window - 1 :].astype(np.float64)
        if self._projection is not None:
            z_router = z_router @ self._projection
        context = np.concatenate([np.ones((n, 1)), last_label, z_router], 1)
        return _Batch(X, z, views, context)

    def _encode_labels(self, values: np.ndarray) -> np.ndarray:
        """Label context of ``values`` [n, m]: [n, m * label_width] float32."""
        n, m = values.shape
        if self._label_width == 0:
            return np.zeros((n, 0), dtype=np.float32)
        if self.task == "regression":
            return self._target.transform_many(values.reshape(-1, 1)).reshape(n, m)
        flat = values.reshape(-1)
        known = np.isfinite(flat) & (flat >= 0) & (flat < self.max_classes)
        known &= flat == np.floor(np.where(known, flat, 0.0))
        onehot = np.zeros((n * m, self.max_classes), dtype=np.float32)
        onehot[np.flatnonzero(known), flat[known].astype(np.int64)] = 1.0
        return onehot.reshape(n, m * self.max_classes)

    def _advance(self, X: np.ndarray, y: np.ndarray) -> None:
        keep = self.window - 1
        if keep:
            self._history_x = np.concatenate([self._history_x, X])[-keep:].copy()
        self._history_y = np.concatenate([self._history_y, y])[-self.lags :].copy()

    def _labelled(self, y: np.ndarray) -> np.ndarray:
        known = np.isfinite(y)
        if self.task == "classification":
            known &= (y >= 0) & (y < self.max_classes) & (y == np.floor(y))
        else:
            known &= np.abs(y) <= self._target.max_abs
        return known

    def _check_X(self, X: np.ndarray) -> np.ndarray:
        try:
            X = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise LearnerError(f"features are not numeric: {exc}") from None
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise LearnerError(
                f"expected features of shape [n, {self.n_features}], got {X.shape}"
            )
        return X

    def _check_y(self, y: np.ndarray, n: int) -> np.ndarray:
        try:
            y = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise LearnerError(f"targets are not numeric: {exc}") from None
        if y.shape != (n,):
            raise LearnerError(f"expected {n} targets of shape [{n}], got {y.shape}")
        return y

    # Summaries for the node

    def embedding(self) -> np.ndarray:
        """A unit float32 [16] summary of the stream's distribution.

        Slots 0-5 hold the running means of the raw features and slots 6-11
        their standard deviations (features folded onto the slots by index
        modulo 6 and averaged, each value compressed by a signed ``log1p``);
        slots 12-15 hold the label distribution (classes folded modulo 4) or,
        for regression, the target's compressed mean and deviation. Nodes with
        similar streams get a cosine similarity near 1. Before any data it is
        the constant unit vector.
        """
        vector = np.zeros(EMBEDDING_SIZE)
        if self._scaler.count.any():
            slots = np.arange(self.n_features) % 6
            per_slot = np.maximum(np.bincount(slots, minlength=6), 1)
            mean = np.bincount(slots, _squash(self._scaler.mean), minlength=6)
            std = np.bincount(slots, _squash(self._scaler.std), minlength=6)
            vector[0:6] = mean / per_slot
            vector[6:12] = std / per_slot
        if self.task == "classification" and self._class_counts.any():
            folded = np.bincount(np.arange(self.max_classes) % 4, self._class_counts, 4)
            vector[12:16] = folded / self._class_counts.sum()
        elif self.task == "regression" and self._target.count.any():
            vector[12] = _squash(self._target.mean)[0]
            vector[13] = _squash(self._target.std)[0]
        norm = float(np.linalg.norm(vector))
        if not math.isfinite(norm) or norm == 0.0:
            return np.full(EMBEDDING_SIZE, 1.0 / math.sqrt(EMBEDDING_SIZE), np.float32)
        return (vector / norm).astype(np.float32)

    def usage(self) -> dict[str, float]:
        """Share of the routings each expert received; the shares sum to 1."""
        share = self._router.usage()
        return {name: float(share[i]) for i, name in enumerate(self.expert_names)}

    def routing_entropy(self) -> float:
        """Entropy of :meth:`usage` over its maximum, in [0, 1]."""
        return self._router.entropy()

    def explained_variance(self) -> list[float]:
        """Share of variance along each principal component of the stream."""
        return self._pca.explained_variance_ratio

    def learning_rates(self) -> dict[str, float]:
        """The learning rate of every expert now."""
        return dict(self._lr)

    def apply_meta(
        self, learning_rates: dict[str, float], router_priors: dict[str, float]
    ) -> dict[str, float]:
        """Move rates toward the coordinator's and set the router's priors.

        Each rate moves at most 50 % up or down per call and stays within
        ``[lr_floor, lr_ceiling]``; priors are clipped to [0, 1]. Unknown
        expert names and values that are not finite numbers are ignored.
        Returns the rates now in force.
        """
        for name, value in _finite_items(learning_rates):
            if name not in self._lr or value <= 0:
                continue
            current = self._lr[name]
            moved = min(max(value, 0.5 * current), 1.5 * current)
            self._lr[name] = min(max(moved, self.lr_floor), self.lr_ceiling)
            self._bank.set_lr(name, self._lr[name])
        for name, value in _finite_items(router_priors):
            if name in self._lr:
                index = self.expert_names.index(name)
                self._router.priors[index] = min(max(value, 0.0), 1.0)
        return self.learning_rates()

    def take_window(self) -> dict[str, Any]:
        """Aggregates since the previous call (then reset), for an insight."""
        stats = self._window_stats
        start, end = stats.halves()
        records = max(stats.records, 1)
        experts = {
            name: {
                "lr": self._lr[name],
                "loss_start": float(start[i]),
                "loss_end": float(end[i]),
                "usage": min(1.0, float(stats.routed[i]) / records),
                "samples": int(stats.samples[i]),
            }
            for i, name in enumerate(self.expert_names)
        }
        labelled = stats.labelled
        accuracy = None
        if self.task == "classification" and labelled:
            accuracy = stats.correct / labelled
        window = {
            "records": stats.records,
            "loss": min(stats.loss_sum / labelled, _LOSS_CAP) if labelled else 0.0,
            "accuracy": accuracy,
            "experts": experts,
            "drift": {"events": 0, "active": False},
            "memory_bytes": self.memory_bytes(),
        }
        stats.reset()
        return window

    def memory_bytes(self) -> int:
        """Approximate bytes held by the learner's state."""
        router = self._router
        arrays = (router.S, router.b, self._history_x, self._scaler.mean)
        return (
            self._bank.nbytes()
            + 3 * 4 * router.gate.numel()
            + sum(a.nbytes for a in arrays)
            + 4 * self._pca.components.numel()
            + self._window_stats.nbytes()
        )

    # Gossip

    def weight_spec(self) -> dict[str, dict[str, tuple[int, ...]]]:
        """Expert -> parameter -> shape of the float32 tensors gossip exchanges."""
        spec = {name: self._bank.spec(name) for name in self.expert_names}
        for name in self._geometry:
            spec[name]["components"] = tuple(self._pca.components.shape)
        return spec

    def export_expert(self, name: str) -> dict[str, np.ndarray]:
        """Float32 copies of expert ``name``'s exchanged parameters."""
        params = self._bank.export(name)
        if name in self._geometry:
            params["components"] = self._pca.components.numpy().copy()
        return params

    def blend_expert(
        self, name: str, params: dict[str, np.ndarray], factor: float
    ) -> None:
        """Blend a peer's parameters in: ``own = (1 - factor) own + factor params``.

        Raises :class:`LearnerError`, leaving every weight as it was, for an
        unknown expert, a factor outside [0, 1], missing or extra parameter
        names, or an array that is not float32, has another shape or holds a
        value that is not finite.
        """
        spec = self.weight_spec().get(name) if isinstance(name, str) else None
        if spec is None:
            raise LearnerError(f"unknown expert {name!r}")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)):
            kind = type(factor).__name__
            raise LearnerError(f"blend factor must be a number, got {kind}")
        if not 0.0 <= factor <= 1.0:
            raise LearnerError(f"blend factor {factor} is outside [0, 1]")
        if not isinstance(params, dict) or set(params) != set(spec):
            got = sorted(map(str, params)) if isinstance(params, dict) else params
            raise LearnerError(
                f"expert {name} needs parameters {sorted(spec)}, got {got}"
            )
        for pname, shape in spec.items():
            value = params[pname]
            if not isinstance(value, np.ndarray) or value.dtype != np.float32:
                raise LearnerError(f"{name}.{pname} must be a float32 array")
            if value.shape != shape:
                raise LearnerError(
                    f"{name}.{pname} has shape {value.shape}; expected {shape}"
                )
            if not np.isfinite(value).all():
                raise LearnerError(f"{name}.{pname} holds values that are not finite")
        head = {pname: params[pname] for pname in self._bank.spec(name)}
        self._bank.blend(name, head, float(factor))
        if name in self._geometry:
            self._pca.blend(params["components"], float(factor))

    # Saving and restoring

    def state_dict(self) -> dict[str, Any]:
        """The whole state, as tensors and plain values (``weights_only`` safe)."""
        return {
            "format": STATE_FORMAT,
            "config": self._config(),
            "records": self.records,
            "lr": dict(self._lr),
            "scaler": self._scaler.state_dict(),
            "target": self._target.state_dict(),
            "pca": self._pca.state_dict(),
            "bank": self._bank.state_dict(),
            "router": self._router.state_dict(),
            "history_x": torch.from_numpy(self._history_x.copy()),
            "history_y": torch.from_numpy(self._history_y.copy()),
            "class_counts": torch.from_numpy(self._class_counts.copy()),
            "seen": self._seen,
            "window": self._window_stats.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` of a learner built alike.

        Raises :class:`LearnerError` when the state comes from a learner with
        another configuration or is malformed; the learner is then unchanged.
        """
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise LearnerError(f"learner state must be a dict of format {STATE_FORMAT}")
        if state.get("config") != self._config():
            raise LearnerError(
                "learner state was saved with another configuration: "
                f"{state.get('config')}"
            )
        trial = Learner(self.n_features, **self._options)
        try:
            trial._restore(state)
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
            raise LearnerError(f"learner state is malformed: {exc!r}") from None
        self._restore(state)

    def _restore(self, state: dict[str, Any]) -> None:
        history_x = np.asarray(state["history_x"], dtype=np.float64).copy()
        history_y = np.asarray(state["history_y"], dtype=np.float64).copy()
        counts = np.asarray(state["class_counts"], dtype=np.float64).copy()
        shapes = (history_x.shape, history_y.shape, counts.shape)
        expected = (self._history_x.shape, self._history_y.shape, (self.max_classes,))
        if shapes != expected:
            raise ValueError(f"stream context has shapes {shapes}; expected {expected}")
        lr = {name: float(state["lr"][name]) for name in self.expert_names}
        self._scaler.load_state_dict(state["scaler"])
        self._target.load_state_dict(state["target"])
        self._pca.load_state_dict(state["pca"])
        self._bank.load_state_dict(state["bank"])
        self._router.load_state_dict(state["router"])
        self._window_stats.load_state_dict(state["window"])
        self._history_x, self._history_y = history_x, history_y
        self._class_counts = counts
        self._lr = lr
        self._seen = int(state["seen"])
        self.records = int(state["records"])

    def _config(self) -> dict[str, Any]:
        return {
            "n_features": self.n_features,
            "task": self.task,
            "max_classes": self.max_classes,
            "top_k": self.top_k,
            "use_label_context": self.use_label_context,
            "experts": list(self.expert_names),
            "window": self.window,
            "lags": self.lags,
            "n_components": self._pca.n_components,
        }

    def __deepcopy__(self, memo: dict[int, Any]) -> Learner:
        twin = Learner(self.n_features, **self._options)
        twin.load_state_dict(self.state_dict())
        return twin


def _mix(
    values: torch.Tensor, active: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Mix ``values`` [E, n, o] of the ``active`` [n, k] experts by ``weights``."""
    n, k = active.shape
    rows = torch.arange(n).unsqueeze(1).expand(n, k)
    chosen = values.permute(1, 0, 2)[rows, active]
    return (chosen * weights.unsqueeze(2)).sum(dim=1)


def _squash(values: np.ndarray) -> np.ndarray:
    return np.sign(values) * np.log1p(np.abs(values))


def _finite_items(mapping: Any) -> list[tuple[str, float]]:
    if not isinstance(mapping, dict):
        return []
    items = []
    for name, value in mapping.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(name, str) and math.isfinite(value):
            items.append((name, float(value)))
    return items
