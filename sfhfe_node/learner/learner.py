"""The learner a client node runs: ten experts, their jobs, router and memory."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from sfhfe_node.errors import LearnerError
from sfhfe_node.learner import jobs
from sfhfe_node.learner.context import StreamContext
from sfhfe_node.learner.drift import DriftMonitor
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
)
from sfhfe_node.learner.labels import LabelEncoder
from sfhfe_node.learner.memory import Consolidation, TieredMemory
from sfhfe_node.learner.meta import MetaSchedule
from sfhfe_node.learner.mixture import LOSS_CAP, mix, mixture_loss
from sfhfe_node.learner.normalizer import OnlineStandardizer
from sfhfe_node.learner.peer_models import PeerModels
from sfhfe_node.learner.records import Prediction, StepReport
from sfhfe_node.learner.replay import split_rows
from sfhfe_node.learner.router import Router
from sfhfe_node.learner.rules import Rules
from sfhfe_node.learner.state import (
    STATE_FORMAT,
    config_of,
    restore_state,
    state_of,
)
from sfhfe_node.learner.structure import Autoencoder, LaggedGraph
from sfhfe_node.learner.summary import (
    EMBEDDING_SIZE,
    embedding,
    memory_bytes_of,
    status_of,
    take_window_of,
)
from sfhfe_node.learner.training import PredictedBatch, learn_batch
from sfhfe_node.learner.views import FeatureViews, build_views
from sfhfe_node.learner.window import WindowStats

__all__ = ["EMBEDDING_SIZE", "STATE_FORMAT", "Learner", "Prediction", "StepReport"]

TASKS = ("classification", "regression", "none")
ROUTINGS = ("bandit", "uniform")

_MASKED = -30.0  # logit offset of classes not seen yet or not allowed
_ROUTER_FEATURES = 16  # features beyond this are randomly projected for the router
_HISTORY_VIEWS = ("sequence", "causal")  # views a compressed memory row lacks


class Learner:
    """A mixture of ten experts learning test-then-train from one data stream.

    Each batch is checked against the governance rules, standardised online
    (:class:`OnlineStandardizer`) and given its stream context (the last
    ``window`` records and labels, and the record's deviation from moving
    averages of the stream over 4, 16 and 64 records: its *trends*,
    :class:`StreamContext`). The context is turned into feature views: the
    record with its trends and the previous label (``plain``); its principal
    components with the same (``geometry``, :class:`OnlinePCA`); the record
    window with its labels (``sequence``, for the GRU); the autoencoder's
    latent code with the trends and the previous label (``latent``,
    :class:`Autoencoder`); and the target's parents in the lagged dependency
    graph (``causal``, :class:`LaggedGraph`). Every expert scores every row
    in one batched pass (:class:`ExpertBank`); a contextual bandit
    (:class:`Router`) activates ``top_k`` experts per row and a gate mixes
    them. :meth:`score_recent` measures the mixture on the recent memory tier
    without learning.

    Training: every expert learns from every labelled row (weight 1 where it
    was routed, ``idle_weight`` elsewhere) in one backward pass, plus a replay
    draw from the three memory tiers (:class:`TieredMemory`) every
    ``replay_every`` batches, on which the memory expert learns fully and the
    others with ``replay_weight``. Rows breaking a rule are not learned;
    outliers (:class:`OutlierDetector`) are kept from the consistency expert
    (which uses a robust loss) and from the structure (normaliser, PCA,
    autoencoder). The memory expert is held by EWC (:class:`Consolidation`)
    to its weights at the last drift or consolidation point. The drift
    expert's detector (:class:`DriftMonitor`) watches the error stream and
    the feature distribution; the meta expert's schedule
    (:class:`MetaSchedule`) scales and freezes learning rates.

    Label context: with ``use_label_context`` the labels (or targets) of the
    previous rows are inputs of row ``i``: in :meth:`step` they are
    ``y[i - window] .. y[i - 1]``, never ``y[i]``; in :meth:`predict_many`
    every row gets the last labels seen.

    Parameters:
        n_features: number of feature columns of every batch.
        task: ``"classification"`` (``y`` holds class indices, negative or
            NaN when unknown), ``"regression"`` (``y`` holds real targets, NaN
            when unknown) or ``"none"`` (``y`` is ignored and may be omitted;
            the experts learn to expect each record's anomaly score).
        max_classes: width of every classifier's output (default 16).
        top_k: experts active per row (default 4). More makes the mixture
            smoother, fewer specialises more.
        seed: seeds weights, router draws and memory sampling; two learners
            with the same seed and stream compute the same numbers.
        use_label_context: feed previous labels to the experts (default True).
        experts: the expert specs (default :data:`DEFAULT_EXPERTS`).
        window: records and labels in each row's context, current record
            included (default 4, twice the temporal expert's ``steps``). Longer
            gives the temporal expert more history at a cost linear in it;
            horizons beyond it reach the experts as moving-average trends
            (:class:`StreamContext`).
        n_components: principal components (default 3, at most n_features).
        latent: autoencoder code width (default 3).
        idle_weight: loss weight of rows not routed to an expert (default 1).
        lr_floor, lr_ceiling: bounds of every learning rate (default 1e-5
            and 1.0).
        routing: ``"bandit"`` (default) or ``"uniform"``, which averages
            every expert equally (an ablation of the router).
        replay: replay memory rows into training (default True).
        ewc: hold the memory expert to its consolidated weights (default
            True).
        replay_every, replay_size: cadence in batches (default 4) and rows
            per replay draw (default 32). A shorter cadence rehearses more
            and costs up to twice the training work per batch.
        replay_weight: loss weight of replayed rows for the experts other
            than the memory expert (default 0.1).
        ewc_lambda: EWC strength on the memory expert (default 1.0).
        consolidate_every: records between two EWC snapshots besides the
            ones taken at drifts (default 5000).
        structure_every: batches between two updates of the PCA and the
            autoencoder (default 4); the normaliser learns every batch.
            Higher is faster and follows the stream's structure more slowly.
        feature_names: names of the columns, for drift events, rules and
            the causal graph (default ``f0``, ``f1``, ...).
        target_name: name of the target in the causal graph (default
            ``"target"``).
        rules: governance rules (default ``None``: no constraint).
        labels: the label encoder of the stream, through which
            ``allowed_labels`` rules are matched (default ``None``: class
            ``i`` has label text ``str(i)``).
        router_options: keyword arguments passed on to :class:`Router`.

    Peers' models: what gossip brings in (:meth:`store_peer_expert`) never
    changes the own experts; it is kept in :attr:`peer_models`, whose
    learned share is mixed into every classification prediction (see
    :class:`PeerModels`) and updated once the batch's labels are known.

    Attributes:
        expert_names: the experts' names, in the order of every per-expert
            array (``Prediction.experts`` holds indices into it).
        records: rows passed to :meth:`step` so far, labelled or not.
        peer_models: the peers' latest models and their learned weights.

    The learner is not thread-safe: the caller serialises its calls.

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
        top_k: int = 4,
        seed: int = 0,
        use_label_context: bool = True,
        experts: tuple[ExpertSpec, ...] = DEFAULT_EXPERTS,
        window: int = 4,
        n_components: int = 3,
        latent: int = 3,
        idle_weight: float = 1.0,
        lr_floor: float = 1e-5,
        lr_ceiling: float = 1.0,
        routing: str = "bandit",
        replay: bool = True,
        ewc: bool = True,
        replay_every: int = 4,
        replay_size: int = 32,
        replay_weight: float = 0.1,
        ewc_lambda: float = 1.0,
        consolidate_every: int = 5000,
        structure_every: int = 4,
        feature_names: list[str] | None = None,
        target_name: str = "target",
        rules: Rules | None = None,
        labels: LabelEncoder | None = None,
        router_options: dict[str, float] | None = None,
    ) -> None:
        names = check_options(
            n_features, task=task, tasks=TASKS, routing=routing, routings=ROUTINGS,
            max_classes=max_classes, window=window, replay_every=replay_every,
            structure_every=structure_every, lr_floor=lr_floor,
            lr_ceiling=lr_ceiling, feature_names=feature_names,
        )
        self._options: dict[str, Any] = dict(
            task=task, max_classes=max_classes, top_k=top_k, seed=seed,
            use_label_context=use_label_context, experts=experts, window=window,
            n_components=n_components, latent=latent, idle_weight=idle_weight,
            lr_floor=lr_floor, lr_ceiling=lr_ceiling, routing=routing,
            replay=replay, ewc=ewc, replay_every=replay_every,
            replay_size=replay_size, replay_weight=replay_weight,
            ewc_lambda=ewc_lambda, consolidate_every=consolidate_every,
            structure_every=structure_every,
            feature_names=names, target_name=target_name, rules=rules,
            labels=labels, router_options=dict(router_options or {}),
        )
        self.n_features = n_features
        self.task = task
        self.max_classes = max_classes
        self.top_k = top_k
        self.seed = seed
        self.use_label_context = use_label_context
        self.window = window
        self.idle_weight = idle_weight
        self.lr_floor = lr_floor
        self.lr_ceiling = lr_ceiling
        self.routing = routing
        self.replay = replay
        self.ewc = ewc
        self.replay_every = replay_every
        self.replay_size = replay_size
        self.replay_weight = replay_weight
        self.consolidate_every = consolidate_every
        self.structure_every = structure_every
        self.feature_names = names or [f"f{i}" for i in range(n_features)]
        self.target_name = target_name
        self.expert_names: tuple[str, ...] = tuple(spec.name for spec in experts)
        self.records = 0
        self.batches = 0

        classify = task == "classification"
        self._n_outputs = max_classes if classify else 1
        generator = torch.Generator().manual_seed(seed)
        self._generator = generator
        self._scaler = OnlineStandardizer(n_features)
        self._target = OnlineStandardizer(1)
        self._context = StreamContext(
            n_features, window=window, task=task, max_classes=max_classes,
            use_labels=use_label_context,
        )
        K = self._context.label_width
        self._pca = OnlinePCA(n_features, min(n_components, n_features))
        self._autoencoder = Autoencoder(n_features, latent=latent, generator=generator)
        self._graph = LaggedGraph(n_features, K)
        self._governor = Governor(
            rules, self.feature_names, max_classes=max_classes, labels=labels
        )
        self._outliers = OutlierDetector(n_features)
        self._drift = DriftMonitor(self.feature_names)
        self._class_counts = np.zeros(max_classes)
        self._seen = 0
        self._mask_key: tuple[int, Rules] | None = None
        self._mask_value = torch.zeros(self._n_outputs)
        if n_features > _ROUTER_FEATURES:
            shape = (n_features, _ROUTER_FEATURES)
            projection = torch.randn(shape, generator=generator)
            self._projection = (projection / math.sqrt(n_features)).double().numpy()
        else:
            self._projection = None
        d, T = n_features, self._context.trend_width
        self._widths = {
            "plain": d + T + K,
            "geometry": self._pca.n_components + T + K,
            "sequence": window * (d + K),
            "latent": latent + T + K,
            "causal": 2 * d + K,
        }
        self._bank = ExpertBank(experts, self._widths, self._n_outputs, generator)
        self._needed = {spec.view for spec in experts}
        context_dim = 1 + K + min(n_features, _ROUTER_FEATURES)
        self._router = Router(
            len(experts), context_dim, top_k=top_k, generator=generator,
            **dict(router_options or {}),
        )
        self._memory = TieredMemory(
            window * d + T + window + 1, latent + T + 2, generator=generator
        )
        self._schedule = MetaSchedule(len(experts))
        self._lr = {spec.name: float(spec.lr) for spec in experts}
        strength = np.array(
            [ewc_lambda if spec.name == "memory" and ewc else 0.0 for spec in experts]
        )
        self._consolidation = Consolidation(self._bank.per_element(strength))
        self._role = {
            role: self.expert_names.index(role) if role in self.expert_names else -1
            for role in ("consistency", "memory", "governance")
        }
        self._history_experts = np.array(
            [spec.view in _HISTORY_VIEWS for spec in experts]
        )
        self._geometry = tuple(spec.name for spec in experts if spec.view == "geometry")
        self._window_stats = WindowStats(len(experts))
        self._window_events = 0
        self._quarantined = 0
        self._excluded = 0
        self.peer_models = PeerModels(
            lambda: ExpertBank(
                experts, self._widths, self._n_outputs, torch.Generator()
            ),
            self.weight_spec(), self._geometry,
        )

    # Prediction and learning

    @property
    def drift_active(self) -> bool:
        """Whether the last :meth:`step` revealed a drift (read-only)."""
        return self._drift.drift_detected

    def drift_events(self) -> list[dict[str, Any]]:
        """Drift events since the previous call, oldest first; then cleared.

        Each is ``{"time": record index, "kind": "error" | "features",
        "magnitude": float, "features": [feature names that moved]}``.
        """
        return [event.as_dict() for event in self._drift.take_events()]

    @torch.no_grad()
    def predict_many(self, X: np.ndarray) -> Prediction:
        """Predict every row of ``X`` [n, n_features]; changes no state."""
        X = check_features(X, self.n_features)
        if not len(X):
            return self._empty_prediction()
        windows, lags = self._context.windows(X, None, self._scaler)
        trends, _ = self._context.trends(X, self._scaler)
        codes, errors = self._autoencoder.score(torch.from_numpy(windows[:, -1]))
        built = self._views(windows, lags, codes, trends)
        active = self._route(built.context, explore=False)
        outputs = self._bank.forward(built.views)
        weights = self._weights(built.context, active)
        prediction = self._predict(outputs, active, weights, errors)
        return self._with_peers(built, active, weights, prediction, keep=False)

    @torch.no_grad()
    def predict_experts(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Each expert's own prediction for every row; changes no state.

        Class probabilities [n, max_classes] for classification, values [n]
        otherwise.
        """
        X = check_features(X, self.n_features)
        if not len(X):
            width = self.max_classes if self.task == "classification" else 0
            empty = np.zeros((0, width)) if width else np.zeros(0)
            return {name: empty.copy() for name in self.expert_names}
        windows, lags = self._context.windows(X, None, self._scaler)
        trends, _ = self._context.trends(X, self._scaler)
        codes, _ = self._autoencoder.score(torch.from_numpy(windows[:, -1]))
        built = self._views(windows, lags, codes, trends)
        outputs = self._bank.forward(built.views)
        if self.task == "classification":
            probs = torch.softmax(outputs + self._mask(), dim=2).numpy()
            return {name: probs[i] for i, name in enumerate(self.expert_names)}
        values = self._unscale(outputs[:, :, 0].double().numpy())
        return {name: values[i] for i, name in enumerate(self.expert_names)}

    def step(
        self, X: np.ndarray, y: np.ndarray | None = None
    ) -> tuple[Prediction, StepReport]:
        """Predict every row of ``X``, then learn from ``(X, y)``.

        Rows whose ``y`` is unknown (negative or NaN for classification, NaN
        for regression) are predicted but not learned; with the task
        ``"none"`` ``y`` is ignored.
        """
        X = check_features(X, self.n_features)
        if self.task == "none" or y is None:
            y = np.full(len(X), np.nan)
        y = check_targets(y, len(X))
        if not len(X):
            report = StepReport(0, 0, 0.0, 0, 0, dict.fromkeys(self.expert_names, 0.0))
            return self._empty_prediction(), report
        windows, lags = self._context.windows(X, y, self._scaler)
        trends, ema = self._context.trends(X, self._scaler)
        z = torch.from_numpy(windows[:, -1])
        structure = self.batches % self.structure_every == 0
        with torch.set_grad_enabled(structure):
            codes, tracked = self._autoencoder.forward(z)
        codes, errors = codes.detach(), tracked.detach()
        if self.task == "none":
            y = np.log1p(errors.double().numpy())
        built = self._views(windows, lags, codes, trends)
        active = self._route(built.context, explore=True)
        replayed = jobs.replay_draw(self)
        views = built.views
        if replayed is not None:
            views = {
                key: torch.cat([value, replayed[0].views[key]])
                for key, value in views.items()
            }
        outputs, tape = self._bank.forward_taped(views)
        current = outputs[:, : len(X)]
        weights = self._weights(built.context, active)
        probs = self._probs(current)
        prediction = self._predict(current, active, weights, errors, probs)
        prediction = self._with_peers(built, active, weights, prediction)
        report = learn_batch(self, PredictedBatch(
            X, y, windows, lags, built, codes, tracked if structure else None,
            active, outputs, tape, weights, prediction, replayed, ema, probs,
        ))
        self.peer_models.learn(y)
        return prediction, report

    def learn_many(self, X: np.ndarray, y: np.ndarray | None = None) -> StepReport:
        """Learn from ``(X, y)``; :meth:`step` without the prediction."""
        return self.step(X, y)[1]

    @torch.no_grad()
    def score_recent(self) -> float:
        """Mean mixture loss on the rows of the recent memory tier, now.

        The loss is the one :class:`StepReport` reports (log-loss, or squared
        error in standardised target units), computed with the current
        weights and routing and without changing any state; NaN while the
        tier is empty. Comparing it before and after :meth:`blend_expert`
        tells whether a peer's weights suit the local stream.
        """
        full = self._memory.rows["recent"]
        if not len(full):
            return math.nan
        windows, trends, lags, targets = split_rows(
            full, self.window, self.n_features, self._context.trend_width
        )
        if self.task == "regression":
            targets = self._target.transform_many(targets[:, None])[:, 0]
        codes = self._autoencoder.encode(torch.from_numpy(windows[:, -1]))
        built = self._views(windows, lags, codes, trends)
        active = self._route(built.context, explore=False)
        outputs = self._bank.forward(built.views)
        weights = self._weights(built.context, active)
        target_t = torch.from_numpy(targets.astype(np.float32))
        losses = self._mixture_loss(outputs, weights, active, target_t)
        return float(losses.clamp(max=LOSS_CAP).double().mean())

    def _route(self, context: np.ndarray, *, explore: bool) -> np.ndarray:
        if self.routing == "uniform":
            E = len(self.expert_names)
            return np.broadcast_to(np.arange(E), (len(context), E)).copy()
        return self._router.route(context, explore=explore)

    @torch.no_grad()
    def _weights(self, context: np.ndarray, active: np.ndarray) -> torch.Tensor:
        if self.routing == "uniform":
            return torch.full(active.shape, 1.0 / active.shape[1])
        return self._router.mix_weights(
            torch.from_numpy(context).float(), torch.from_numpy(active)
        )

    def _empty_prediction(self) -> Prediction:
        experts = np.zeros((0, self.top_k), dtype=np.int64)
        anomaly = np.zeros(0)
        if self.task == "classification":
            proba = np.zeros((0, self.max_classes), dtype=np.float32)
            return Prediction(np.zeros(0, np.int64), None, proba, experts, anomaly)
        return Prediction(None, np.zeros(0), None, experts, anomaly)

    def _predict(
        self,
        outputs: torch.Tensor,
        active: np.ndarray,
        weights: torch.Tensor,
        errors: torch.Tensor,
        probs: torch.Tensor | None = None,
    ) -> Prediction:
        """The mixture's prediction; ``probs`` are the experts' class
        probabilities of ``outputs`` when already computed."""
        anomaly = errors.double().numpy()
        index = torch.from_numpy(active)
        shown = np.ascontiguousarray(active[:, : self.top_k])
        if self.task == "classification":
            if probs is None:
                probs = self._probs(outputs)
            proba = mix(probs, index, weights).numpy().astype(np.float32)
            labels = proba.argmax(axis=1).astype(np.int64)
            return Prediction(labels, None, proba, shown, anomaly)
        mixed = mix(outputs, index, weights)[:, 0].double().numpy()
        values = self._governor.clip(self._unscale(mixed))
        return Prediction(None, values, None, shown, anomaly)

    def _with_peers(
        self,
        built: FeatureViews,
        active: np.ndarray,
        weights: torch.Tensor,
        prediction: Prediction,
        *,
        keep: bool = True,
    ) -> Prediction:
        """The prediction with the peers' models mixed in (:class:`PeerModels`)."""
        if self.task != "classification" or not len(self.peer_models):
            return prediction
        proba = self.peer_models.predict(
            built.views, built.z, active, weights, self._mask(), prediction.proba,
            keep=keep,
        )
        if proba is prediction.proba:
            return prediction
        labels = proba.argmax(axis=1).astype(np.int64)
        return Prediction(labels, None, proba, prediction.experts, prediction.anomaly)

    def _unscale(self, values: np.ndarray) -> np.ndarray:
        if self.task == "none":
            return np.expm1(np.maximum(values, 0.0))
        return values * float(self._target.std[0]) + float(self._target.mean[0])

    @torch.no_grad()
    def _mixture_loss(
        self,
        outputs: torch.Tensor,
        weights: torch.Tensor,
        active: np.ndarray,
        target: torch.Tensor,
        probs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-row loss of the mixture; ``probs`` as in :meth:`_predict`."""
        index = torch.from_numpy(active)
        if probs is None:
            probs = self._probs(outputs)
        return mixture_loss(outputs, weights, index, target, probs)

    def _probs(self, outputs: torch.Tensor) -> torch.Tensor | None:
        """Every expert's class probabilities of ``outputs`` (None unless
        classifying)."""
        if self.task != "classification":
            return None
        return torch.softmax(outputs + self._mask(), dim=2)

    def _mask(self) -> torch.Tensor:
        """Logit offsets hiding unseen and disallowed classes (do not modify).

        Kept until the classes seen or the governance rules change.
        """
        key = (self._seen, self._governor.rules)
        if self._mask_key is not None and self._mask_key[0] == key[0] and (
            self._mask_key[1] is key[1]
        ):
            return self._mask_value
        mask = torch.zeros(self._n_outputs)
        if self.task == "classification":
            mask[max(self._seen, 1) :] = _MASKED
            if self._governor.rules.allowed_labels is not None:
                mask = torch.minimum(mask, self._governor.class_mask(_MASKED))
        self._mask_key, self._mask_value = key, mask
        return mask

    # Stream context and feature views

    def _views(
        self,
        windows: np.ndarray,
        lags: np.ndarray,
        codes: torch.Tensor,
        trends: np.ndarray,
    ) -> FeatureViews:
        """Every view the experts need, and the router's context."""
        return build_views(
            windows, lags, codes, trends, stream=self._context, target=self._target,
            pca=self._pca, graph=self._graph, needed=self._needed,
            projection=self._projection,
        )

    # Summaries for the node

    def embedding(self) -> np.ndarray:
        """A unit float32 [16] summary of the stream (see :func:`embedding`)."""
        return embedding(
            self._scaler, self._target, self._class_counts, self.task, self.max_classes
        )

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
        """The learning rate of every expert now (coordinator rate x schedule)."""
        scale = self._schedule.effective()
        rates = {}
        for i, name in enumerate(self.expert_names):
            rate = self._lr[name] * float(scale[i])
            rates[name] = min(max(rate, self.lr_floor), 10.0)
        return rates

    def apply_meta(
        self, learning_rates: dict[str, float], router_priors: dict[str, float]
    ) -> dict[str, float]:
        """Move rates toward the coordinator's and set the router's priors.

        Each base rate moves at most 50 % up or down per call and stays within
        ``[lr_floor, lr_ceiling]``; priors are clipped to [0, 1]. Unknown
        expert names and values that are not finite numbers are ignored.
        Returns the rates now in force.
        """
        for name, value in finite_items(learning_rates):
            if name not in self._lr or value <= 0:
                continue
            current = self._lr[name]
            moved = min(max(value, 0.5 * current), 1.5 * current)
            self._lr[name] = min(max(moved, self.lr_floor), self.lr_ceiling)
        jobs.apply_rates(self)
        for name, value in finite_items(router_priors):
            if name in self._lr:
                index = self.expert_names.index(name)
                self._router.priors[index] = min(max(value, 0.0), 1.0)
        return self.learning_rates()

    def take_window(self) -> dict[str, Any]:
        """Aggregates since the previous call (then reset), for an insight."""
        return take_window_of(self)

    def replace_rules(self, rules: Rules | None) -> None:
        """Check records against new governance rules from the next batch on.

        Violation counts carry over; raises :class:`ConfigError` when the
        rules name a feature the stream does not have, leaving the old ones.
        """
        self._governor = self._governor.replaced(rules)

    def status(self) -> dict[str, Any]:
        """Each expert's job output, as aggregates (never a raw value)."""
        return status_of(self)

    def memory_bytes(self) -> int:
        """Approximate bytes held by the learner's state.

        It grows while the memory tiers and recent windows fill (about the
        first 1,000 records) and is flat afterwards, as long as the caller
        takes a window now and then (:meth:`take_window`).
        """
        return memory_bytes_of(self)

    # Gossip

    def weight_spec(self) -> dict[str, dict[str, tuple[int, ...]]]:
        """Expert -> parameter -> shape of the float32 tensors gossip exchanges."""
        return weight_spec_of(self._bank, self._pca, self.expert_names, self._geometry)

    def store_peer_expert(
        self, peer: str, name: str, params: dict[str, np.ndarray]
    ) -> None:
        """Keep peer ``peer``'s parameters of expert ``name`` in its peer model.

        They never change this learner's own experts; see :class:`PeerModels`.
        Raises :class:`LearnerError` as :meth:`blend_expert` does.
        """
        self.peer_models.store(peer, name, params)

    def export_expert(self, name: str) -> dict[str, np.ndarray]:
        """Float32 copies of expert ``name``'s exchanged parameters."""
        return export_weights(self._bank, self._pca, name, self._geometry)

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
        check_blend(spec, name, params, factor)
        blend_weights(self._bank, self._pca, name, params, factor, self._geometry)

    # Saving and restoring

    def state_dict(self) -> dict[str, Any]:
        """The whole state, as tensors and plain values (``weights_only`` safe)."""
        return state_of(self)

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
        except (
            KeyError, TypeError, ValueError, AttributeError, RuntimeError, IndexError
        ) as exc:
            raise LearnerError(f"learner state is malformed: {exc!r}") from None
        self._restore(state)

    def _restore(self, state: dict[str, Any]) -> None:
        restore_state(self, state)

    def _config(self) -> dict[str, Any]:
        return config_of(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> Learner:
        twin = Learner(self.n_features, **self._options)
        twin.load_state_dict(self.state_dict())
        return twin

