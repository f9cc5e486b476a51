"""Meta-parameters learnt from insights alone.

The coordinator sees no data, only each node's reports: for every expert, the
learning rate the node used and how much the expert's loss fell at that rate
over the window. :class:`MetaLearner` turns the population of those reports
into per-expert learning rates and router priors.

Learning rates follow a population-based rule, after Jaderberg et al. (2017),
"Population Based Training of Neural Networks": for each expert, every node's
latest report gives a pair (lr, improvement) with
``improvement = (loss_start - loss_end) / max(loss_start, eps)``. Nodes are
ranked by improvement; the new rate is the geometric mean of the rates used by
the top quantile ("exploit"), multiplied by a factor drawn from ``explore``
("explore", seeded by the version number so that it replays identically),
then clipped to ``[lr_floor, lr_ceiling]``.

Router priors measure each expert's usefulness across the population: the
usage-weighted mean of its ``loss_end`` over nodes gives a population loss
``L``; the priors are ``softmax(-L / temperature)`` divided by their maximum,
so the most useful expert gets 1.0 and the others a share in [0, 1].

A new version is made only when a trigger fires and at least one new insight
arrived since the previous version: ``min_samples`` new insights, or
``max_interval`` seconds, or a share of nodes reporting ``drift.active``, or a
drop of the population's mean window accuracy (or a rise of its mean window
loss) since the previous version.

Limitations: losses are compared across nodes as reported, so nodes whose
tasks measure loss on different scales weigh unevenly in the priors; and a
node that reports false improvements can pull a rate within the clipping
bounds (clients clamp each change to +-50 %).

Example::

    >>> learner = MetaLearner(min_samples=1, seed=3)
    >>> learner.current.version
    0
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sfhfe_node.wire.insight import MAX_EXPERTS, validate_meta

__all__ = ["MetaParams", "MetaLearner", "TRIGGERS"]

TRIGGERS = ("drift", "performance", "samples", "time")


@dataclass(frozen=True)
class MetaParams:
    """One version of the meta-parameters sent to clients.

    ``version`` 0 with empty maps means "nothing learnt yet".
    """

    version: int = 0
    learning_rates: Mapping[str, float] = field(default_factory=dict)
    router_priors: Mapping[str, float] = field(default_factory=dict)

    def to_document(self) -> dict[str, Any]:
        """The meta document of the wire format."""
        return {
            "version": self.version,
            "learning_rates": dict(self.learning_rates),
            "router_priors": dict(self.router_priors),
        }

    @classmethod
    def from_document(cls, data: Any) -> MetaParams:
        """Build from a meta document, checking it; raises ``InsightError``."""
        clean = validate_meta(data)
        return cls(
            clean["version"], clean["learning_rates"], clean["router_priors"]
        )


@dataclass(frozen=True)
class _Expert:
    lr: float
    improvement: float
    loss_end: float
    usage: float


@dataclass(frozen=True)
class _Report:
    seq: int
    experts: dict[str, _Expert]
    drift_active: bool
    loss: float
    accuracy: float | None


class MetaLearner:
    """Learn per-expert learning rates and router priors from insights.

    Free of I/O: feed it validated insights with :meth:`observe` and ask for a
    new version with :meth:`maybe_update`, passing the current time.

    Parameters:
        min_samples: new insights that trigger a version (default 20). Lower
            reacts faster; higher averages over more reports.
        max_interval: seconds after which any new insight triggers a version
            (default 300.0), so a small federation still gets updates.
        drift_share: share of nodes whose latest report has ``drift.active``
            that triggers a version (default 0.3). It fires once when the
            share crosses the threshold and re-arms when it falls below.
        min_drift_nodes: fewest drifting nodes for the drift trigger
            (default 2), so one node cannot set it off alone.
        accuracy_drop: fall of the mean window accuracy, in accuracy points,
            since the previous version that triggers one (default 0.1).
        loss_rise: relative rise of the mean window loss since the previous
            version that triggers one (default 0.25, i.e. +25 %).
        top_quantile: share of nodes, ranked by improvement, whose rates are
            exploited (default 0.25, at least one node). Lower follows the
            best nodes more closely; higher is more robust to noise.
        explore: factors a new rate is multiplied by, one drawn per expert
            (default (0.8, 1.25)). Wider explores more at the cost of noise.
        lr_floor, lr_ceiling: bounds of every rate (default 1e-5 and 1.0;
            the wire format allows (0, 10]).
        temperature: softmax temperature of the priors, in loss units
            (default 1.0). Lower separates experts more sharply.
        eps: guard of the improvement's denominator (default 1e-12).
        max_nodes: nodes whose latest report is kept (default 10000); the
            node heard from least recently is forgotten first.
        seed: seed of the explore draws (default 0).
    """

    def __init__(
        self,
        *,
        min_samples: int = 20,
        max_interval: float = 300.0,
        drift_share: float = 0.3,
        min_drift_nodes: int = 2,
        accuracy_drop: float = 0.1,
        loss_rise: float = 0.25,
        top_quantile: float = 0.25,
        explore: tuple[float, ...] = (0.8, 1.25),
        lr_floor: float = 1e-5,
        lr_ceiling: float = 1.0,
        temperature: float = 1.0,
        eps: float = 1e-12,
        max_nodes: int = 10_000,
        seed: int = 0,
    ) -> None:
        if min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {min_samples}")
        if max_interval <= 0:
            raise ValueError(f"max_interval must be > 0, got {max_interval}")
        if not 0 < drift_share <= 1:
            raise ValueError(f"drift_share must be in (0, 1], got {drift_share}")
        if not 0 < top_quantile <= 1:
            raise ValueError(f"top_quantile must be in (0, 1], got {top_quantile}")
        if not explore or any(f <= 0 or not math.isfinite(f) for f in explore):
            raise ValueError(f"explore factors must be positive, got {explore}")
        if not 0 < lr_floor <= lr_ceiling <= 10:
            raise ValueError(
                f"need 0 < lr_floor <= lr_ceiling <= 10, got {lr_floor}, {lr_ceiling}"
            )
        if temperature <= 0 or eps <= 0 or max_nodes < 1:
            raise ValueError(
                "temperature, eps and max_nodes must be positive, got "
                f"{temperature}, {eps}, {max_nodes}"
            )
        self.min_samples = min_samples
        self.max_interval = max_interval
        self.drift_share = drift_share
        self.min_drift_nodes = min_drift_nodes
        self.accuracy_drop = accuracy_drop
        self.loss_rise = loss_rise
        self.top_quantile = top_quantile
        self.explore = tuple(explore)
        self.lr_floor = lr_floor
        self.lr_ceiling = lr_ceiling
        self.temperature = temperature
        self.eps = eps
        self.max_nodes = max_nodes
        self.seed = seed
        self._current = MetaParams()
        self._reports: dict[str, _Report] = {}
        self._pending = 0
        self._last_time: float | None = None
        self._drift_armed = True
        self._baseline_loss: float | None = None
        self._baseline_accuracy: float | None = None
        self.last_trigger: str | None = None

    @property
    def current(self) -> MetaParams:
        """The latest meta-parameters."""
        return self._current

    @property
    def pending(self) -> int:
        """New insights observed since the latest version."""
        return self._pending

    @property
    def population(self) -> int:
        """Nodes whose latest report is held."""
        return len(self._reports)

    def observe(self, insight: Mapping[str, Any]) -> None:
        """Take one new validated insight into account.

        A report older than the node's held one (lower ``seq``) still counts
        as a new sample but does not replace the newer report.
        """
        self._pending += 1
        self._remember(insight)

    def maybe_update(self, now: float) -> MetaParams | None:
        """Make a new version if a trigger fires; otherwise return ``None``.

        ``now`` is the current time in seconds; only differences matter.
        """
        if self._last_time is None:
            self._last_time = now
        trigger = self._trigger(now)
        if trigger is None:
            return None
        params = self.propose(self._current.version + 1)
        if params is None:
            return None
        self._current = params
        self.last_trigger = trigger
        self._mark(now)
        return params

    def propose(self, version: int) -> MetaParams | None:
        """Compute meta-parameters from the held reports, as ``version``.

        Returns ``None`` when no node reported an expert that learnt from
        any record. Does not change the learner.
        """
        table = self._expert_table()
        if not table:
            return None
        rng = random.Random(f"{self.seed}:{version}")
        rates = {name: self._rate(rows, rng) for name, rows in table.items()}
        return MetaParams(version, rates, self._priors(table))

    def resume(
        self, params: MetaParams, insights: Iterable[Mapping[str, Any]] = ()
    ) -> None:
        """Start again from a saved version and the nodes' latest insights.

        The insights restore the population without counting as new samples,
        so a restart does not by itself make a new version.
        """
        self._current = params
        self._reports.clear()
        for insight in insights:
            self._remember(insight)
        self._mark(None)

    # Triggers.

    def _trigger(self, now: float) -> str | None:
        if self._pending == 0:
            return None
        share = self._drift_share()
        if share < self.drift_share:
            self._drift_armed = True
        elif self._drift_armed and self._drifting() >= self.min_drift_nodes:
            return "drift"
        if self._worse():
            return "performance"
        if self._pending >= self.min_samples:
            return "samples"
        if self._last_time is not None and now - self._last_time >= self.max_interval:
            return "time"
        return None

    def _drifting(self) -> int:
        return sum(report.drift_active for report in self._reports.values())

    def _drift_share(self) -> float:
        return self._drifting() / len(self._reports) if self._reports else 0.0

    def _worse(self) -> bool:
        loss, accuracy = self._means()
        if self._baseline_accuracy is not None and accuracy is not None:
            if self._baseline_accuracy - accuracy >= self.accuracy_drop:
                return True
        if self._baseline_loss is not None and loss is not None:
            return loss > self._baseline_loss * (1 + self.loss_rise) + self.eps
        return False

    def _means(self) -> tuple[float | None, float | None]:
        losses = [r.loss for r in self._reports.values()]
        accuracies = [
            r.accuracy for r in self._reports.values() if r.accuracy is not None
        ]
        loss = sum(losses) / len(losses) if losses else None
        accuracy = sum(accuracies) / len(accuracies) if accuracies else None
        return loss, accuracy

    def _mark(self, now: float | None) -> None:
        self._pending = 0
        self._last_time = now
        self._baseline_loss, self._baseline_accuracy = self._means()
        self._drift_armed = self._drift_share() < self.drift_share

    # The rule.

    def _remember(self, insight: Mapping[str, Any]) -> None:
        node_id = insight["node_id"]
        held = self._reports.get(node_id)
        if held is not None and held.seq > insight["seq"]:
            return
        experts = {
            name: _Expert(
                lr=stats["lr"],
                improvement=(stats["loss_start"] - stats["loss_end"])
                / max(stats["loss_start"], self.eps),
                loss_end=stats["loss_end"],
                usage=stats["usage"],
            )
            for name, stats in insight["experts"].items()
            if stats["samples"] > 0
        }
        window = insight["window"]
        self._reports.pop(node_id, None)
        self._reports[node_id] = _Report(
            seq=insight["seq"],
            experts=experts,
            drift_active=bool(insight["drift"]["active"]),
            loss=window["loss"],
            accuracy=window["accuracy"],
        )
        while len(self._reports) > self.max_nodes:
            del self._reports[next(iter(self._reports))]

    def _expert_table(self) -> dict[str, list[_Expert]]:
        table: dict[str, list[_Expert]] = {}
        for report in self._reports.values():
            for name, expert in report.experts.items():
                table.setdefault(name, []).append(expert)
        # The wire format carries at most MAX_EXPERTS names: keep the most
        # widely reported ones.
        names = sorted(table, key=lambda name: (-len(table[name]), name))
        return {name: table[name] for name in sorted(names[:MAX_EXPERTS])}

    def _rate(self, rows: list[_Expert], rng: random.Random) -> float:
        ranked = sorted(rows, key=lambda row: row.improvement, reverse=True)
        top = ranked[: max(1, math.ceil(self.top_quantile * len(ranked)))]
        base = math.exp(sum(math.log(row.lr) for row in top) / len(top))
        rate = base * rng.choice(self.explore)
        return min(max(rate, self.lr_floor), self.lr_ceiling)

    def _priors(self, table: dict[str, list[_Expert]]) -> dict[str, float]:
        scores = {}
        for name, rows in table.items():
            weight = sum(row.usage for row in rows)
            if weight > 0:
                loss = sum(row.usage * row.loss_end for row in rows) / weight
            else:
                loss = sum(row.loss_end for row in rows) / len(rows)
            scores[name] = -loss / self.temperature
        top = max(scores.values())
        # Dividing the softmax by its maximum is exp(score - top).
        return {name: math.exp(score - top) for name, score in scores.items()}
